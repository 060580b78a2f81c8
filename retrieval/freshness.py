"""Atomic document replacement, shared by every replica, on a store without transactions.

Qdrant applies each update on its own; replacing a document's chunks is several updates (write
new, delete old), and a reader between them would see both versions or neither. So visibility is
decided in the control plane (`retrieval.catalog`, one transaction per step), which every
gateway replica shares:

1. A collection has a generation (new on every create) and a staging counter `seq`. Every point
   carries its revision `rev`, the generation `gen` and the `seq` it was staged under.
2. A reader takes a snapshot in one statement: generation G, watermark W = the counter now, and
   the hidden set (revisions staged or retired). Its query excludes other generations, points
   with `seq > W` (staged after the snapshot) and hidden revisions.
3. A writer stages (one transaction: counter + 1 -> s, new revisions recorded staged under its
   lease), writes points with `seq = s`, renewing the lease as it goes, and commits (one
   transaction: new revisions live, the versions they replace retired at time t).
   A snapshot older than the staging has W < s and cannot see the new points; one taken between
   staging and commit hides them; one after the commit sees them. No reader waits for a writer,
   and no writer waits for readers.
4. Retired points are deleted only after a grace period (`grace_s`, default 30 s) from t, by
   whichever replica collects first. A read must finish within `read_budget_s` (half the grace)
   of taking its snapshot, else it is retried with a fresh one, so no read can still need the
   points when they go.
5. A writer that dies leaves its revisions staged (hidden). Once its lease expires they become
   retired and are collected one grace period later, so a live writer's work, whose lease it
   keeps renewing, is never taken; a writer that lost its lease fails its commit.
6. Dropping a collection removes its catalog rows in one transaction; a re-created collection
   gets a new generation, so nothing of the old catalog, or of a writer still writing into the
   old one, is ever visible in it.
A reader sees the old version up to the commit and the new one after it: never a mix and never
nothing. IDF for BM25 is computed over the same visible corpus, so staged chunks never shift
scores. Snapshots may be cached per process for `snapshot_ttl_s` (default 0.2 s): another
replica's commit is then visible here that much later; this replica's own writes drop its cache,
so it always reads its own writes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from retrieval.catalog import Catalog, Snapshot

T = TypeVar("T")


class SnapshotTooOldError(TimeoutError):
    """Reads kept outliving the read budget (a stalled store)."""


class Snapshots:
    """Per-process cache of collection snapshots, read from the shared catalog.

    Args:
        catalog: the shared catalog.
        ttl_s: how long a snapshot is reused (0: every read asks the catalog).
        read_budget_s: how long a read may run from the moment its snapshot was taken.
    """

    def __init__(self, catalog: Catalog, *, ttl_s: float, read_budget_s: float) -> None:
        self._catalog = catalog
        self.ttl_s = ttl_s
        self._budget = read_budget_s
        self._cache: dict[str, tuple[float, Snapshot | None]] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> tuple[float, Snapshot | None]:
        """(when the snapshot was taken on the monotonic clock, the snapshot or None)."""
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(name)
        if cached is not None and now - cached[0] <= self.ttl_s:
            return cached
        taken = time.monotonic()  # before the read: the snapshot is at least this old
        fresh = (taken, self._catalog.snapshot(name))
        if self.ttl_s > 0:
            with self._lock:
                self._cache[name] = fresh
        return fresh

    def forget(self, name: str) -> None:
        """Drop the cached snapshot (after this process changed the collection)."""
        with self._lock:
            self._cache.pop(name, None)

    def within_budget(self, name: str, body: Callable[[], T], *, attempts: int = 3) -> T:
        """Run `body`, which reads the catalog first and then the points that catalog read
        named; retried when it outlived the read budget (the points may be gone by then)."""
        return self._retrying(name, lambda: (time.monotonic(), body()), attempts)

    def read(self, name: str, body: Callable[[Snapshot | None], T], *, attempts: int = 3) -> T:
        """Run `body` on a snapshot; retried on a fresh one when it outlived the read budget.

        Raises:
            SnapshotTooOldError: every attempt outlived the budget.
        """

        def attempt() -> tuple[float, T]:
            taken, snapshot = self.get(name)
            return taken, body(snapshot)

        return self._retrying(name, attempt, attempts)

    def _retrying(self, name: str, attempt: Callable[[], tuple[float, T]], attempts: int) -> T:
        for _ in range(attempts):
            taken, result = attempt()
            if time.monotonic() - taken <= self._budget:
                return result
            self.forget(name)
        raise SnapshotTooOldError(
            f"reads of {name!r} took longer than the read budget ({self._budget} s) "
            f"{attempts} times in a row"
        )
