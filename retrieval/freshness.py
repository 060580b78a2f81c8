"""Atomic document replacement on a store without transactions.

Qdrant applies each update on its own; replacing a document's chunks is several updates
(write new, delete old), and a reader between them would see both versions or neither. So
visibility is decided outside the points:

1. Every chunk carries `rev`, a revision id unique to (tenant, doc id, version).
2. The catalog (SQLite, one transaction per step) records which revision of each document is
   live, and which revisions are pending: `staged` (being written) or `retired` (superseded).
3. Every read excludes the pending revisions (`must_not rev in hidden`), taking the hidden set
   from a `ReadGate` snapshot; the set is small: only documents in flight.
4. Ingest: stage new revs in the catalog and publish them hidden -> wait until every reader
   that started before that publication has finished (its snapshot does not hide the new
   revs) -> write the points -> commit (one catalog transaction: new revs live, old revs
   retired) and publish the new hidden set -> wait again for the older readers -> delete the
   old points -> clear them from the catalog.
   A reader sees the old version up to the commit and the new one after it: never a mix (the
   hidden set changes in one step, and no point appears under a snapshot that does not hide
   it) and never nothing (old points are deleted only after the last reader that could still
   want them is gone).
5. Crash recovery, when a collection is opened: points of every pending revision are deleted.
   A crash before the commit leaves the old version live (the new one was only staged); a
   crash after it leaves the new one live and the old one's points are collected.
IDF for BM25 is computed over the same visible corpus, so staged chunks never shift scores.
The catalog is per process (the embedded engine is owned by one process anyway); several
gateway replicas over one Qdrant server would need the catalog shared, e.g. in the database.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager


class ReadGate:
    """Publishes the hidden-revision set and tracks which snapshot each reader holds.

    It is a small read-copy-update: readers never block on writers; a writer that retires
    data waits for the readers that might still reference it (`wait_for_readers`).
    """

    def __init__(self, hidden: frozenset[str] = frozenset()) -> None:
        self._cond = threading.Condition()
        self._hidden = hidden
        self._epoch = 0
        self._active: Counter[int] = Counter()

    @property
    def hidden(self) -> frozenset[str]:
        """The current hidden set."""
        with self._cond:
            return self._hidden

    @contextmanager
    def reading(self) -> Iterator[frozenset[str]]:
        """Hold a snapshot of the hidden set for the duration of one read."""
        with self._cond:
            epoch, hidden = self._epoch, self._hidden
            self._active[epoch] += 1
        try:
            yield hidden
        finally:
            with self._cond:
                self._active[epoch] -= 1
                if not self._active[epoch]:
                    del self._active[epoch]
                self._cond.notify_all()

    def publish(self, hidden: frozenset[str]) -> int:
        """Replace the hidden set; returns the new epoch (readers after it see `hidden`)."""
        with self._cond:
            self._hidden = hidden
            self._epoch += 1
            return self._epoch

    def wait_for_readers(self, epoch: int, timeout: float | None = None) -> bool:
        """Block until no reader holds a snapshot older than `epoch`.

        Args:
            epoch: the epoch returned by `publish`.
            timeout: seconds to wait at most (None: forever).

        Returns:
            True when the older readers are gone, False on timeout.
        """
        with self._cond:
            return self._cond.wait_for(
                lambda: all(e >= epoch for e in self._active), timeout=timeout
            )
