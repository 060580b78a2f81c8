"""Sources and sync jobs on the real embedded Qdrant engine and a real control plane (SQLite
here, PostgreSQL in the full tier), with the hashing embedder standing in for MiniLM.

A folder is synced, changed (an edit, a new file, a deletion, a corrupt PDF) and synced again:
the collection then equals the folder. A worker that dies between its ingest and its commit
is replaced after its lease, and the result has no duplicate and no lost document. Racing
workers run each job once; a cancel leaves a consistent collection; a touched file costs no
ingest; a document posted by hand survives every sync; a SQL table syncs incrementally, and
its full pass finds deletions; what a tenant's source may read is confined.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ragdock.contracts.source_spec import FolderSpec, SqlSpec
from ragdock.controlplane import ControlPlane, open_control_plane
from retrieval.service import Retriever
from retrieval.sources.confine import Confinement, ConfinementError
from retrieval.sources.jobs import JobConflictError, JobQueue
from retrieval.sources.registry import SourceRecord, SourceRegistry
from retrieval.sources.sql import SqlReader, SqlSourceError, source_url
from retrieval.sources.sync import SyncSettings
from retrieval.sources.worker import Worker
from retrieval.sparse import EdgeBm25Encoder
from retrieval.store import EdgeStore
from retrieval.types import Document
from tests.fakes.embedder import HashingEmbedder
from tests.hostile import text_pdf

TENANT, COLLECTION = "acme", "kb"


class Crash(BaseException):
    """A simulated death: not an `Exception`, so no handler of the worker runs."""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EdgeStore]:
    edge = EdgeStore(tmp_path / "qdrant")
    yield edge
    edge.close()


def _retriever(store: EdgeStore, url: str, root: Path) -> tuple[Retriever, ControlPlane]:
    plane = open_control_plane(url, root)
    retriever = Retriever(
        store, HashingEmbedder(), EdgeBm25Encoder(), root / "catalog", control=plane,
        grace_s=0.5, lease_s=5.0,
    )  # fmt: skip
    return retriever, plane


@pytest.fixture
def docs_root(tmp_path: Path) -> Path:
    root = tmp_path / "share" / TENANT
    root.mkdir(parents=True)
    return root


@pytest.fixture
def stack(
    store: EdgeStore, control_plane_url: str, tmp_path: Path, docs_root: Path
) -> Iterator[tuple[Retriever, ControlPlane, SyncSettings]]:
    retriever, plane = _retriever(store, control_plane_url, tmp_path)
    settings = SyncSettings(
        confinement=Confinement((str(docs_root.parent / "{tenant}"),)), batch_size=4
    )
    yield retriever, plane, settings
    plane.close()


def _write(folder: Path, files: dict[str, str | bytes]) -> None:
    for name, body in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body if isinstance(body, bytes) else body.encode())


def _folder_source(plane: ControlPlane, folder: Path, name: str = "handbook") -> SourceRecord:
    return SourceRegistry(plane).create(
        tenant=TENANT, name=name, collection=COLLECTION, spec=FolderSpec(path=str(folder)),
        interval_s=None, created_by="acme:admin",
    )  # fmt: skip


def _sync(worker: Worker, source: SourceRecord, kind: str = "full") -> str:
    worker.queue.enqueue(source.id, TENANT, kind=kind, trigger="manual")
    state = worker.run_once()
    assert state is not None
    return state


def _texts(retriever: Retriever) -> dict[str, str]:
    """Every live document of the tenant, by id, with its text (chunks in order)."""
    page = retriever.list_documents(COLLECTION, TENANT, limit=500)
    found = {}
    for info in page.documents:
        got = retriever.get_document(COLLECTION, TENANT, info.doc_id)
        assert got is not None
        _, chunks = got
        assert len(chunks) == info.chunk_count, f"{info.doc_id}: duplicate or missing chunks"
        assert len({c.chunk_id for c in chunks}) == len(chunks)
        found[info.doc_id] = "\n".join(c.text for c in chunks)
    return found


def _last_job(plane: ControlPlane, source: SourceRecord) -> Any:
    return JobQueue(plane).list_jobs(TENANT, source_id=source.id, limit=1)[0]


def test_a_folder_sync_follows_edits_additions_deletions_and_records_a_corrupt_pdf(
    stack: tuple[Retriever, ControlPlane, SyncSettings], docs_root: Path
) -> None:
    retriever, plane, settings = stack
    folder = docs_root / "handbook"
    _write(folder, {
        "intro.md": "# Intro\nThe welcome desk opens at nine.",
        "ops/runbook.md": "# Runbook\nRestart the pump with lever seven.",
        "ops/legacy.txt": "The fax machine is retired.",
        "faq.html": "<html><body><h1>FAQ</h1><p>Parking is on level two.</p></body></html>",
        "manual.pdf": text_pdf("The boiler pressure limit is 3 bar."),
        "notes.csv": "not,a,document",
    })  # fmt: skip
    source = _folder_source(plane, folder)
    worker = Worker(retriever, plane, settings)
    assert _sync(worker, source) == "succeeded"
    job = _last_job(plane, source)
    assert (job.progress.total, job.progress.added, job.progress.failed) == (5, 5, 0)
    texts = _texts(retriever)
    assert set(texts) == {f"handbook/{k}" for k in (
        "intro.md", "ops/runbook.md", "ops/legacy.txt", "faq.html", "manual.pdf")}  # fmt: skip
    assert "3 bar" in texts["handbook/manual.pdf"]
    assert "level two" in texts["handbook/faq.html"]

    # One edit, one new file, one deletion, one corrupt PDF.
    _write(folder, {
        "intro.md": "# Intro\nThe welcome desk opens at ten.",
        "ops/new.md": "# New\nVisitors sign in at the gate.",
        "broken.pdf": b"%PDF-1.4 this is not a pdf",
    })  # fmt: skip
    (folder / "ops/legacy.txt").unlink()
    assert _sync(worker, source) == "succeeded"
    job = _last_job(plane, source)
    progress = job.progress
    assert (progress.added, progress.updated, progress.deleted, progress.failed) == (1, 1, 1, 1)
    assert progress.unchanged == 3
    errors = JobQueue(plane).errors(job.id)
    assert [e.item_key for e in errors] == ["broken.pdf"]
    texts = _texts(retriever)
    assert set(texts) == {f"handbook/{k}" for k in (
        "intro.md", "ops/runbook.md", "ops/new.md", "faq.html", "manual.pdf")}  # fmt: skip
    assert "opens at ten" in texts["handbook/intro.md"]


def test_a_touched_file_costs_no_ingest_and_a_document_posted_by_hand_survives(
    stack: tuple[Retriever, ControlPlane, SyncSettings], docs_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    retriever, plane, settings = stack
    folder = docs_root / "notes"
    _write(folder, {f"n{i}.md": f"# Note {i}\nItem {i} is stored in bay {i}." for i in range(6)})
    source = _folder_source(plane, folder, "notes")
    worker = Worker(retriever, plane, settings)
    assert _sync(worker, source) == "succeeded"
    retriever.ingest(COLLECTION, TENANT, [Document("by-hand", "Posted by a caller.")])
    os.utime(folder / "n1.md", (time.time() + 5, time.time() + 5))  # touched, same bytes
    (folder / "n2.md").unlink()
    calls: list[int] = []
    original = retriever.ingest
    monkeypatch.setattr(retriever, "ingest", lambda *a, **k: calls.append(1) or original(*a, **k))
    assert _sync(worker, source) == "succeeded"
    assert calls == []
    job = _last_job(plane, source)
    assert (job.progress.unchanged, job.progress.deleted, job.progress.bytes) == (5, 1, len(
        (folder / "n1.md").read_bytes()))  # only the touched file was read  # fmt: skip
    texts = _texts(retriever)
    assert "by-hand" in texts and "notes/n2.md" not in texts and len(texts) == 6


@pytest.mark.parametrize("dies_at", ["ingest", "record", "delete"])
def test_a_worker_that_dies_is_replaced_after_its_lease_without_duplicates_or_losses(
    store: EdgeStore, control_plane_url: str, tmp_path: Path, docs_root: Path, dies_at: str
) -> None:
    folder = docs_root / "big"
    _write(folder, {f"d{i:02}.md": f"# Doc {i}\nPart {i} weighs {i} kg." for i in range(14)})
    first, plane = _retriever(store, control_plane_url, tmp_path / "a")
    settings = SyncSettings(
        confinement=Confinement((str(docs_root.parent / "{tenant}"),)), batch_size=4
    )
    source = _folder_source(plane, folder, "big")
    worker = Worker(first, plane, settings, lease_s=1.0)
    assert _sync(worker, source) == "succeeded"
    for i in range(0, 14, 3):  # changes so the second sync has ingests and deletions to do
        (folder / f"d{i:02}.md").write_text(f"# Doc {i}\nPart {i} now weighs {i + 100} kg.")
    for i in (1, 4, 7, 10):
        (folder / f"d{i:02}.md").unlink()

    hits = {"n": 0}

    def dying(original: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            hits["n"] += 1
            if hits["n"] == 2:
                if dies_at == "record":  # the batch is in the store, its record never commits
                    original(*args, **kwargs)
                raise Crash
            return original(*args, **kwargs)

        return call

    target = {"ingest": (first, "ingest"), "delete": (first, "delete_document"),
              "record": (worker.queue, "record")}[dies_at]  # fmt: skip
    setattr(target[0], target[1], dying(getattr(target[0], target[1])))
    worker.queue.enqueue(source.id, TENANT, kind="full", trigger="manual")
    with pytest.raises(Crash):
        worker.run_once()
    stuck = _last_job(plane, source)
    assert stuck.state == "running"  # nobody ended it: the lease is all that is left

    # A second worker (its own control-plane connections and owner id) takes over.
    second, plane2 = _retriever(store, control_plane_url, tmp_path / "b")
    replacement = Worker(second, plane2, settings, lease_s=1.0)
    assert replacement.run_once() is None  # the lease has not passed yet
    time.sleep(1.2)
    assert replacement.run_once() == "succeeded"
    job = _last_job(plane2, source)
    assert job.attempts == 2
    expected = {f"big/d{i:02}.md" for i in range(14) if i not in (1, 4, 7, 10)}
    texts = _texts(second)
    assert set(texts) == expected
    assert all(f"now weighs {i + 100}" in texts[f"big/d{i:02}.md"] for i in range(0, 14, 3))
    # Each item counted once, over both attempts.
    p = job.progress
    assert (p.updated, p.deleted, p.unchanged) == (5, 4, 5)
    plane.close()
    plane2.close()


def test_racing_workers_run_each_job_once(
    store: EdgeStore, control_plane_url: str, tmp_path: Path, docs_root: Path
) -> None:
    settings = SyncSettings(
        confinement=Confinement((str(docs_root.parent / "{tenant}"),)), batch_size=4
    )
    workers, planes = [], []
    for name in ("w1", "w2", "w3"):
        retriever, plane = _retriever(store, control_plane_url, tmp_path / name)
        planes.append(plane)
        workers.append(Worker(retriever, plane, settings, per_tenant=10))
    sources = []
    for s in range(6):
        folder = docs_root / f"s{s}"
        _write(folder, {f"f{i}.md": f"# F{i}\nSource {s} file {i}." for i in range(5)})
        sources.append(_folder_source(planes[0], folder, f"s{s}"))
        workers[0].queue.enqueue(sources[-1].id, TENANT, kind="full", trigger="manual")
    ran: list[str] = []
    lock = threading.Lock()

    def drain(worker: Worker) -> None:
        while (state := worker.run_once()) is not None:
            with lock:
                ran.append(state)

    threads = [threading.Thread(target=drain, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert ran == ["succeeded"] * 6
    for source in sources:
        job = _last_job(planes[0], source)
        assert (job.state, job.attempts, job.progress.added) == ("succeeded", 1, 5)
    assert len(_texts(workers[0].retriever)) == 30
    for plane in planes:
        plane.close()


def test_cancelling_leaves_the_collection_at_its_last_consistent_state(
    stack: tuple[Retriever, ControlPlane, SyncSettings], docs_root: Path
) -> None:
    retriever, plane, settings = stack
    folder = docs_root / "many"
    _write(folder, {f"m{i:02}.md": f"# M{i}\nShelf {i} holds {i} boxes." for i in range(12)})
    source = _folder_source(plane, folder, "many")
    queue = JobQueue(plane)
    job = queue.enqueue(source.id, TENANT, kind="full", trigger="manual")
    worker = Worker(retriever, plane, settings, observe=lambda outcome, n: queue.cancel(job.id))
    assert worker.run_once() == "cancelled"
    ended = queue.get(job.id)
    assert ended is not None and ended.state == "cancelled"
    texts = _texts(retriever)
    assert set(texts) == {f"many/m{i:02}.md" for i in range(4)}  # the first batch, whole
    with pytest.raises(JobConflictError):  # one live job per source
        queue.enqueue(source.id, TENANT, kind="full", trigger="manual")
        queue.enqueue(source.id, TENANT, kind="full", trigger="manual")
    assert worker.run_once() == "succeeded"
    assert len(_texts(retriever)) == 12


def test_deleting_a_source_purges_its_documents_only(
    stack: tuple[Retriever, ControlPlane, SyncSettings], docs_root: Path
) -> None:
    retriever, plane, settings = stack
    folder = docs_root / "gone"
    _write(folder, {"a.md": "# A\nAlpha.", "b.md": "# B\nBeta."})
    source = _folder_source(plane, folder, "gone")
    worker = Worker(retriever, plane, settings)
    assert _sync(worker, source) == "succeeded"
    retriever.ingest(COLLECTION, TENANT, [Document("kept", "Posted by hand.")])
    SourceRegistry(plane).mark_deleted(source.id)
    assert worker.run_once() == "succeeded"  # the purge, queued by the scheduler
    assert set(_texts(retriever)) == {"kept"}
    assert SourceRegistry(plane).get(source.id) is None
    assert SourceRegistry(plane).by_name(TENANT, "gone") is None


def _tickets(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE tickets (id INTEGER PRIMARY KEY, title TEXT, body TEXT, "
        "updated_at TEXT, team TEXT)"
    )
    db.executemany(
        "INSERT INTO tickets VALUES (?, ?, ?, ?, ?)",
        [(i, f"Ticket {i}", f"Ticket {i}: the printer on floor {i} jams.",
          f"2026-01-0{i} 10:00:00", "ops") for i in range(1, 6)],
    )  # fmt: skip
    db.commit()
    return db


def test_a_sql_source_syncs_incrementally_and_finds_deletions_on_its_full_pass(
    stack: tuple[Retriever, ControlPlane, SyncSettings], docs_root: Path
) -> None:
    retriever, plane, settings = stack
    db = _tickets(docs_root / "tickets.db")
    spec = SqlSpec(
        url=f"sqlite:///{docs_root / 'tickets.db'}", query="SELECT * FROM tickets",
        title_column="title", text_column="body", metadata_columns=["team"],
    )  # fmt: skip
    source = SourceRegistry(plane).create(
        tenant=TENANT, name="tickets", collection=COLLECTION, spec=spec, interval_s=None,
        created_by="acme:admin",
    )  # fmt: skip
    worker = Worker(retriever, plane, settings)
    assert _sync(worker, source) == "succeeded"
    assert len(_texts(retriever)) == 5
    db.execute("UPDATE tickets SET body = 'Ticket 3: fixed by a new drum.', "
               "updated_at = '2026-02-01 09:00:00' WHERE id = 3")  # fmt: skip
    db.execute("DELETE FROM tickets WHERE id = 5")
    db.commit()
    assert _sync(worker, source, "incremental") == "succeeded"
    job = _last_job(plane, source)
    assert (job.progress.seen, job.progress.updated, job.progress.deleted) == (1, 1, 0)
    texts = _texts(retriever)
    assert "new drum" in texts["tickets/3"] and "tickets/5" in texts
    assert _sync(worker, source, "full") == "succeeded"
    texts = _texts(retriever)
    assert set(texts) == {f"tickets/{i}" for i in range(1, 5)}
    hit = retriever.get_document(COLLECTION, TENANT, "tickets/2")
    assert hit is not None and hit[1][0].metadata["team"] == "ops"
    assert hit[1][0].metadata["source"] == "tickets"


def test_a_sql_source_cannot_write(docs_root: Path) -> None:
    db = _tickets(docs_root / "t.db")
    confinement = Confinement((str(docs_root.parent / "{tenant}"),))
    url = f"sqlite:///{docs_root / 't.db'}"
    for query in (
        "DELETE FROM tickets RETURNING *",
        "SELECT 1; DELETE FROM tickets",
        "UPDATE tickets SET body = '' RETURNING *",
    ):
        spec = SqlSpec(url=url, query=query, title_column="title", text_column="body")
        with pytest.raises(SqlSourceError):
            SqlReader(spec, source_url(spec, TENANT, confinement), metadata={}).check()
    assert db.execute("SELECT count(*) FROM tickets WHERE body != ''").fetchone() == (5,)


def test_what_a_source_may_read_is_confined(docs_root: Path, tmp_path: Path) -> None:
    confinement = Confinement((str(docs_root.parent / "{tenant}"),), str(tmp_path / "secrets"))
    assert confinement.folder(str(docs_root), TENANT) == docs_root.resolve()
    for outside in ("/etc", str(docs_root.parent / "other-tenant"), str(docs_root / "..")):
        with pytest.raises(ConfinementError, match="outside"):
            confinement.folder(outside, TENANT)
    with pytest.raises(ConfinementError, match="off"):
        Confinement().folder(str(docs_root), TENANT)
    with pytest.raises(ConfinementError, match="RAGDOCK_SECRET_ACME_"):
        confinement.check_env("RAGDOCK_DATABASE_URL", TENANT)
    assert confinement.check_env("RAGDOCK_SECRET_ACME_DB", TENANT) == "RAGDOCK_SECRET_ACME_DB"
    with pytest.raises(ConfinementError, match="secrets are in"):
        confinement.check_file(str(tmp_path / "secrets" / "other" / "pw"), TENANT)
    with pytest.raises(SqlSourceError, match="password"):
        source_url(SqlSpec(url="postgresql://u:pw@db/x", query="SELECT 1"), TENANT, confinement)
    with pytest.raises(ConfinementError, match="outside"):
        source_url(SqlSpec(url="sqlite:////etc/passwd.db", query="SELECT 1"), TENANT, confinement)


def test_schedules_queue_one_job_at_a_time_and_sql_passes_go_full_every_nth(
    stack: tuple[Retriever, ControlPlane, SyncSettings], docs_root: Path
) -> None:
    retriever, plane, settings = stack
    _tickets(docs_root / "s.db")
    spec = SqlSpec(
        url=f"sqlite:///{docs_root / 's.db'}", query="SELECT * FROM tickets",
        title_column="title", text_column="body", full_every=2,
    )  # fmt: skip
    source = SourceRegistry(plane).create(
        tenant=TENANT, name="sched", collection=COLLECTION, spec=spec, interval_s=0.5,
        created_by="acme:admin",
    )  # fmt: skip
    queue = JobQueue(plane)
    time.sleep(0.6)
    assert len(queue.schedule_due()) == 1
    assert queue.schedule_due() == []  # one live job per source
    kinds = []
    worker = Worker(retriever, plane, settings)
    for _ in range(3):
        assert worker.run_once() == "succeeded"  # run_once schedules first
        kinds.append(_last_job(plane, source).kind)
        time.sleep(0.6)
    assert kinds == ["full", "incremental", "full"]
    assert _last_job(plane, source).trigger == "schedule"


def test_a_tenant_runs_at_most_its_limit_of_jobs_and_a_job_that_keeps_dying_fails(
    stack: tuple[Retriever, ControlPlane, SyncSettings], docs_root: Path
) -> None:
    _, plane, _ = stack
    queue = JobQueue(plane, lease_s=0.3, per_tenant=1)
    first, second = (_folder_source(plane, docs_root, f"lim{i}") for i in range(2))
    queue.enqueue(first.id, TENANT, kind="full", trigger="manual")
    queue.enqueue(second.id, TENANT, kind="full", trigger="manual")
    taken = queue.claim("worker-a")
    assert taken is not None and taken.source_id == first.id
    assert queue.claim("worker-b") is None  # the tenant's one running job is taken
    for attempt in range(2, 6):  # its workers keep dying: each claim after the lease passed
        time.sleep(0.35)
        again = queue.claim(f"worker-{attempt}")
        assert again is not None and again.id == taken.id and again.attempts == attempt
    time.sleep(0.35)
    other = queue.claim("worker-z")  # the dead job is failed; the other source's job runs
    assert other is not None and other.source_id == second.id
    dead = queue.get(taken.id)
    assert dead is not None and dead.state == "failed" and "stopped 5 times" in (dead.error or "")
