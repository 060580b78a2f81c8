"""kill -9 of a real `ragdock worker` mid-job: the next worker takes the job once its lease has
passed and resumes it, and the collection ends equal to the folder, without a duplicate chunk.

Each worker is the CLI as operators run it (a subprocess with the real MiniLM embedder and the
embedded Qdrant engine); the test creates the source and queues its jobs on the control plane
directly, polls the progress the workers commit and SIGKILLs them at chosen points: while
ingesting (twice, early and late in the first sync), just after a claim, and during the
deletion pass of a second sync. Then, with every worker gone, it opens the store itself.

Racing. The embedded store belongs to one process at a time (an exclusive lock the kernel
drops when the process dies), so two `ragdock worker` processes cannot share it: the second
one is refused, with the reason, before it touches anything; that refusal is what is checked
here. Workers racing for jobs over one store (separate control-plane connections and owner
ids) are tests/retrieval/test_source_sync.py::test_racing_workers_run_each_job_once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ragdock.contracts.source_spec import FolderSpec
from ragdock.controlplane import ControlPlane, open_control_plane
from retrieval.factory import open_retriever
from retrieval.sources.jobs import JobQueue, JobRecord
from retrieval.sources.registry import SourceRecord, SourceRegistry
from retrieval.store.base import Scope

TENANT, COLLECTION, SOURCE = "acme", "kb", "big"
FILES = 60
LEASE_S = 3.0
BATCH = 4
EDITED = range(0, FILES, 6)  # 10 files changed before the second sync
DELETED = [i for i in range(FILES) if i % 6 != 0 and i % 3 != 1]  # 30 files gone by then


def _body(i: int, weight: int) -> str:
    # A few paragraphs each, so a document is several chunks and a batch takes a moment to embed.
    paragraphs = [
        f"Part {i} of the pump assembly weighs {weight} kg and sits on shelf {i % 7}.",
        *(f"Section {s}: the fitting for part {i} is tightened to {s * 5 + i} Nm before the "
          f"pressure test, and the seal is replaced every {s + 2} services." for s in range(6)),
    ]  # fmt: skip
    return f"# Part {i}\n\n" + "\n\n".join(paragraphs) + "\n"


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[tuple[Path, Path, ControlPlane]]:
    """(the data dir the workers share, the folder source's directory, the control plane)."""
    data_dir, folder = tmp_path / "data", tmp_path / "share" / TENANT / SOURCE
    folder.mkdir(parents=True)
    for i in range(FILES):
        (folder / f"p{i:02}.md").write_text(_body(i, i))
    plane = open_control_plane(None, data_dir)  # the embedded control.sqlite the workers open
    yield data_dir, folder, plane
    plane.close()


@pytest.fixture
def workers(layout: tuple[Path, Path, ControlPlane], tmp_path: Path) -> Iterator[Workers]:
    data_dir, folder, _ = layout
    started = Workers(data_dir, folder.parent.parent, tmp_path)
    yield started
    started.close()


def _worker_env(data_dir: Path, share: Path) -> dict[str, str]:
    return {
        **os.environ,
        "RAGDOCK_DATA_DIR": str(data_dir),
        "RAGDOCK_SOURCE_ROOTS": str(share / "{tenant}"),
        "RAGDOCK_JOB_LEASE_S": str(LEASE_S),
        "RAGDOCK_SOURCE_BATCH_SIZE": str(BATCH),
        # A killed ingest's staged points are collected soon after (see the final check).
        "RAGDOCK_INGEST_LEASE_S": "2",
        "RAGDOCK_FRESHNESS_GRACE_S": "1",
        "RAGDOCK_LOG_LEVEL": "info",
        "HF_HUB_OFFLINE": "1",
    }


class Workers:
    """Starts `ragdock worker` processes over one data dir, each logging to a file of its own.
    Each start costs a cold start (imports, then the embedder at the first batch): ~10-60 s."""

    def __init__(self, data_dir: Path, share: Path, logs: Path) -> None:
        self.env, self.logs = _worker_env(data_dir, share), logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.logs / f"worker-{len(self.procs) + 1}.log"
        with log.open("wb") as handle:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ragdock_cli", "worker", *args],
                stdout=handle, stderr=subprocess.STDOUT, env=self.env,
            )  # fmt: skip
        self.procs.append(proc)
        return proc, log

    def close(self) -> None:
        for proc in self.procs:  # a failed test leaves no worker behind
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _kill_when(
    proc: subprocess.Popen[bytes],
    log: Path,
    queue: JobQueue,
    job_id: str,
    ready: Callable[[JobRecord], bool],
    timeout_s: float = 240.0,
) -> JobRecord:
    """SIGKILL `proc` as soon as the job's committed state satisfies `ready`; the job as the
    dead worker left it."""
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            job = queue.get(job_id)
            assert job is not None
            if ready(job):
                break
            assert proc.poll() is None, f"the worker exited ({proc.returncode}):\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no kill point in {timeout_s} s: {job.progress}"
            time.sleep(0.002)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    left = queue.get(job_id)
    assert left is not None
    # The kill landed mid-job: nobody ended it, the lease is all that is left.
    assert left.state == "running", f"the job ended before the kill: {left.state} {left.progress}"
    return left


def _wait_lease(plane: ControlPlane, queue: JobQueue, job_id: str) -> None:
    deadline = time.monotonic() + 4 * LEASE_S
    while True:
        job = queue.get(job_id)
        assert job is not None and job.lease_expires is not None
        with plane.read() as conn:
            if plane.now(conn) > job.lease_expires:
                return
        assert time.monotonic() < deadline, "the dead worker's lease never passed"
        time.sleep(0.1)


def _wait_done(
    proc: subprocess.Popen[bytes], log: Path, queue: JobQueue, job_id: str, timeout_s: float = 300
) -> JobRecord:
    """The job once `proc` has ended it, which must be a success."""
    deadline = time.monotonic() + timeout_s
    while True:
        code = proc.poll()  # before the read: a worker that ended the job and exited is fine
        job = queue.get(job_id)
        assert job is not None
        if job.state not in ("queued", "running"):
            break
        assert code is None, f"the worker exited ({code}), the job {job.state}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"the job did not end in {timeout_s} s: {job.progress}"
        time.sleep(0.05)
    assert job.state == "succeeded", (job.state, job.error, log.read_text())
    return job


def _source(plane: ControlPlane, folder: Path) -> SourceRecord:
    return SourceRegistry(plane).create(
        tenant=TENANT, name=SOURCE, collection=COLLECTION, spec=FolderSpec(path=str(folder)),
        interval_s=None, created_by="acme:admin",
    )  # fmt: skip


def _check_collection(data_dir: Path, folder: Path, edited: dict[int, int]) -> None:
    """With every worker gone: the collection's documents are the folder's files, each one
    whole version, and the store holds exactly their chunks (nothing a dead worker staged)."""
    retriever = open_retriever(data_dir, lease_s=2.0, grace_s=1.0)  # the real MiniLM embedder
    try:
        time.sleep(3.0)  # past a dead ingest's lease and the grace, then collect twice
        retriever.collect(COLLECTION)
        time.sleep(1.5)
        retriever.collect(COLLECTION)
        page = retriever.list_documents(COLLECTION, TENANT, limit=500)
        listed = {d.doc_id: d for d in page.documents}
        expected = {f"{SOURCE}/{p.name}" for p in folder.iterdir()}
        assert set(listed) == expected
        for doc_id, info in listed.items():
            found = retriever.get_document(COLLECTION, TENANT, doc_id)
            assert found is not None
            _, chunks = found
            assert len(chunks) == info.chunk_count > 0, doc_id
            assert len({c.chunk_id for c in chunks}) == len(chunks), f"{doc_id}: duplicate chunks"
            i = int(doc_id.removeprefix(f"{SOURCE}/p").removesuffix(".md"))
            assert f"weighs {edited.get(i, i)} kg" in chunks[0].text, doc_id
        points = retriever.store.scroll(COLLECTION, Scope(tenant=TENANT), 100_000)
        revisions: dict[str, set[str]] = defaultdict(set)
        counts: dict[str, int] = defaultdict(int)
        for point in points:
            revisions[str(point.payload["doc_id"])].add(str(point.payload["rev"]))
            counts[str(point.payload["doc_id"])] += 1
        assert set(counts) == expected
        for doc_id, info in listed.items():
            assert len(revisions[doc_id]) == 1, f"{doc_id}: points of {revisions[doc_id]}"
            assert counts[doc_id] == info.chunk_count, f"{doc_id}: duplicate points"
    finally:
        retriever.close()


@pytest.mark.timeout(900)
def test_kill_9_of_workers_mid_job_ends_in_the_folder_without_duplicates(
    layout: tuple[Path, Path, ControlPlane], workers: Workers
) -> None:
    data_dir, folder, plane = layout
    queue = JobQueue(plane, lease_s=LEASE_S)
    source = _source(plane, folder)

    # First sync: killed while ingesting, early then late, and finished by a third worker.
    job = queue.enqueue(source.id, TENANT, kind="full", trigger="manual")
    first, first_log = workers.start()
    left = _kill_when(first, first_log, queue, job.id, lambda j: j.progress.seen >= 8)
    assert left.attempts == 1 and left.progress.seen < FILES
    _wait_lease(plane, queue, job.id)
    second, second_log = workers.start("--once")
    left = _kill_when(second, second_log, queue, job.id, lambda j: j.progress.seen >= 36)
    assert left.attempts == 2 and left.progress.seen < FILES
    _wait_lease(plane, queue, job.id)
    third, third_log = workers.start()  # stays up: it also takes the second sync's job
    done = _wait_done(third, third_log, queue, job.id)
    assert done.attempts == 3
    p = done.progress
    # Each file counted once over the three attempts (counts commit with the work they count).
    assert (p.total, p.seen, p.added, p.updated, p.unchanged, p.deleted, p.failed) == (
        FILES, FILES, FILES, 0, 0, 0, 0,
    )  # fmt: skip
    assert queue.errors(done.id) == []

    # Second sync: edits and deletions; killed right after its claim and in its deletion pass.
    edited = {i: 1000 + i for i in EDITED}
    for i, weight in edited.items():
        (folder / f"p{i:02}.md").write_text(_body(i, weight))
    for i in DELETED:
        (folder / f"p{i:02}.md").unlink()
    job = queue.enqueue(source.id, TENANT, kind="full", trigger="manual")
    left = _kill_when(third, third_log, queue, job.id, lambda j: j.state == "running")
    assert left.attempts == 1
    _wait_lease(plane, queue, job.id)
    fourth, fourth_log = workers.start("--once")
    left = _kill_when(fourth, fourth_log, queue, job.id, lambda j: j.progress.deleted >= BATCH)
    assert left.attempts == 2 and left.progress.deleted < len(DELETED)
    _wait_lease(plane, queue, job.id)
    fifth, fifth_log = workers.start("--once")
    assert fifth.wait(timeout=300) == 0, fifth_log.read_text()
    done = _wait_done(fifth, fifth_log, queue, job.id)
    assert done.attempts == 3
    p = done.progress
    kept = FILES - len(DELETED)
    assert (p.total, p.seen, p.added, p.updated, p.unchanged, p.deleted, p.failed) == (
        kept, kept, 0, len(edited), kept - len(edited), len(DELETED), 0,
    )  # fmt: skip
    _check_collection(data_dir, folder, edited)


def test_a_second_worker_over_the_same_store_is_refused_not_let_in(
    layout: tuple[Path, Path, ControlPlane], workers: Workers
) -> None:
    data_dir, folder, plane = layout
    queue = JobQueue(plane, lease_s=LEASE_S)
    job = queue.enqueue(_source(plane, folder).id, TENANT, kind="full", trigger="manual")
    holder, holder_log = workers.start()
    deadline = time.monotonic() + 120
    while (found := queue.get(job.id)) is not None and found.state == "queued":
        assert holder.poll() is None, holder_log.read_text()
        assert time.monotonic() < deadline, "the first worker did not claim the job"
        time.sleep(0.01)
    rival, rival_log = workers.start("--once")
    assert rival.wait(timeout=120) != 0
    said = " ".join(rival_log.read_text().split())  # the console wraps long lines
    assert "is in use by another process" in said, said
    assert f"pid {holder.pid}" in said
    # Nothing of the rival's reached the job or the store: the holder finishes it alone.
    done = _wait_done(holder, holder_log, queue, job.id)
    assert done.attempts == 1 and done.owner is None
    assert (done.progress.seen, done.progress.added, done.progress.failed) == (FILES, FILES, 0)
    holder.send_signal(signal.SIGTERM)
    assert holder.wait(timeout=60) == 0, holder_log.read_text()
    _check_collection(data_dir, folder, {})
