"""The per-collection document catalog: the source of truth for which version of a document is
live, and for the revisions that are staged (written, not yet live) or retired (superseded,
not yet deleted). SQLite gives the one-transaction commit that Qdrant lacks; see `freshness`.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from retrieval.types import DocumentInfo

_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    tenant TEXT NOT NULL, doc_id TEXT NOT NULL, version TEXT NOT NULL, rev TEXT NOT NULL,
    title TEXT NOT NULL, uri TEXT NOT NULL, updated_at TEXT NOT NULL, chunk_count INTEGER NOT NULL,
    PRIMARY KEY (tenant, doc_id));
CREATE TABLE IF NOT EXISTS pending (
    rev TEXT PRIMARY KEY, tenant TEXT NOT NULL, doc_id TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('staged', 'retired')));
"""


@dataclass(frozen=True)
class DocRecord:
    """A live document version."""

    tenant: str
    doc_id: str
    version: str
    rev: str
    title: str
    uri: str
    updated_at: str
    chunk_count: int

    def info(self) -> DocumentInfo:
        """The public view (no tenant, no internal revision)."""
        return DocumentInfo(
            self.doc_id, self.version, self.chunk_count, self.title, self.uri, self.updated_at
        )


@dataclass(frozen=True)
class PendingRev:
    """A revision whose points exist but must not be seen."""

    rev: str
    tenant: str
    doc_id: str
    state: str


class Catalog:
    """One SQLite file per collection; every method is one transaction.

    Args:
        path: the database file (created with its parent directory).
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a commit that returned survives a crash
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def _row(self, row: tuple[str, str, str, str, str, str, str, int]) -> DocRecord:
        return DocRecord(*row)

    def live(self, tenant: str, doc_id: str) -> DocRecord | None:
        """The live version of a document, if any."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM docs WHERE tenant=? AND doc_id=?", (tenant, doc_id)
            ).fetchone()
        return self._row(row) if row else None

    def page(self, tenant: str, limit: int, after: str | None) -> list[DocRecord]:
        """Live documents of a tenant ordered by doc id, starting after `after`."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM docs WHERE tenant=? AND doc_id>? ORDER BY doc_id LIMIT ?",
                (tenant, after or "", limit),
            ).fetchall()
        return [self._row(row) for row in rows]

    def stage(self, revs: Sequence[PendingRev]) -> None:
        """Record revisions about to be written (before any point of them is)."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT OR REPLACE INTO pending VALUES (?, ?, ?, 'staged')",
                [(p.rev, p.tenant, p.doc_id) for p in revs],
            )

    def commit(self, records: Sequence[DocRecord]) -> list[PendingRev]:
        """Make `records` live in one transaction; the versions they replace become retired.

        Returns:
            The retired revisions (their points still exist and must be deleted).
        """
        retired: list[PendingRev] = []
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            for record in records:
                old = self._db.execute(
                    "SELECT rev FROM docs WHERE tenant=? AND doc_id=?",
                    (record.tenant, record.doc_id),
                ).fetchone()
                if old and old[0] != record.rev:
                    retired.append(PendingRev(old[0], record.tenant, record.doc_id, "retired"))
                self._db.execute(
                    "INSERT OR REPLACE INTO docs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.tenant,
                        record.doc_id,
                        record.version,
                        record.rev,
                        record.title,
                        record.uri,
                        record.updated_at,
                        record.chunk_count,
                    ),
                )
                self._db.execute("DELETE FROM pending WHERE rev=?", (record.rev,))
            self._db.executemany(
                "INSERT OR REPLACE INTO pending VALUES (?, ?, ?, 'retired')",
                [(p.rev, p.tenant, p.doc_id) for p in retired],
            )
        return retired

    def remove(self, tenant: str, doc_id: str) -> PendingRev | None:
        """Take a document out of the catalog; its revision becomes retired."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute(
                "SELECT rev FROM docs WHERE tenant=? AND doc_id=?", (tenant, doc_id)
            ).fetchone()
            if row is None:
                return None
            self._db.execute("DELETE FROM docs WHERE tenant=? AND doc_id=?", (tenant, doc_id))
            self._db.execute(
                "INSERT OR REPLACE INTO pending VALUES (?, ?, ?, 'retired')",
                (row[0], tenant, doc_id),
            )
        return PendingRev(row[0], tenant, doc_id, "retired")

    def pending(self) -> list[PendingRev]:
        """Every staged or retired revision."""
        with self._lock:
            rows = self._db.execute("SELECT rev, tenant, doc_id, state FROM pending").fetchall()
        return [PendingRev(*row) for row in rows]

    def clear(self, revs: Sequence[str]) -> None:
        """Forget pending revisions whose points are gone."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("DELETE FROM pending WHERE rev=?", [(rev,) for rev in revs])

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
