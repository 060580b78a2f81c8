"""Sources in the control plane: create, read, list, delete (each one transaction)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from ragdock.contracts.source_spec import SourceSpec
from ragdock.controlplane import ControlPlane
from ragdock.controlplane.schema import jobs, sources

_SPEC: TypeAdapter[Any] = TypeAdapter(SourceSpec)


class SourceExistsError(ValueError):
    """The tenant already has a source of that name."""


@dataclass(frozen=True)
class SourceRecord:
    id: str
    tenant: str
    name: str
    collection: str
    spec: Any  # FolderSpec | SqlSpec
    interval_s: float | None
    cursor: object
    generation: str | None
    syncs: int
    created_at: float
    created_by: str
    last_success_at: float | None
    deleted_at: float | None

    @property
    def kind(self) -> str:
        return str(self.spec.kind)

    @property
    def full_every(self) -> int:
        return int(getattr(self.spec, "full_every", 1))


def encode_cursor(value: object) -> str | None:
    """A watermark as JSON that keeps its type (a timestamp is compared as a timestamp)."""
    if value is None:
        return None
    from datetime import datetime

    if isinstance(value, datetime):
        return json.dumps({"datetime": value.isoformat()})
    return json.dumps({"value": value}, default=str)


def decode_cursor(raw: str | None) -> object:
    if not raw:
        return None
    from datetime import datetime

    data = json.loads(raw)
    return datetime.fromisoformat(data["datetime"]) if "datetime" in data else data["value"]


def _record(row: Any) -> SourceRecord:
    return SourceRecord(
        id=row.id, tenant=row.tenant, name=row.name, collection=row.collection,
        spec=_SPEC.validate_json(row.spec), interval_s=row.interval_s,
        cursor=decode_cursor(row.cursor), generation=row.generation, syncs=row.syncs,
        created_at=row.created_at, created_by=row.created_by,
        last_success_at=row.last_success_at, deleted_at=row.deleted_at,
    )  # fmt: skip


class SourceRegistry:
    """The sources of every tenant. Names are unique per tenant; a tenant sees only its own."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    def create(
        self,
        *,
        tenant: str,
        name: str,
        collection: str,
        spec: Any,
        interval_s: float | None,
        created_by: str,
    ) -> SourceRecord:
        """Raises SourceExistsError for a name the tenant already uses."""
        source_id = uuid.uuid4().hex
        try:
            with self.plane.write() as conn:
                live = conn.execute(
                    select(sources.c.id).where(sources.c.tenant == tenant, sources.c.name == name)
                ).first()
                if live is not None:
                    raise SourceExistsError(name)
                conn.execute(sources.insert().values(
                    id=source_id, tenant=tenant, name=name, collection=collection,
                    kind=spec.kind, spec=spec.model_dump_json(), interval_s=interval_s,
                    full_every=int(getattr(spec, "full_every", 1)), cursor=None,
                    generation=None, syncs=0, created_at=self.plane.now(conn),
                    created_by=created_by, last_success_at=None, deleted_at=None,
                ))  # fmt: skip
        except IntegrityError:  # a racing create of the same name (PostgreSQL)
            raise SourceExistsError(name) from None
        found = self.get(source_id)
        assert found is not None
        return found

    def get(self, source_id: str) -> SourceRecord | None:
        with self.plane.read() as conn:
            row = conn.execute(select(sources).where(sources.c.id == source_id)).first()
        return _record(row) if row is not None else None

    def by_name(self, tenant: str, name: str) -> SourceRecord | None:
        """The tenant's live (not deleted) source of that name."""
        with self.plane.read() as conn:
            row = conn.execute(
                select(sources).where(
                    sources.c.tenant == tenant, sources.c.name == name,
                    sources.c.deleted_at.is_(None),
                )
            ).first()  # fmt: skip
        return _record(row) if row is not None else None

    def list_sources(
        self, tenant: str | None, *, include_deleted: bool = False
    ) -> list[SourceRecord]:
        """The tenant's sources by name (None: every tenant's)."""
        query = select(sources).order_by(sources.c.tenant, sources.c.name)
        if tenant is not None:
            query = query.where(sources.c.tenant == tenant)
        if not include_deleted:
            query = query.where(sources.c.deleted_at.is_(None))
        with self.plane.read() as conn:
            return [_record(row) for row in conn.execute(query)]

    def mark_deleted(self, source_id: str) -> None:
        """The source is gone for its tenant at once; its name is free again once a purge job
        has removed its documents. A queued job becomes the purge; a running one is asked to
        stop (the worker enqueues the purge when it ends)."""
        with self.plane.write() as conn:
            now = self.plane.now(conn)
            conn.execute(
                update(sources).where(sources.c.id == source_id).values(
                    deleted_at=now, name=f"~{source_id[:16]}"
                )
            )  # fmt: skip
            conn.execute(
                update(jobs).where(jobs.c.source_id == source_id, jobs.c.state == "queued")
                .values(kind="purge")
            )  # fmt: skip
            conn.execute(
                update(jobs).where(jobs.c.source_id == source_id, jobs.c.state == "running")
                .values(cancel_requested=1)
            )  # fmt: skip
