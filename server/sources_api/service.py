"""Sources and jobs over the control plane, for the routes: the tenant rules, validation at
create time (a folder outside the roots, a query that writes, a credential in clear are refused
here, not at the first sync), and the mapping to the API's bodies.

A tenant sees only its own sources and jobs: another tenant's answer exactly as a name nobody
uses (404). A platform key sees every tenant's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from fastapi.concurrency import run_in_threadpool

from ragdock.contracts.source_spec import FolderSpec, SqlSpec
from retrieval.service import Retriever
from retrieval.sources.confine import Confinement, ConfinementError
from retrieval.sources.jobs import JobConflictError, JobQueue, JobRecord
from retrieval.sources.registry import SourceExistsError, SourceRecord, SourceRegistry
from retrieval.sources.sql import SqlReader, SqlSourceError, source_url
from server.auth import PLATFORM, Principal
from server.errors import ConflictError, InvalidRequestError, NotFoundError
from server.metrics import GatewayMetrics
from server.sources_api.protocol import (
    JobErrorOut,
    JobOut,
    JobProgressOut,
    SourceIn,
    SourceOut,
)

log = logging.getLogger(__name__)


def _scope(principal: Principal) -> str | None:
    return None if principal.can(PLATFORM) else principal.tenant


def _no_source(name: str) -> NotFoundError:
    return NotFoundError(f"Source '{name}' does not exist", param="source", code="source_not_found")


def _no_job(job_id: str) -> NotFoundError:
    return NotFoundError(f"Job '{job_id}' does not exist", param="job", code="job_not_found")


def job_out(job: JobRecord, now: float, errors: list[JobErrorOut] | None = None) -> JobOut:
    rate, eta = job.rate_and_eta(now)
    p = job.progress
    return JobOut(
        id=job.id, source=job.source_name if not job.source_name.startswith("~") else "",
        collection=job.collection, kind=job.kind,
        trigger=job.trigger, state=job.state,
        attempts=job.attempts, cancel_requested=job.cancel_requested,
        created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
        progress=JobProgressOut(
            total=p.total, seen=p.seen, added=p.added, updated=p.updated,
            unchanged=p.unchanged, deleted=p.deleted, failed=p.failed, bytes=p.bytes,
        ),
        rate_per_s=rate, eta_s=eta, error=job.error, errors=errors,
    )  # fmt: skip


class SourceService:
    """What the `/v1/sources` and `/v1/jobs` routes do.

    Args:
        retriever: collections are created through it.
        confinement: what tenants' sources may read.
        lease_s, per_tenant: the job queue's lease and per-tenant limit.
    """

    def __init__(
        self,
        retriever: Retriever,
        confinement: Confinement,
        *,
        lease_s: float,
        per_tenant: int,
    ) -> None:
        self.retriever = retriever
        self.plane = retriever.catalog.plane
        self.registry = SourceRegistry(self.plane)
        self.queue = JobQueue(self.plane, lease_s=lease_s, per_tenant=per_tenant)
        self.confinement = confinement
        # This process's worker, woken when a job is queued here (other replicas' workers
        # find it at their next poll).
        self.on_enqueue: Callable[[], None] = lambda: None

    def _now(self) -> float:
        with self.plane.read() as conn:
            return self.plane.now(conn)

    # -- sources ---------------------------------------------------------------------------
    def _check_spec(self, spec: Any, tenant: str) -> None:
        """Refuse at create time what a sync could not (or must not) read."""
        try:
            if isinstance(spec, FolderSpec):
                self.confinement.folder(spec.path, tenant)
            elif isinstance(spec, SqlSpec):
                reader = SqlReader(spec, source_url(spec, tenant, self.confinement), metadata={})
                try:
                    reader.check()
                finally:
                    reader.close()
        except (ConfinementError, SqlSourceError) as exc:
            raise InvalidRequestError(str(exc), param="spec", code="invalid_source") from None

    async def create(self, body: SourceIn, principal: Principal) -> SourceOut:
        tenant = principal.tenant
        await run_in_threadpool(self._check_spec, body.spec, tenant)
        try:
            await run_in_threadpool(
                lambda: self.retriever.create_collection(body.collection, tenant=tenant)
            )
        except ValueError as exc:
            raise InvalidRequestError(str(exc), param="collection") from None
        try:
            record = await run_in_threadpool(
                lambda: self.registry.create(
                    tenant=tenant, name=body.name, collection=body.collection, spec=body.spec,
                    interval_s=body.interval_s, created_by=principal.name,
                )
            )  # fmt: skip
        except SourceExistsError:
            raise ConflictError(
                f"Source '{body.name}' exists already", param="name", code="source_exists"
            ) from None
        if body.sync:
            await run_in_threadpool(
                lambda: self.queue.enqueue(record.id, tenant, kind="full", trigger="create")
            )
            self.on_enqueue()
        return await self._out(record)

    def _find(self, name: str, principal: Principal) -> SourceRecord:
        found = self.registry.by_name(principal.tenant, name)
        if found is None and principal.can(PLATFORM):  # a platform key may name any tenant's
            matches = [s for s in self.registry.list_sources(None) if s.name == name]
            found = matches[0] if len(matches) == 1 else None
        if found is None:
            raise _no_source(name)
        return found

    async def _out(self, record: SourceRecord) -> SourceOut:
        def read() -> tuple[JobRecord | None, JobRecord | None, float]:
            recent = self.queue.list_jobs(None, source_id=record.id, limit=2)
            active = next((j for j in recent if j.state in ("queued", "running")), None)
            done = next((j for j in recent if j.state not in ("queued", "running")), None)
            if done is None and active is not None:
                older = self.queue.list_jobs(None, source_id=record.id, limit=1,
                                             before=active.created_at)  # fmt: skip
                done = older[0] if older else None
            return active, done, self._now()

        active, done, now = await run_in_threadpool(read)
        return SourceOut(
            id=record.name, name=record.name, collection=record.collection,
            kind=record.kind,
            spec=record.spec, interval_s=record.interval_s, created_at=record.created_at,
            created_by=record.created_by, last_success_at=record.last_success_at,
            syncs=record.syncs, last_job=job_out(done, now) if done else None,
            active_job=job_out(active, now) if active else None,
        )  # fmt: skip

    async def list_sources(self, principal: Principal) -> list[SourceOut]:
        records = await run_in_threadpool(self.registry.list_sources, _scope(principal))
        return [await self._out(r) for r in records]

    async def show(self, name: str, principal: Principal) -> SourceOut:
        record = await run_in_threadpool(self._find, name, principal)
        return await self._out(record)

    async def delete(self, name: str, principal: Principal) -> None:
        record = await run_in_threadpool(self._find, name, principal)
        await run_in_threadpool(self.registry.mark_deleted, record.id)
        self.on_enqueue()  # the purge is queued by the worker's next turn

    async def sync(self, name: str, full: bool, principal: Principal) -> JobOut:
        record = await run_in_threadpool(self._find, name, principal)
        kind = "full" if full or record.kind != "sql" else "incremental"
        try:
            job = await run_in_threadpool(
                lambda: self.queue.enqueue(record.id, record.tenant, kind=kind, trigger="manual")
            )
        except JobConflictError as exc:
            raise ConflictError(
                f"Source '{name}' has a sync queued or running already: job {exc.job_id}",
                param="source", code="job_already_active",
            ) from None  # fmt: skip
        self.on_enqueue()
        return job_out(job, await run_in_threadpool(self._now))

    # -- jobs ------------------------------------------------------------------------------
    def _job(self, job_id: str, principal: Principal) -> JobRecord:
        job = self.queue.get(job_id)
        if job is None or (not principal.can(PLATFORM) and job.tenant != principal.tenant):
            raise _no_job(job_id)
        return job

    async def list_jobs(
        self, principal: Principal, *, source: str | None, state: str | None, limit: int
    ) -> list[JobOut]:
        def read() -> tuple[list[JobRecord], float]:
            source_id = self._find(source, principal).id if source else None
            found = self.queue.list_jobs(
                _scope(principal), source_id=source_id, state=state, limit=limit
            )
            return found, self._now()

        found, now = await run_in_threadpool(read)
        return [job_out(j, now) for j in found]

    async def show_job(self, job_id: str, principal: Principal) -> JobOut:
        def read() -> JobOut:
            job = self._job(job_id, principal)
            errors = [JobErrorOut(item=e.item_key, error=e.error, at=e.at)
                      for e in self.queue.errors(job.id)]  # fmt: skip
            return job_out(job, self._now(), errors)

        return await run_in_threadpool(read)

    async def cancel(self, job_id: str, principal: Principal) -> JobOut:
        def act() -> JobOut:
            self._job(job_id, principal)
            job = self.queue.cancel(job_id)
            if job is None:
                raise _no_job(job_id)
            return job_out(job, self._now())

        return await run_in_threadpool(act)


class SourceMetrics:
    """Refreshes the sources' gauges from the control plane (every replica alike)."""

    def __init__(self, service: SourceService, metrics: GatewayMetrics) -> None:
        self.service, self.metrics = service, metrics

    def refresh(self) -> None:
        queue, registry, m = self.service.queue, self.service.registry, self.metrics
        for state, count in queue.counts_by_state().items():
            m.source_jobs.labels(state).set(count)
        m.source_jobs_overdue.set(queue.overdue())
        now = self.service._now()
        m.source_sync_lag.clear()
        m.source_interval.clear()
        for source in registry.list_sources(None):
            since = source.last_success_at or source.created_at
            m.source_sync_lag.labels(source.tenant, source.name).set(max(now - since, 0.0))
            if source.interval_s:
                m.source_interval.labels(source.tenant, source.name).set(source.interval_s)

    async def run_forever(self, every_s: float = 10.0) -> None:
        while True:
            try:
                await run_in_threadpool(self.refresh)
            except Exception:  # a database hiccup: the next pass retries
                log.exception("refreshing the sources' metrics failed; retrying later")
            await asyncio.sleep(every_s)
