"""Three gateway replicas over one vector store and one control plane, racing each other.

Each replica is an independent `Retriever` with its own control-plane connections, its own
snapshot cache and its own owner id (lease holder); they share nothing else. No Qdrant server can
run on these machines and the embedded engine belongs to one process, so the three instances
share ONE store object: what they share is exactly what N gateway pods share in production (a
Qdrant cluster and a PostgreSQL server). Runs on both control planes (SQLite and a real
PostgreSQL server).

For a bounded time they ingest, re-ingest, delete, search and drop-and-recreate, while readers
on every replica check each read. Then: every acknowledged write is there, no read ever saw a mix
of two versions of one document or a document vanish mid-swap, and nothing of a deleted document
is visible anywhere. A fourth writer dies between two steps of its swap with no cleanup at all:
its staged revision is collected only after its lease expires, the old version stays live
throughout, and the others never lose theirs.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from ragdock.controlplane import ControlPlane, open_control_plane
from retrieval.dense import MiniLMEmbedder
from retrieval.service import Retriever
from retrieval.sparse import Bm25Encoder
from retrieval.store import EdgeStore, Scope, StoredPoint, VectorStore
from retrieval.types import Document, SearchFilter

C, SCRATCH, T = "kb", "scratch", "acme"
LEASE_S, GRACE_S = 3.0, 2.0
RUN_S = 8.0
STABLE = [f"stable-{i}" for i in range(6)]  # re-ingested, never deleted
FLEETING = [f"fleeting-{i}" for i in range(3)]  # ingested and deleted in turn
_STAMP = re.compile(r"version (\d+)")


class Crash(BaseException):
    """A simulated death: not an `Exception`, so no cleanup handler runs."""


def document(doc_id: str, version: int) -> Document:
    """Three chunks, each stamped with the version."""
    body = "\n\n".join(
        f"# Part {part}\nThe {doc_id} ledger records entry {part} at version {version}."
        for part in ("one", "two", "three")
    )
    return Document(doc_id, body, title=doc_id)


def stamp(text: str) -> int:
    found = _STAMP.search(text)
    assert found is not None, text
    return int(found.group(1))


class Replica:
    """One gateway replica: its own control-plane connections and retriever."""

    def __init__(self, store: VectorStore, url: str, root: Path, embedder: MiniLMEmbedder):
        self.control: ControlPlane = open_control_plane(url, root)
        self.retriever = Retriever(
            store, embedder, Bm25Encoder(), root / "catalog", control=self.control,
            grace_s=GRACE_S, lease_s=LEASE_S,
        )  # fmt: skip

    def close(self) -> None:
        self.control.close()  # the shared store is closed once, by the test


@pytest.fixture
def replicas(
    tmp_path: Path, control_plane_url: str, embedder: MiniLMEmbedder
) -> Iterator[list[Replica]]:
    store = EdgeStore(tmp_path / "edge")
    group = [Replica(store, control_plane_url, tmp_path, embedder) for _ in range(3)]
    group[0].retriever.create_collection(C)
    yield group
    for replica in group:
        replica.close()
    store.close()


def whole_versions(chunks: list[tuple[str, str]]) -> dict[str, set[int]]:
    """doc id -> the versions its chunks carry."""
    seen: dict[str, set[int]] = defaultdict(set)
    for doc_id, text in chunks:
        seen[doc_id].add(stamp(text))
    return seen


@pytest.mark.timeout(600)
def test_replicas_race_without_losing_or_mixing_anything(replicas: list[Replica]) -> None:
    for i, doc_id in enumerate(STABLE):
        replicas[i % 3].retriever.ingest(C, T, [document(doc_id, 0)])
    acked: dict[str, int] = dict.fromkeys(STABLE, 0)  # stable doc -> last acknowledged version
    history: dict[str, list[tuple[float, int]]] = {d: [(0.0, 0)] for d in STABLE}
    deleted: dict[str, bool] = {}  # fleeting doc -> deleted (acknowledged) last
    problems: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    stop = time.monotonic() + RUN_S
    reads = [0]

    def writer(index: int) -> None:
        # Each document has one writing replica, so "last acknowledged" is well defined; the
        # other replicas read it, and everyone's commits interleave in the same collection.
        r, rng = replicas[index].retriever, random.Random(index)
        mine = [d for i, d in enumerate(STABLE) if i % 3 == index]
        fleeting = FLEETING[index]
        version = 0
        try:
            while time.monotonic() < stop:
                version += 1
                if rng.random() < 0.7:
                    batch = rng.sample(mine, k=rng.randint(1, len(mine)))
                    r.ingest(C, T, [document(d, version) for d in batch])
                    with lock:
                        acked.update(dict.fromkeys(batch, version))
                        for d in batch:
                            history[d].append((time.monotonic(), version))
                elif deleted.get(fleeting, True):
                    r.ingest(C, T, [document(fleeting, version)])
                    with lock:
                        deleted[fleeting] = False
                else:
                    assert r.delete_document(C, T, fleeting)
                    with lock:
                        deleted[fleeting] = True
                    # Gone for every replica at once: the catalog is the one they share.
                    for other in replicas:
                        if other.retriever.get_document(C, T, fleeting) is not None:
                            with lock:
                                problems.append(f"{fleeting} readable after its delete")
                r.collect(C)  # every replica collects too; never a live writer's work
        except BaseException as exc:
            errors.append(exc)

    def reader(index: int) -> None:
        r, rng = replicas[index].retriever, random.Random(100 + index)
        try:
            while time.monotonic() < stop:
                doc_id = rng.choice(STABLE)
                # What a read starting now must see at least: the last version acknowledged
                # before now minus this replica's snapshot cache age (its TTL).
                started = time.monotonic() - r.snapshots.ttl_s - 0.01
                with lock:
                    floor = max(v for t, v in history[doc_id] if t <= started)
                found = r.get_document(C, T, doc_id)
                if found is None:
                    problems.append(f"replica {index}: {doc_id} vanished")
                    continue
                info, chunks = found
                versions = {stamp(c.text) for c in chunks}
                if len(versions) != 1 or len(chunks) != info.chunk_count:
                    problems.append(f"replica {index}: {doc_id} read as {sorted(versions)}")
                hits = r.search(C, T, "ledger records entry version", top_k=60)
                for hit_doc, seen in whole_versions([(h.doc_id, h.text) for h in hits]).items():
                    if len(seen) > 1:
                        problems.append(f"replica {index}: search mixed {hit_doc} {sorted(seen)}")
                if versions and min(versions) < floor:
                    problems.append(f"replica {index}: {doc_id} at {min(versions)}, acked {floor}")
                reads[0] += 1
        except BaseException as exc:
            errors.append(exc)

    def recreator() -> None:
        # Drop and re-create a collection: the re-created one inherits nothing, on any replica.
        generation = 0
        try:
            while time.monotonic() < stop:
                generation += 1
                replicas[2].retriever.create_collection(SCRATCH)
                replicas[2].retriever.ingest(SCRATCH, T, [document("ghost", generation)])
                replicas[0].retriever.search(SCRATCH, T, "ledger")  # caches a snapshot
                replicas[2].retriever.delete_collection(SCRATCH)
                replicas[2].retriever.create_collection(SCRATCH)
                for other in replicas:
                    listed = other.retriever.list_documents(SCRATCH, T).documents
                    hits = other.retriever.search(SCRATCH, T, "ledger records entry")
                    if listed or hits:
                        problems.append(f"re-created {SCRATCH} shows {listed} {hits[:1]}")
                ingest = replicas[1].retriever.ingest(SCRATCH, T, [document("ghost", generation)])
                if ingest.added != 1:  # not skipped as "unchanged" by a stale catalog
                    problems.append(f"re-ingest into the re-created {SCRATCH}: {ingest}")
                replicas[1].retriever.delete_collection(SCRATCH)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
    threads += [threading.Thread(target=reader, args=(i,)) for i in range(3)]
    threads.append(threading.Thread(target=recreator))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not errors, errors[:3]
    assert problems == [], problems[:5]
    assert reads[0] > 30, "the readers barely ran"

    # Every acknowledged write is there, on every replica.
    for replica in replicas:
        for doc_id, version in acked.items():
            found = replica.retriever.get_document(C, T, doc_id)
            assert found is not None and {stamp(c.text) for c in found[1]} == {version}
        for doc_id, gone in deleted.items():
            assert (replica.retriever.get_document(C, T, doc_id) is None) == gone
    # After the grace, the store holds exactly the live versions' points.
    time.sleep(GRACE_S)
    replicas[1].retriever.collect(C)
    live = {d.doc_id: d for d in replicas[0].retriever.list_documents(C, T, limit=100).documents}
    points = replicas[0].retriever.store.scroll(C, Scope(tenant=T), 10_000)
    per_doc = whole_versions([(str(p.payload["doc_id"]), str(p.payload["text"])) for p in points])
    assert set(per_doc) == set(live)
    for doc_id, versions in per_doc.items():
        assert len(versions) == 1, f"{doc_id} keeps points of versions {sorted(versions)}"
    assert len(points) == sum(d.chunk_count for d in live.values())


@pytest.mark.timeout(300)
def test_a_dead_writers_work_is_collected_only_after_its_lease(replicas: list[Replica]) -> None:
    a, b, c = (replica.retriever for replica in replicas)
    a.ingest(C, T, [document("report", 1)])

    def die(step: str) -> None:
        if step == "written":
            raise Crash(step)

    a.fault = die
    with pytest.raises(Crash):
        a.ingest(C, T, [document("report", 2)])  # staged and written, never committed
    died = time.monotonic()
    generation = b.catalog.generation(C)
    assert generation is not None
    staged = [p for p in b.catalog.pending(generation) if p.state == "staged"]
    assert len(staged) == 1

    def staged_points() -> int:
        return b.store.count(C, Scope(tenant=T, revs=(staged[0].rev,)))

    assert staged_points() == 3
    # Other replicas collect and write meanwhile: the lease protects the (for all they know,
    # live) writer's work, and the old version stays live for every reader.
    while time.monotonic() - died < LEASE_S * 0.8:
        b.collect(C)
        c.ingest(C, T, [document(f"other-{int(time.monotonic() * 10)}", 1)])
        for r in (b, c):
            found = r.get_document(C, T, "report")
            assert found is not None and {stamp(ch.text) for ch in found[1]} == {1}
            hits = r.search(C, T, "report ledger", filter=SearchFilter(doc_ids=("report",)))
            assert {stamp(h.text) for h in hits} == {1}
        assert staged_points() == 3, "a live lease's work was collected"
    # Past the lease it becomes retired; one grace later it is gone.
    time.sleep(max(0.0, LEASE_S - (time.monotonic() - died)) + 0.1)
    b.collect(C)
    assert staged_points() == 3  # retired now, still within its grace
    time.sleep(GRACE_S)
    c.collect(C)
    assert staged_points() == 0
    assert b.catalog.pending(generation) == []
    found = c.get_document(C, T, "report")
    assert found is not None and {stamp(ch.text) for ch in found[1]} == {1}
    # The document can be written again, by anyone.
    b.ingest(C, T, [document("report", 3)])
    found = a.get_document(C, T, "report")
    assert found is not None and {stamp(ch.text) for ch in found[1]} == {3}


def test_a_second_process_cannot_open_the_embedded_store(tmp_path: Path) -> None:
    import subprocess
    import sys

    store = EdgeStore(tmp_path / "edge")
    try:
        code = (
            "import sys; from pathlib import Path; from retrieval.store import EdgeStore;"
            "EdgeStore(Path(sys.argv[1]))"
        )
        result = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / "edge")], capture_output=True, text=True
        )
        assert result.returncode != 0
        assert "in use by another process" in result.stderr
        assert "RAGDOCK_QDRANT_URL" in result.stderr
    finally:
        store.close()
    reopened = EdgeStore(tmp_path / "edge")  # released on close
    reopened.close()


def test_a_writer_of_a_dropped_generation_leaks_nothing_into_the_recreated_collection(
    replicas: list[Replica],
) -> None:
    a, b, _ = (replica.retriever for replica in replicas)
    shared = a.store

    class RecreatedUnderTheWriter:
        """A's view of the store: between A's lease check and its write, B drops and
        re-creates the collection (the widest window a real race can have)."""

        def __getattr__(self, name: str) -> object:
            return getattr(shared, name)

        def upsert(self, name: str, points: list[StoredPoint]) -> None:
            b.delete_collection(C)
            b.create_collection(C)
            shared.upsert(name, points)

    a.store = cast(VectorStore, RecreatedUnderTheWriter())
    with pytest.raises(KeyError, match="dropped"):
        a.ingest(C, T, [document("late", 1)])
    a.store = shared
    # A's points did land in the new collection (the store cannot tell), under the old
    # generation: no replica sees them, and the new catalog knows nothing of them.
    assert b.store.count(C, Scope(tenant=T)) == 3
    for r in (a, b):
        assert r.search(C, T, "late ledger records entry") == []
        assert r.get_document(C, T, "late") is None
        assert r.list_documents(C, T).documents == []
    assert a.ingest(C, T, [document("late", 1)]).added == 1  # not "unchanged"
    time.sleep(b.snapshots.ttl_s)  # B's cached snapshot predates A's commit
    # The new generation's counter has now passed the orphans' seq: only the generation
    # keeps them out. Three chunks, not six.
    hits = b.search(C, T, "late ledger records entry", top_k=10)
    assert [h.doc_id for h in hits] == ["late"] * 3


def test_a_second_gateway_over_the_same_embedded_store_is_refused(tmp_path: Path) -> None:
    """`ragdock serve` over a data dir another process owns exits with the reason, before it
    touches anything (this test process holds the store, as a running gateway would)."""
    import os
    import subprocess
    import sys

    data_dir = tmp_path / "data"
    store = EdgeStore(data_dir / "qdrant")
    try:
        env = {**os.environ, "RAGDOCK_DATA_DIR": str(data_dir), "RAGDOCK_HOME": str(tmp_path)}
        result = subprocess.run(
            [sys.executable, "-m", "ragdock_cli", "serve", "--engine-url", "http://127.0.0.1:9"],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
    finally:
        store.close()
    assert result.returncode == 1, result.stdout + result.stderr
    said = " ".join((result.stdout + result.stderr).split())  # rich wraps long lines
    assert "in use by another process" in said and "RAGDOCK_DATABASE_URL" in said
    assert not (data_dir / "control.sqlite").exists()  # refused before opening anything
