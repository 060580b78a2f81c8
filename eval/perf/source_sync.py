"""Syncing a folder source against posting the same documents to the documents API, side by
side in one run.

`--docs` small markdown files (a few hundred bytes each, distinct text) go into a fresh
collection per repeat, two ways through one real gateway (`ragdock serve`; no engine is needed
for documents and sources), alternating so that both see the same machine load:

- post: `POST /v1/collections/{c}/documents`, `--batch` documents a request, one after another;
- sync: a folder source over the same files (`POST /v1/sources`), run by the gateway's own
  worker in batches of `--batch` (RAGDOCK_SOURCE_BATCH_SIZE), timed until its job succeeded;
  then a second sync of the unchanged folder (`POST /v1/sources/{name}/sync`).

Both are timed from the first request (the collection's creation included): the post to its
last answer, the sync to its job's `finished_at` (the embedded control plane's clock is this
machine's), so the client's polling, once a second, adds no overshoot; the job's timestamps split
the sync's time into the wait in the queue (the idle worker looks for work every 2 s) and the run.
Targets: sync >= 0.9x post's docs/s; the second sync < 5% of the first's wall time.

Then the worker's peak RSS: with the gateway stopped, `ragdock worker --once` runs alone (a data
directory of its own) over `--small` and over `--docs` files, its peak from `wait4`'s
`ru_maxrss`. It must not grow with the number of documents (target: ratio <= 1.10).

Run: python -m eval.perf.source_sync [--docs 2000] [--small 500] [--batch 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from eval.perf.bench import cpu_seconds, print_results, results_table
from ragdock.contracts.source_spec import FolderSpec
from ragdock.settings import Settings
from retrieval.sources.files import file_document
from retrieval.sources.jobs import JobQueue
from retrieval.sources.registry import SourceRegistry
from retrieval.untrusted import ExtractLimits
from server.app import open_control
from server.process import GatewayProcess, start_gateway

console = Console(width=150)
NO_ENGINE = "http://127.0.0.1:9"  # nothing listens there; documents and sources need no engine
TENANT = "default"  # the tenant of a key that names none
_WORDS = (
    "invoice", "policy", "shipment", "warranty", "refund", "contract", "supplier", "audit",
    "ledger", "quarter", "forecast", "inventory", "customer", "ticket", "release", "incident",
    "review", "budget", "vendor", "license", "renewal", "security", "backup", "network",
    "storage", "latency", "schedule", "training", "handbook", "onboarding", "payroll", "travel",
)  # fmt: skip


def write_corpus(folder: Path, count: int) -> int:
    """`count` markdown files of a few hundred bytes, each with text of its own; their bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for i in range(count):
        rng = random.Random(i)
        sentences = [
            " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 14))).capitalize() + "."
            for _ in range(rng.randint(3, 5))
        ]
        text = f"# Note {i}: {rng.choice(_WORDS)} {rng.choice(_WORDS)}\n\n" + (
            f"Record {i} of the archive. " + " ".join(sentences) + "\n"
        )
        (folder / f"note-{i:05d}.md").write_text(text)
        total += len(text.encode())
    return total


def documents_api_batches(folder: Path, batch: int) -> list[dict[str, Any]]:
    """The request bodies that post the folder's files, `batch` documents each: the same text,
    title and uri as the sync's documents (built by the sync's own `file_document`)."""
    docs = []
    for path in sorted(folder.glob("*.md")):
        doc = file_document(
            path.name, path.read_bytes(), doc_id=path.name, version="", limits=ExtractLimits(),
            metadata={"source_id": path.name},
        )  # fmt: skip
        docs.append({"id": doc.doc_id, "text": doc.text, "title": doc.title, "uri": doc.uri,
                     "content_type": doc.content_type, "metadata": doc.metadata})  # fmt: skip
    return [{"documents": docs[i : i + batch]} for i in range(0, len(docs), batch)]


@dataclass(frozen=True)
class Timing:
    seconds: float  # client wall clock, first request to last answer
    gateway_cpu_s: float  # the gateway process's user + system CPU over the same span
    queued_s: float = 0.0  # a sync: from its job's creation to a worker claiming it
    run_s: float = 0.0  # a sync: from the claim to the job's end


def post_documents(client: httpx.Client, gateway: GatewayProcess, collection: str,
                   bodies: list[dict[str, Any]]) -> Timing:  # fmt: skip
    """(A) The documents API, one batch after another, into a new collection."""
    cpu, started = cpu_seconds(gateway.proc.pid), time.perf_counter()
    client.post("/collections", json={"name": collection}).raise_for_status()
    for body in bodies:
        reply = client.post(f"/collections/{collection}/documents", json=body)
        reply.raise_for_status()
    return Timing(time.perf_counter() - started, cpu_seconds(gateway.proc.pid) - cpu)


def wait_job(client: httpx.Client, job_id: str, timeout_s: float = 1800) -> dict[str, Any]:
    """The job once it has ended, polled once a second: each poll is a request (~6 ms of the
    gateway's CPU) served on the cores the sync runs on; its end comes from its timestamps.

    Raises:
        TimeoutError: it did not end within `timeout_s`.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        reply = client.get(f"/jobs/{job_id}")
        reply.raise_for_status()
        job: dict[str, Any] = reply.json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(1.0)
    raise TimeoutError(f"job {job_id} did not end within {timeout_s} s")


def _synced(job: dict[str, Any], started: float, cpu: float, gateway: GatewayProcess,
            expect: dict[str, int]) -> Timing:  # fmt: skip
    """The sync's timing; `started` is the epoch second of its first request."""
    seconds, used = job["finished_at"] - started, cpu_seconds(gateway.proc.pid) - cpu
    progress = job["progress"]
    if job["state"] != "succeeded" or any(progress[k] != v for k, v in expect.items()):
        raise RuntimeError(f"sync job ended {job['state']}, {progress}, not {expect}: {job}")
    return Timing(seconds, used, job["started_at"] - job["created_at"],
                  job["finished_at"] - job["started_at"])  # fmt: skip


def sync_folder(client: httpx.Client, gateway: GatewayProcess, name: str, folder: Path,
                count: int) -> tuple[Timing, Timing]:  # fmt: skip
    """(B) A new folder source's first sync, then a second one over the unchanged files."""
    cpu, started = cpu_seconds(gateway.proc.pid), time.time()
    body = {"name": name, "collection": name, "spec": {"kind": "folder", "path": str(folder)},
            "sync": True}  # fmt: skip
    reply = client.post("/sources", json=body)
    reply.raise_for_status()
    job = wait_job(client, reply.json()["active_job"]["id"])
    first = _synced(job, started, cpu, gateway, {"added": count, "failed": 0})
    cpu, started = cpu_seconds(gateway.proc.pid), time.time()
    reply = client.post(f"/sources/{name}/sync", json={"full": True})
    reply.raise_for_status()
    job = wait_job(client, reply.json()["id"])
    second = _synced(job, started, cpu, gateway, {"unchanged": count, "added": 0})
    return first, second


def start(workdir: Path, env: dict[str, str], attempts: int = 3) -> GatewayProcess:
    """`ragdock serve`, tried again when it misses start_gateway's 60 s (importing torch and
    the embedder on two busy cores can take longer; a second try finds the files cached)."""
    for attempt in range(1, attempts + 1):
        try:
            return start_gateway(NO_ENGINE, workdir / f"gateway-{attempt}.log", env)
        except RuntimeError:
            if attempt == attempts:
                raise
            console.print(f"the gateway did not answer within 60 s (try {attempt}); again")
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class WorkerRun:
    peak_rss_mib: float
    run_s: float  # the job's run (claim to end), the process's start not included


def worker_peak(root: Path, folder: Path, count: int, batch: int, workdir: Path) -> WorkerRun:
    """`ragdock worker --once` alone over `folder`: its source and job are written into a fresh
    control plane first, then the worker claims the job, runs it and exits."""
    data = workdir / f"worker-{count}"
    env = {
        "RAGDOCK_DATA_DIR": str(data), "RAGDOCK_ADAPTERS_DIR": str(workdir / "adapters"),
        "RAGDOCK_SOURCE_ROOTS": str(root), "RAGDOCK_SOURCE_BATCH_SIZE": str(batch),
        "RAGDOCK_LOG_LEVEL": "warning", "RAGDOCK_API_KEYS": "", "HF_HUB_OFFLINE": "1",
    }  # fmt: skip
    settings = Settings.load(None, data_dir=data)
    plane = open_control(settings)
    try:
        source = SourceRegistry(plane).create(
            tenant=TENANT, name=f"rss-{count}", collection=f"rss-{count}",
            spec=FolderSpec(path=str(folder)), interval_s=None, created_by="bench",
        )  # fmt: skip
        queue = JobQueue(plane, lease_s=settings.job_lease_s, per_tenant=settings.jobs_per_tenant)
        job_id = queue.enqueue(source.id, TENANT, kind="full", trigger="manual").id
    finally:
        plane.close()
    with (workdir / f"worker-{count}.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ragdock_cli", "worker", "--once"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env},
        )  # fmt: skip
        # wait4 gives this child's own peak (RUSAGE_CHILDREN would mix in the gateway's).
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    plane = open_control(settings)
    try:
        job = JobQueue(plane).get(job_id)
    finally:
        plane.close()
    if proc.returncode != 0 or job is None or job.state != "succeeded":
        log_text = (workdir / f"worker-{count}.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"worker exited {proc.returncode}, job {job}:\n{log_text}")
    if job.progress.added != count:
        raise RuntimeError(f"the worker added {job.progress.added} of {count} documents")
    assert job.started_at is not None and job.finished_at is not None
    return WorkerRun(usage.ru_maxrss / 1024, job.finished_at - job.started_at)


def main(argv: Sequence[str] | None = None) -> None:
    """Print the table of figures, targets and verdicts."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--small", type=int, default=500, help="the smaller worker RSS run")
    parser.add_argument("--batch", type=int, default=32, help="documents a request / a sync batch")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="ragdock-sync-bench-"))
    root = workdir / "sources"
    size = write_corpus(root / "docs", args.docs)
    write_corpus(root / "small", args.small)
    bodies = documents_api_batches(root / "docs", args.batch)
    console.print(f"{args.docs} files, {size / args.docs:.0f} bytes on average, in {root}")
    key = "bench-" + secrets.token_hex(12)
    env = {
        "RAGDOCK_API_KEYS": json.dumps([{"key": key, "name": "bench", "scopes": ["ingest"]}]),
        "RAGDOCK_SOURCE_ROOTS": str(root), "RAGDOCK_SOURCE_BATCH_SIZE": str(args.batch),
        "HF_HUB_OFFLINE": "1",
    }  # fmt: skip
    posts: list[Timing] = []
    firsts: list[Timing] = []
    seconds: list[Timing] = []
    gateway = start(workdir, env)
    try:
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=gateway.api_base, headers=headers, timeout=600) as client:
            for rep in range(args.repeats):
                # Alternate which goes first, so neither always follows the other's leftovers.
                order = ("post", "sync") if rep % 2 == 0 else ("sync", "post")
                for what in order:
                    if what == "post":
                        posts.append(post_documents(client, gateway, f"post-{rep}", bodies))
                    else:
                        first, second = sync_folder(
                            client, gateway, f"sync-{rep}", root / "docs", args.docs
                        )
                        firsts.append(first)
                        seconds.append(second)
                console.print(
                    f"repeat {rep + 1}/{args.repeats}: post {posts[-1].seconds:.1f} s, "
                    f"sync {firsts[-1].seconds:.1f} s, again {seconds[-1].seconds:.2f} s"
                )
    finally:
        gateway.stop()
    runs = {n: worker_peak(root, root / d, n, args.batch, workdir)
            for n, d in ((args.small, "small"), (args.docs, "docs"))}  # fmt: skip
    print_table(args, posts, firsts, seconds, runs)


def _median(values: Sequence[float]) -> float:
    return statistics.median(values)


def _all(values: Sequence[float], spec: str) -> str:
    return ", ".join(format(v, spec) for v in values)


def print_table(args: argparse.Namespace, posts: list[Timing], firsts: list[Timing],
                seconds: list[Timing], runs: dict[int, WorkerRun]) -> None:  # fmt: skip
    n = args.docs
    table = results_table(
        f"Folder sync against the documents API: {n:,} small markdown files, batches of "
        f"{args.batch}, {args.repeats} alternating repeats",
        ("measure", "median", "all repeats", "target", "verdict"),
    )
    post_rate = [n / t.seconds for t in posts]
    sync_rate = [n / t.seconds for t in firsts]
    ratio = [s / p for s, p in zip(sync_rate, post_rate, strict=True)]
    again = [b.seconds / a.seconds for a, b in zip(firsts, seconds, strict=True)]
    again_run = [b.run_s / a.run_s for a, b in zip(firsts, seconds, strict=True)]

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    table.add_row("post: docs/s", f"{_median(post_rate):.1f}", _all(post_rate, ".1f"), "", "")
    table.add_row("sync, first: docs/s", f"{_median(sync_rate):.1f}", _all(sync_rate, ".1f"),
                  "", "")  # fmt: skip
    table.add_row("sync / post (docs/s)", f"{_median(ratio):.3f}", _all(ratio, ".3f"), ">= 0.9",
                  verdict(_median(ratio) >= 0.9))  # fmt: skip
    for label, timings in (("post", posts), ("sync, first", firsts), ("sync, second", seconds)):
        per_k = [1000 * t.gateway_cpu_s / n for t in timings]
        table.add_row(f"{label}: gateway CPU s per 1,000 docs", f"{_median(per_k):.2f}",
                      _all(per_k, ".2f"), "", "")  # fmt: skip
    for label, timings in (("sync, first", firsts), ("sync, second", seconds)):
        table.add_row(f"{label}: wall s", f"{_median([t.seconds for t in timings]):.2f}",
                      _all([t.seconds for t in timings], ".2f"), "", "")  # fmt: skip
        table.add_row(f"{label}: of it queued s", f"{_median([t.queued_s for t in timings]):.2f}",
                      _all([t.queued_s for t in timings], ".2f"), "", "")  # fmt: skip
    table.add_row("second / first sync (wall)", f"{_median(again):.3f}", _all(again, ".3f"),
                  "< 0.05", verdict(_median(again) < 0.05))  # fmt: skip
    table.add_row("second / first sync (job run only)", f"{_median(again_run):.3f}",
                  _all(again_run, ".3f"), "", "")  # fmt: skip
    small, big = runs[args.small], runs[n]
    for count, run in sorted(runs.items()):
        table.add_row(f"worker --once, {count:,} docs: peak RSS MiB", f"{run.peak_rss_mib:.0f}",
                      "", "", "")  # fmt: skip
        table.add_row(f"worker --once, {count:,} docs: docs/s (job run, embedder load incl.)",
                      f"{count / run.run_s:.1f}", "", "", "")  # fmt: skip
    growth = big.peak_rss_mib / small.peak_rss_mib
    table.add_row(f"peak RSS {n:,} / {args.small:,} docs", f"{growth:.3f}", "", "<= 1.10",
                  verdict(growth <= 1.10))  # fmt: skip
    notes = [
        "the embedder (all-MiniLM-L6-v2) runs in the gateway and in the worker; one process "
        "at a time, on the same cores; medians over the repeats",
    ]
    print_results(console, table, notes=notes)


if __name__ == "__main__":
    main()
