"""The document catalog in the control plane: which version of each document is live, and which
revisions are staged (a writer is writing them under a lease) or retired (superseded, deleted
after a grace period). Every method is one transaction; see `freshness` for the protocol.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ragdock.controlplane import ControlPlane
from ragdock.controlplane.schema import collection_members, collections, documents, revisions
from retrieval.types import DocumentInfo


class CollectionGoneError(KeyError):
    """The collection was dropped (or dropped and re-created) under an operation."""


class LeaseLostError(RuntimeError):
    """A writer's staged revision was taken from it (its lease expired and was collected)."""


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
    text_bytes: int = 0  # its text's UTF-8 size: what the stored-bytes quota counts

    def info(self) -> DocumentInfo:
        """The public view (no tenant, no internal revision)."""
        return DocumentInfo(
            self.doc_id, self.version, self.chunk_count, self.title, self.uri, self.updated_at
        )


@dataclass(frozen=True)
class TenantUsage:
    """What a tenant holds, as the storage quotas count it."""

    collections: int
    documents: int
    text_bytes: int


@dataclass(frozen=True)
class PendingRev:
    """A revision whose points may exist but must not be seen."""

    rev: str
    tenant: str
    doc_id: str
    state: str


@dataclass(frozen=True)
class Snapshot:
    """What one read may see: the collection's generation, the staging watermark (points staged
    later carry a higher `seq`) and the revisions to exclude."""

    generation: str
    watermark: int
    hidden: frozenset[str]


class Catalog:
    """The catalog tables of one control plane, for every collection.

    Args:
        plane: the control-plane store.
        lease_s: how long a staged revision stays its writer's without a renewal.
    """

    def __init__(self, plane: ControlPlane, *, lease_s: float = 60.0) -> None:
        self.plane = plane
        self.lease_s = lease_s

    # -- collections -----------------------------------------------------------------------
    def generation(self, name: str) -> str | None:
        """The collection's current generation (None when the catalog has no such collection)."""
        with self.plane.read() as conn:
            value = conn.execute(
                select(collections.c.generation).where(collections.c.name == name)
            ).scalar_one_or_none()
        return str(value) if value is not None else None

    def ensure(
        self, name: str, *, legacy: Path | None = None, created_by: str | None = None
    ) -> str:
        """The collection's generation, registering it with a new one when absent.

        Args:
            name: the collection.
            legacy: a per-collection SQLite catalog from before the control plane; when it
                exists and the collection is new here, its documents are imported in the same
                transaction and the file is renamed `*.imported` (kept, never deleted).
            created_by: the tenant that creates it (recorded when the row is new).
        """
        known = self.generation(name)
        if known is not None:
            return known  # the usual case: a read, no write lock
        imported = False
        with self.plane.write() as conn:
            current = conn.execute(
                select(collections.c.generation).where(collections.c.name == name)
            ).scalar_one_or_none()
            if current is not None:
                return str(current)
            generation = str(uuid.uuid4())
            now = self.plane.now(conn)
            _insert_ignore(conn, collections, {
                "name": name, "generation": generation, "seq": 0, "created_at": now,
                "created_by": created_by,
            }, ["name"])  # fmt: skip
            current = conn.execute(
                select(collections.c.generation).where(collections.c.name == name)
            ).scalar_one()
            if current == generation and legacy is not None and legacy.is_file():
                _import_legacy(conn, legacy, generation, now)
                imported = True
        if imported and legacy is not None:
            legacy.rename(legacy.with_name(legacy.name + ".imported"))
        return str(current)

    def drop(self, name: str) -> str | None:
        """Forget a collection with its whole catalog; returns the generation it had."""
        with self.plane.write() as conn:
            generation = _lock_collection(conn, name)
            if generation is None:
                return None
            _drop_rows(conn, name, generation)
        return generation

    def names(self, tenant: str | None = None) -> list[str]:
        """Every collection the catalog knows; with `tenant`, those it may see: it created
        them (first, or again) or has documents in them (a tenant never learns the names of
        another's collections)."""
        query = select(collections.c.name)
        if tenant is not None:
            query = query.where(_seen_by(tenant))
        with self.plane.read() as conn:
            return sorted(conn.execute(query).scalars())

    def visible(self, name: str, tenant: str) -> bool:
        """Whether `tenant` may see collection `name` (as `names(tenant)` would list it)."""
        query = select(collections.c.name).where(collections.c.name == name, _seen_by(tenant))
        with self.plane.read() as conn:
            return conn.execute(query).first() is not None

    def join(self, name: str, tenant: str) -> None:
        """Let `tenant` see the collection (it created a name another tenant had taken)."""
        with self.plane.write() as conn:
            generation = _lock_collection(conn, name)
            if generation is None:
                raise CollectionGoneError(f"collection {name!r} was dropped")
            _insert_ignore(conn, collection_members, {
                "generation": generation, "tenant": tenant,
            }, ["generation", "tenant"])  # fmt: skip

    def drop_if_sole(self, name: str, tenant: str) -> str | None:
        """Drop the collection (as `drop`) when `tenant` created it and no other tenant uses
        it: no other member, no other tenant's documents or revisions (a write in progress).
        Checked and dropped in one transaction, so no other tenant's ingest slips in between.

        Returns:
            The generation it had, or None when it is not `tenant`'s alone (nothing changed).
        """
        with self.plane.write() as conn:
            generation = _lock_collection(conn, name)
            if generation is None:
                return None
            creator = conn.execute(
                select(collections.c.created_by).where(collections.c.name == name)
            ).scalar_one()
            others = [
                select(collection_members.c.tenant).where(
                    collection_members.c.generation == generation,
                    collection_members.c.tenant != tenant,
                ),
                select(documents.c.tenant).where(
                    documents.c.generation == generation, documents.c.tenant != tenant
                ),
                select(revisions.c.tenant).where(
                    revisions.c.generation == generation, revisions.c.tenant != tenant
                ),
            ]
            if creator != tenant or any(conn.execute(q.limit(1)).first() for q in others):
                return None
            _drop_rows(conn, name, generation)
        return generation

    def usage(self, tenant: str) -> TenantUsage:
        """What `tenant` holds: the collections it created, its live documents and their
        text bytes (in every collection)."""
        with self.plane.read() as conn:
            created = conn.execute(
                select(func.count())
                .select_from(collections)
                .where(collections.c.created_by == tenant)
            ).scalar_one()
            count, size = conn.execute(
                select(func.count(), func.coalesce(func.sum(documents.c.text_bytes), 0)).where(
                    documents.c.tenant == tenant
                )
            ).one()
        return TenantUsage(int(created), int(count), int(size))

    def live_sizes(self, generation: str, tenant: str, doc_ids: Sequence[str]) -> dict[str, int]:
        """The text bytes of those of `doc_ids` that are live (the rest are new)."""
        if not doc_ids:
            return {}
        with self.plane.read() as conn:
            rows = conn.execute(
                select(documents.c.doc_id, documents.c.text_bytes).where(
                    documents.c.generation == generation,
                    documents.c.tenant == tenant,
                    documents.c.doc_id.in_(list(doc_ids)),
                )
            ).all()
        return {str(doc_id): int(size) for doc_id, size in rows}

    # -- reads -----------------------------------------------------------------------------
    def snapshot(self, name: str) -> Snapshot | None:
        """Generation, watermark and hidden revisions, read in ONE statement (one consistent
        view on both backends). None when the collection is not in the catalog."""
        query = (
            select(collections.c.generation, collections.c.seq, revisions.c.rev)
            .select_from(
                collections.outerjoin(revisions, revisions.c.generation == collections.c.generation)
            )
            .where(collections.c.name == name)
        )
        with self.plane.read() as conn:
            rows = conn.execute(query).all()
        if not rows:
            return None
        hidden = frozenset(str(row[2]) for row in rows if row[2] is not None)
        return Snapshot(str(rows[0][0]), int(rows[0][1]), hidden)

    def live(self, generation: str, tenant: str, doc_id: str) -> DocRecord | None:
        """The live version of a document, if any."""
        with self.plane.read() as conn:
            row = conn.execute(
                select(*_DOC_COLUMNS).where(
                    documents.c.generation == generation,
                    documents.c.tenant == tenant,
                    documents.c.doc_id == doc_id,
                )
            ).first()
        return DocRecord(*row) if row else None

    def page(self, generation: str, tenant: str, limit: int, after: str | None) -> list[DocRecord]:
        """Live documents of a tenant ordered by doc id, starting after `after`."""
        with self.plane.read() as conn:
            rows = conn.execute(
                select(*_DOC_COLUMNS)
                .where(
                    documents.c.generation == generation,
                    documents.c.tenant == tenant,
                    documents.c.doc_id > (after or ""),
                )
                .order_by(documents.c.doc_id)
                .limit(limit)
            ).all()
        return [DocRecord(*row) for row in rows]

    def pending(self, generation: str) -> list[PendingRev]:
        """Every staged or retired revision of a generation."""
        with self.plane.read() as conn:
            rows = conn.execute(
                select(revisions.c.rev, revisions.c.tenant, revisions.c.doc_id, revisions.c.state)
                .where(revisions.c.generation == generation)
            ).all()  # fmt: skip
        return [PendingRev(*row) for row in rows]

    # -- the writer's steps ----------------------------------------------------------------
    def stage(self, name: str, generation: str, tenant: str, doc_ids: Sequence[str]) -> tuple[
        dict[str, str], int
    ]:  # fmt: skip
        """Record new revisions, hidden, under this process's lease, before any point exists.

        Returns:
            The new revision of each doc id and the `seq` their points must carry.

        Raises:
            CollectionGoneError: the collection was dropped or re-created.
        """
        revs = {doc_id: str(uuid.uuid4()) for doc_id in doc_ids}
        with self.plane.write() as conn:
            seq = conn.execute(
                update(collections)
                .where(collections.c.name == name, collections.c.generation == generation)
                .values(seq=collections.c.seq + 1)
                .returning(collections.c.seq)
            ).scalar_one_or_none()
            if seq is None:
                raise CollectionGoneError(f"collection {name!r} was dropped")
            expires = self.plane.now(conn) + self.lease_s
            if revs:
                conn.execute(revisions.insert(), [
                    {"generation": generation, "rev": rev, "tenant": tenant, "doc_id": doc_id,
                     "seq": seq, "state": "staged", "owner": self.plane.owner,
                     "lease_expires": expires, "retired_at": None}
                    for doc_id, rev in revs.items()
                ])  # fmt: skip
        return revs, int(seq)

    def renew(self, generation: str, revs: Sequence[str]) -> None:
        """Extend this writer's lease on its staged revisions.

        Raises:
            LeaseLostError: one of them is no longer this writer's.
        """
        if not revs:
            return
        with self.plane.write() as conn:
            changed = conn.execute(
                update(revisions)
                .where(*_owned(generation, revs, self.plane.owner))
                .values(lease_expires=self.plane.now(conn) + self.lease_s)
            ).rowcount
            if changed != len(set(revs)):
                if not _generation_exists(conn, generation):
                    raise CollectionGoneError("the collection was dropped")
                raise LeaseLostError("a staged revision's lease expired and was collected")

    def commit(self, name: str, generation: str, records: Sequence[DocRecord]) -> list[PendingRev]:
        """Make `records` live in one transaction; the versions they replace become retired.

        Returns:
            The retired revisions (their points are deleted after the grace period).

        Raises:
            CollectionGoneError: the collection was dropped or re-created.
            LeaseLostError: a staged revision is no longer this writer's.
        """
        retired: list[PendingRev] = []
        with self.plane.write() as conn:
            if _lock_collection(conn, name) != generation:
                raise CollectionGoneError(f"collection {name!r} was dropped")
            now = self.plane.now(conn)
            taken = conn.execute(
                delete(revisions).where(
                    *_owned(generation, [r.rev for r in records], self.plane.owner)
                )
            ).rowcount
            if taken != len(records):
                raise LeaseLostError("a staged revision's lease expired and was collected")
            for record in records:
                old = conn.execute(
                    select(documents.c.rev).where(
                        documents.c.generation == generation,
                        documents.c.tenant == record.tenant,
                        documents.c.doc_id == record.doc_id,
                    )
                ).scalar_one_or_none()
                if old is not None and old != record.rev:
                    retired.append(PendingRev(str(old), record.tenant, record.doc_id, "retired"))
                _upsert(conn, documents, {"generation": generation, **record.__dict__},
                        ["generation", "tenant", "doc_id"])  # fmt: skip
            _retire(conn, generation, retired, now, self.plane.owner)
        return retired

    def abandon(self, generation: str, revs: Sequence[str]) -> None:
        """A writer gives up its staged revisions: retired now, collected after the grace."""
        if not revs:
            return
        with self.plane.write() as conn:
            conn.execute(
                update(revisions)
                .where(*_owned(generation, revs, self.plane.owner))
                .values(state="retired", retired_at=self.plane.now(conn))
            )

    def remove(self, name: str, generation: str, tenant: str, doc_id: str) -> PendingRev | None:
        """Take a document out of the catalog; its revision becomes retired."""
        with self.plane.write() as conn:
            if _lock_collection(conn, name) != generation:
                raise CollectionGoneError(f"collection {name!r} was dropped")
            where = (
                documents.c.generation == generation,
                documents.c.tenant == tenant,
                documents.c.doc_id == doc_id,
            )
            rev = conn.execute(select(documents.c.rev).where(*where)).scalar_one_or_none()
            if rev is None:
                return None
            conn.execute(delete(documents).where(*where))
            gone = PendingRev(str(rev), tenant, doc_id, "retired")
            _retire(conn, generation, [gone], self.plane.now(conn), self.plane.owner)
        return gone

    def remove_tenant(self, name: str, generation: str, tenant: str) -> list[PendingRev]:
        """Take every document of a tenant out of the catalog, and the tenant out of the
        collection's creators and members (it sees the name no more), in one transaction."""
        with self.plane.write() as conn:
            if _lock_collection(conn, name) != generation:
                raise CollectionGoneError(f"collection {name!r} was dropped")
            where = (documents.c.generation == generation, documents.c.tenant == tenant)
            rows = conn.execute(select(documents.c.rev, documents.c.doc_id).where(*where)).all()
            gone = [PendingRev(str(rev), tenant, str(doc_id), "retired") for rev, doc_id in rows]
            conn.execute(delete(documents).where(*where))
            _retire(conn, generation, gone, self.plane.now(conn), self.plane.owner)
            conn.execute(delete(collection_members).where(
                collection_members.c.generation == generation,
                collection_members.c.tenant == tenant,
            ))  # fmt: skip
            conn.execute(
                update(collections)
                .where(collections.c.name == name, collections.c.created_by == tenant)
                .values(created_by=None)
            )
        return gone

    # -- collection of garbage ------------------------------------------------------------
    def due(self, generation: str, grace_s: float) -> list[PendingRev]:
        """Revisions whose points may be deleted now: retired at least `grace_s` ago.

        In the same transaction, staged revisions whose lease has expired (their writer died)
        become retired, so they are collected one grace period later, never before.
        """
        with self.plane.read() as conn:  # every ingest asks: usually nothing is due
            now = self.plane.now(conn)
            pending = conn.execute(
                select(revisions.c.rev)
                .where(
                    revisions.c.generation == generation,
                    ((revisions.c.state == "staged") & (revisions.c.lease_expires < now))
                    | (
                        (revisions.c.state == "retired") & (revisions.c.retired_at <= now - grace_s)
                    ),
                )
                .limit(1)
            ).first()
        if pending is None:
            return []
        with self.plane.write() as conn:
            now = self.plane.now(conn)
            conn.execute(
                update(revisions)
                .where(
                    revisions.c.generation == generation,
                    revisions.c.state == "staged",
                    revisions.c.lease_expires < now,
                )
                .values(state="retired", retired_at=now)
            )
            rows = conn.execute(
                select(
                    revisions.c.rev, revisions.c.tenant, revisions.c.doc_id, revisions.c.state
                ).where(
                    revisions.c.generation == generation,
                    revisions.c.state == "retired",
                    revisions.c.retired_at <= now - grace_s,
                )
            ).all()
        return [PendingRev(*row) for row in rows]

    def clear(self, generation: str, revs: Sequence[str]) -> None:
        """Forget retired revisions whose points are gone."""
        if not revs:
            return
        with self.plane.write() as conn:
            conn.execute(
                delete(revisions).where(
                    revisions.c.generation == generation,
                    revisions.c.rev.in_(list(revs)),
                    revisions.c.state == "retired",
                )
            )


_DOC_COLUMNS = (
    documents.c.tenant,
    documents.c.doc_id,
    documents.c.version,
    documents.c.rev,
    documents.c.title,
    documents.c.uri,
    documents.c.updated_at,
    documents.c.chunk_count,
    documents.c.text_bytes,
)


def _seen_by(tenant: str) -> Any:
    """The condition on `collections` rows that `tenant` may see."""
    has_documents = (
        select(documents.c.doc_id)
        .where(documents.c.generation == collections.c.generation, documents.c.tenant == tenant)
        .exists()
    )
    member = (
        select(collection_members.c.tenant)
        .where(
            collection_members.c.generation == collections.c.generation,
            collection_members.c.tenant == tenant,
        )
        .exists()
    )
    return (collections.c.created_by == tenant) | member | has_documents


def _drop_rows(conn: Connection, name: str, generation: str) -> None:
    conn.execute(delete(documents).where(documents.c.generation == generation))
    conn.execute(delete(revisions).where(revisions.c.generation == generation))
    conn.execute(delete(collection_members).where(collection_members.c.generation == generation))
    conn.execute(delete(collections).where(collections.c.name == name))


def _owned(generation: str, revs: Sequence[str], owner: str) -> tuple[Any, ...]:
    return (
        revisions.c.generation == generation,
        revisions.c.rev.in_(list(revs)),
        revisions.c.owner == owner,
        revisions.c.state == "staged",
    )


def _generation_exists(conn: Connection, generation: str) -> bool:
    found = conn.execute(
        select(collections.c.name).where(collections.c.generation == generation)
    ).first()
    return found is not None


def _lock_collection(conn: Connection, name: str) -> str | None:
    """The collection's generation, its row locked until the transaction ends (PostgreSQL; a
    SQLite write transaction holds the whole database already). Commits in one collection
    serialize here, so two of them never both retire, or both miss, the same old revision."""
    value = conn.execute(
        select(collections.c.generation).where(collections.c.name == name).with_for_update()
    ).scalar_one_or_none()
    return str(value) if value is not None else None


def _retire(
    conn: Connection, generation: str, revs: Sequence[PendingRev], now: float, owner: str
) -> None:
    for rev in revs:
        _upsert(conn, revisions, {
            "generation": generation, "rev": rev.rev, "tenant": rev.tenant,
            "doc_id": rev.doc_id, "seq": 0, "state": "retired", "owner": owner,
            "lease_expires": 0.0, "retired_at": now,
        }, ["generation", "rev"])  # fmt: skip


def _dialect_insert(conn: Connection, table: Any) -> Any:
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)


def _upsert(conn: Connection, table: Any, values: dict[str, Any], keys: list[str]) -> None:
    statement = _dialect_insert(conn, table).values(**values)
    changes = {k: v for k, v in values.items() if k not in keys}
    conn.execute(statement.on_conflict_do_update(index_elements=keys, set_=changes))


def _insert_ignore(conn: Connection, table: Any, values: dict[str, Any], keys: list[str]) -> None:
    statement = _dialect_insert(conn, table).values(**values)
    conn.execute(statement.on_conflict_do_nothing(index_elements=keys))


def _import_legacy(conn: Connection, path: Path, generation: str, now: float) -> None:
    """Copy a pre-control-plane catalog file into `generation`. Its pending revisions become
    retired: that catalog's own recovery deleted them on open, and so will the grace."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        docs = db.execute(  # no text_bytes there: counted as 0 until written again
            "SELECT tenant, doc_id, version, rev, title, uri, updated_at, chunk_count FROM docs"
        ).fetchall()
        pending = db.execute("SELECT rev, tenant, doc_id FROM pending").fetchall()
    for row in docs:
        record = DocRecord(*row)
        conn.execute(documents.insert().values(generation=generation, **record.__dict__))
    _retire(
        conn, generation, [PendingRev(r, t, d, "retired") for r, t, d in pending], now, "import"
    )


# For the other control-plane writers (sources, jobs): the same dialect-aware upsert.
upsert = _upsert
