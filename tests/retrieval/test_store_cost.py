"""What one collection of the embedded Qdrant engine costs the process while it is open, read
from /proc/self: the figures behind `RAGDOCK_MAX_COLLECTIONS` (README, Quotas). Measured here:
8 threads and 1 open file per collection, all returned when it is dropped, so 200 collections
hold 1,600 threads and ~4,000 would exhaust a host's default PID limit."""

from __future__ import annotations

import os
import time
from pathlib import Path

from retrieval.store import EdgeStore

COLLECTIONS = 10
THREADS_PER_COLLECTION = 8  # the README's figure
FILES_PER_COLLECTION = 1


def threads() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads: line in /proc/self/status")


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_an_embedded_collection_costs_8_threads_and_1_file_until_dropped(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "qdrant")
    try:
        before_threads, before_files = threads(), open_files()
        for i in range(COLLECTIONS):
            store.create_collection(f"c{i}", 8)
        per_thread = (threads() - before_threads) / COLLECTIONS
        per_file = (open_files() - before_files) / COLLECTIONS
        print(f"per collection: {per_thread:.1f} threads, {per_file:.1f} open files")
        assert per_thread <= THREADS_PER_COLLECTION, "update the README and the limit's docs"
        assert per_file <= FILES_PER_COLLECTION, "update the README and the limit's docs"
        for i in range(COLLECTIONS):
            store.delete_collection(f"c{i}")
        deadline = time.monotonic() + 5
        while threads() > before_threads and time.monotonic() < deadline:
            time.sleep(0.05)  # a shard's threads end just after its close returns
        assert threads() <= before_threads
        assert open_files() <= before_files
    finally:
        store.close()
