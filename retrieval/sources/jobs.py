"""The job queue in the control plane: no broker, only rows and leases.

A job is queued, claimed by one worker under a lease, renewed while it runs, and ended as
succeeded, failed or cancelled. Claiming is one transaction (`FOR UPDATE SKIP LOCKED` on
PostgreSQL, so racing workers skip each other's rows instead of queueing on them; SQLite's
write lock serializes the claim). A worker that dies stops renewing: once its lease has passed,
any worker claims the job again and resumes it, and the progress it finds is the progress
that was committed with the work it counts. At most one job per source is queued or running
(a unique key), and at most `per_tenant` run at once for a tenant.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Connection, func, select, text, update
from sqlalchemy.exc import IntegrityError

from ragdock.controlplane import ControlPlane
from ragdock.controlplane.schema import job_errors, jobs, source_items, sources

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
MAX_ATTEMPTS = 5  # a job whose workers keep dying is failed, not retried forever
MAX_RECORDED_ERRORS = 1000  # per job: the rest are counted, not stored


@dataclass
class Progress:
    """What a job has done so far; committed with the work it counts."""

    total: int | None = None
    seen: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: int = 0
    bytes: int = 0
    cursor_seen: str | None = None  # SQL: the highest updated_at read so far (encoded)

    def add(self, other: Progress) -> None:
        for name in ("seen", "added", "updated", "unchanged", "deleted", "failed", "bytes"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @classmethod
    def parse(cls, raw: str) -> Progress:
        return cls(**json.loads(raw))

    def dump(self) -> str:
        return json.dumps(asdict(self))


@dataclass(frozen=True)
class JobRecord:
    id: str
    source_id: str
    tenant: str
    kind: str  # full | incremental | purge
    trigger: str  # manual | schedule | delete
    state: str
    owner: str | None
    lease_expires: float | None
    attempts: int
    cancel_requested: bool
    cursor_from: str | None
    progress: Progress
    error: str | None
    created_at: float
    started_at: float | None
    attempt_started_at: float | None
    finished_at: float | None
    source_name: str = ""
    collection: str = ""

    def rate_and_eta(self, now: float) -> tuple[float | None, float | None]:
        """Items per second over this attempt, and seconds left at that rate."""
        if self.state != "running" or not self.attempt_started_at:
            return None, None
        elapsed = max(now - self.attempt_started_at, 1e-6)
        rate = self.progress.seen / elapsed if self.progress.seen else None
        if rate is None or self.progress.total is None:
            return rate, None
        return rate, max(self.progress.total - self.progress.seen, 0) / rate


@dataclass(frozen=True)
class JobError:
    item_key: str
    error: str
    at: float


class JobConflictError(RuntimeError):
    """The source already has a queued or running job (its id is `job_id`)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


class LeaseLostError(RuntimeError):
    """This worker no longer holds the job (its lease passed and another took it)."""


@dataclass
class BatchRecord:
    """One batch's outcome, committed in one transaction with the job's progress."""

    progress: Progress = field(default_factory=Progress)
    items: list[dict[str, Any]] = field(default_factory=list)  # source_items rows to upsert
    removed: list[str] = field(default_factory=list)  # item keys deleted from the collection
    errors: list[tuple[str, str]] = field(default_factory=list)  # (item key, why)
    job_id: str | None = None


def _upsert_items(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """One multi-row upsert for a batch's items (a statement per row cost ~1 ms each, most of
    an unchanged sync's time; eval/perf/source_sync.py)."""
    if not rows:
        return
    from sqlalchemy.dialects import postgresql, sqlite

    # PostgreSQL refuses a statement that updates one row twice: one row per item.
    rows = list({(r["source_id"], r["item_key"]): r for r in rows}.values())

    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(source_items).values(rows)
    keys = ("source_id", "item_key")
    changes = {c: statement.excluded[c] for c in rows[0] if c not in keys}
    conn.execute(statement.on_conflict_do_update(index_elements=list(keys), set_=changes))


def _job(row: Any) -> JobRecord:
    mapping = row._mapping
    return JobRecord(
        id=row.id, source_id=row.source_id, tenant=row.tenant, kind=row.kind,
        trigger=row.trigger, state=row.state, owner=row.owner,
        lease_expires=row.lease_expires, attempts=row.attempts,
        cancel_requested=bool(row.cancel_requested), cursor_from=row.cursor_from,
        progress=Progress.parse(row.progress), error=row.error, created_at=row.created_at,
        started_at=row.started_at, attempt_started_at=row.attempt_started_at,
        finished_at=row.finished_at, source_name=mapping.get("source_name") or "",
        collection=mapping.get("collection") or "",
    )  # fmt: skip


def _with_source() -> Any:
    return select(
        jobs, sources.c.name.label("source_name"), sources.c.collection.label("collection")
    ).join(sources, sources.c.id == jobs.c.source_id, isouter=True)


class JobQueue:
    """Jobs over one control plane.

    Args:
        plane: the control plane.
        lease_s: how long a claim lasts without a renewal.
        per_tenant: most running jobs per tenant.
    """

    def __init__(self, plane: ControlPlane, *, lease_s: float = 30.0, per_tenant: int = 2) -> None:
        self.plane, self.lease_s, self.per_tenant = plane, lease_s, per_tenant

    # -- enqueue ---------------------------------------------------------------------------
    def enqueue(self, source_id: str, tenant: str, *, kind: str, trigger: str) -> JobRecord:
        """A new queued job for the source.

        Raises:
            JobConflictError: the source has a queued or running job already.
        """
        job_id = uuid.uuid4().hex
        try:
            with self.plane.write() as conn:
                self._insert(conn, job_id, source_id, tenant, kind, trigger)
        except IntegrityError:
            active = self.active_job(source_id)
            raise JobConflictError(active.id if active else "") from None
        found = self.get(job_id)
        assert found is not None
        return found

    def _insert(
        self, conn: Connection, job_id: str, source_id: str, tenant: str, kind: str, trigger: str
    ) -> None:
        active = conn.execute(
            select(jobs.c.id).where(jobs.c.source_id == source_id, jobs.c.active == 1)
        ).first()
        if active is not None:  # SQLite checks here too; the unique key is the last word
            raise IntegrityError("one active job per source", None, Exception(active.id))
        cursor = conn.execute(select(sources.c.cursor).where(sources.c.id == source_id)).scalar()
        conn.execute(jobs.insert().values(
            id=job_id, source_id=source_id, tenant=tenant, kind=kind, trigger=trigger,
            state="queued", active=1, owner=None, lease_expires=None, attempts=0,
            cancel_requested=0, cursor_from=cursor if kind == "incremental" else None,
            progress=Progress().dump(), error=None, created_at=self.plane.now(conn),
            started_at=None, attempt_started_at=None, finished_at=None,
        ))  # fmt: skip

    def schedule_due(self) -> list[str]:
        """Queue a job for every source whose interval has passed since its last job began
        (or since its creation), and a purge for every deleted source without one. Any
        replica may run this; the unique key makes a second replica's insert a no-op."""
        queued: list[str] = []
        with self.plane.read() as conn:
            now = self.plane.now(conn)
            last_job = (
                select(func.max(jobs.c.created_at)).where(jobs.c.source_id == sources.c.id)
                .scalar_subquery()
            )  # fmt: skip
            active = (
                select(func.count()).where(jobs.c.source_id == sources.c.id, jobs.c.active == 1)
                .scalar_subquery()
            )  # fmt: skip
            rows = conn.execute(
                select(sources, last_job.label("last_job"), active.label("active"))
            ).all()
        for row in rows:
            if row.active:
                continue
            if row.deleted_at is not None:
                kind, trigger = "purge", "delete"
            elif row.interval_s and now - (row.last_job or row.created_at) >= row.interval_s:
                kind = (
                    "full"
                    if row.kind != "sql" or row.syncs % row.full_every == 0
                    else ("incremental")
                )
                trigger = "schedule"
            else:
                continue
            with contextlib.suppress(JobConflictError):  # another replica queued it first
                queued.append(self.enqueue(row.id, row.tenant, kind=kind, trigger=trigger).id)
        return queued

    # -- claim and lease -------------------------------------------------------------------
    def claim(self, owner: str) -> JobRecord | None:
        """Take the oldest job that is queued, or running under a lease that has passed, and
        whose tenant is under its limit of running jobs. None when there is nothing to do."""
        with self.plane.write() as conn:
            now = self.plane.now(conn)
            candidates = (
                select(jobs.c.id, jobs.c.tenant, jobs.c.attempts, jobs.c.state)
                .where(
                    jobs.c.active == 1,
                    (jobs.c.state == "queued") | (jobs.c.lease_expires < now),
                )
                .order_by(jobs.c.created_at)
                .limit(16)
            )
            if not self.plane.is_sqlite:
                candidates = candidates.with_for_update(skip_locked=True)
            for row in conn.execute(candidates).all():
                if row.attempts >= MAX_ATTEMPTS:
                    self._end(conn, row.id, "failed", now, error=(
                        f"its workers stopped {row.attempts} times without finishing it"
                    ))  # fmt: skip
                    continue
                if (
                    not self.plane.is_sqlite
                    and not conn.execute(
                        # Two claims of one tenant's jobs on PostgreSQL lock different rows; this
                        # lock makes them count its running jobs one after the other (try: no
                        # waiting, and no deadlock between claims that meet several tenants).
                        text("SELECT pg_try_advisory_xact_lock(hashtext(:tenant))"),
                        {"tenant": f"ragdock-jobs:{row.tenant}"},
                    ).scalar_one()
                ):
                    continue
                running = conn.execute(
                    select(func.count()).where(
                        jobs.c.tenant == row.tenant, jobs.c.state == "running",
                        jobs.c.lease_expires >= now, jobs.c.id != row.id,
                    )
                ).scalar_one()  # fmt: skip
                if running >= self.per_tenant:
                    continue
                conn.execute(
                    update(jobs).where(jobs.c.id == row.id).values(
                        state="running", owner=owner, lease_expires=now + self.lease_s,
                        attempts=jobs.c.attempts + 1, attempt_started_at=now,
                        started_at=func.coalesce(jobs.c.started_at, now),
                    )
                )  # fmt: skip
                return self._get(conn, row.id)
        return None

    def renew(self, job_id: str, owner: str) -> bool:
        """Extend the lease; returns whether cancelling was asked for.

        Raises:
            LeaseLostError: the job is no longer this owner's.
        """
        with self.plane.write() as conn:
            return self._renew(conn, job_id, owner)

    def _renew(self, conn: Connection, job_id: str, owner: str) -> bool:
        now = self.plane.now(conn)
        row = conn.execute(
            select(jobs.c.owner, jobs.c.state, jobs.c.cancel_requested).where(jobs.c.id == job_id)
        ).first()
        if row is None or row.owner != owner or row.state != "running":
            raise LeaseLostError(job_id)
        conn.execute(
            update(jobs).where(jobs.c.id == job_id).values(lease_expires=now + self.lease_s)
        )
        return bool(row.cancel_requested)

    def record(self, job: JobRecord, owner: str, batch: BatchRecord) -> bool:
        """Commit one batch: its items, its errors, the job's progress and a lease renewal,
        in one transaction. Returns whether cancelling was asked for.

        Raises:
            LeaseLostError: the job is no longer this owner's; nothing was written.
        """
        with self.plane.write() as conn:
            cancel = self._renew(conn, job.id, owner)
            now = self.plane.now(conn)
            _upsert_items(conn, [{**item, "synced_at": now} for item in batch.items])
            for key in batch.removed:
                conn.execute(
                    source_items.delete().where(
                        source_items.c.source_id == job.source_id, source_items.c.item_key == key
                    )
                )  # fmt: skip
            raw = conn.execute(select(jobs.c.progress).where(jobs.c.id == job.id)).scalar_one()
            progress = Progress.parse(raw)
            progress.add(batch.progress)
            if batch.progress.total is not None:
                progress.total = batch.progress.total
            if batch.progress.cursor_seen is not None:
                progress.cursor_seen = batch.progress.cursor_seen
            conn.execute(update(jobs).where(jobs.c.id == job.id).values(progress=progress.dump()))
            stored = (
                conn.execute(select(func.count()).where(job_errors.c.job_id == job.id)).scalar_one()
                if batch.errors
                else 0
            )
            for key, why in batch.errors[: max(MAX_RECORDED_ERRORS - stored, 0)]:
                conn.execute(job_errors.insert().values(
                    job_id=job.id, item_key=key[:512], error=why[:2000], at=now
                ))  # fmt: skip
        return cancel

    # -- ending ----------------------------------------------------------------------------
    def finish(
        self,
        job: JobRecord,
        owner: str,
        state: str,
        *,
        error: str | None = None,
        source_changes: dict[str, Any] | None = None,
    ) -> None:
        """End the job (and apply `source_changes` to its source) in one transaction; a
        purge that succeeded removes the source and its items. A job that ends while its
        source is deleted leaves a purge job queued behind it.

        Raises:
            LeaseLostError: the job is no longer this owner's.
        """
        with self.plane.write() as conn:
            self._renew(conn, job.id, owner)
            now = self.plane.now(conn)
            self._end(conn, job.id, state, now, error=error)
            if source_changes:
                conn.execute(
                    update(sources).where(sources.c.id == job.source_id).values(**source_changes)
                )
            deleted = conn.execute(
                select(sources.c.deleted_at).where(sources.c.id == job.source_id)
            ).scalar()
            if job.kind == "purge" and state == "succeeded":
                conn.execute(source_items.delete().where(source_items.c.source_id == job.source_id))
                conn.execute(sources.delete().where(sources.c.id == job.source_id))
            elif deleted is not None:
                self._insert(conn, uuid.uuid4().hex, job.source_id, job.tenant, "purge", "delete")

    def _end(
        self, conn: Connection, job_id: str, state: str, now: float, *, error: str | None = None
    ) -> None:
        conn.execute(
            update(jobs).where(jobs.c.id == job_id).values(
                state=state, active=None, owner=None, lease_expires=None, finished_at=now,
                error=error,
            )
        )  # fmt: skip

    def cancel(self, job_id: str) -> JobRecord | None:
        """A queued job is cancelled at once; a running one is asked to stop after its current
        batch (so the collection stays at a consistent state). None if no such job."""
        with self.plane.write() as conn:
            row = conn.execute(select(jobs.c.state).where(jobs.c.id == job_id)).first()
            if row is None:
                return None
            if row.state == "queued":
                self._end(conn, job_id, "cancelled", self.plane.now(conn))
            elif row.state == "running":
                conn.execute(update(jobs).where(jobs.c.id == job_id).values(cancel_requested=1))
        return self.get(job_id)

    # -- reads -----------------------------------------------------------------------------
    def cancel_requested(self, job_id: str) -> bool:
        with self.plane.read() as conn:
            flag = conn.execute(select(jobs.c.cancel_requested).where(jobs.c.id == job_id)).scalar()
        return bool(flag)

    def _get(self, conn: Connection, job_id: str) -> JobRecord | None:
        row = conn.execute(_with_source().where(jobs.c.id == job_id)).first()
        return _job(row) if row is not None else None

    def get(self, job_id: str) -> JobRecord | None:
        with self.plane.read() as conn:
            return self._get(conn, job_id)

    def active_job(self, source_id: str) -> JobRecord | None:
        with self.plane.read() as conn:
            row = conn.execute(
                _with_source().where(jobs.c.source_id == source_id, jobs.c.active == 1)
            ).first()
        return _job(row) if row is not None else None

    def list_jobs(
        self,
        tenant: str | None,
        *,
        source_id: str | None = None,
        state: str | None = None,
        limit: int = 50,
        before: float | None = None,
    ) -> list[JobRecord]:
        """Jobs newest first (None tenant: every tenant's)."""
        query = _with_source().order_by(jobs.c.created_at.desc()).limit(limit)
        if tenant is not None:
            query = query.where(jobs.c.tenant == tenant)
        if source_id is not None:
            query = query.where(jobs.c.source_id == source_id)
        if state is not None:
            query = query.where(jobs.c.state == state)
        if before is not None:
            query = query.where(jobs.c.created_at < before)
        with self.plane.read() as conn:
            return [_job(row) for row in conn.execute(query)]

    def errors(self, job_id: str, *, limit: int = 100) -> list[JobError]:
        with self.plane.read() as conn:
            rows = conn.execute(
                select(job_errors).where(job_errors.c.job_id == job_id)
                .order_by(job_errors.c.id).limit(limit)
            ).all()  # fmt: skip
        return [JobError(r.item_key, r.error, r.at) for r in rows]

    def counts_by_state(self) -> dict[str, int]:
        with self.plane.read() as conn:
            rows = conn.execute(select(jobs.c.state, func.count()).group_by(jobs.c.state)).all()
        found = {state: 0 for state in STATES}
        found.update({state: int(n) for state, n in rows})
        return found

    def overdue(self) -> int:
        """Running jobs whose lease has passed: their worker died or stalled."""
        with self.plane.read() as conn:
            now = self.plane.now(conn)
            return int(conn.execute(
                select(func.count()).where(jobs.c.state == "running", jobs.c.lease_expires < now)
            ).scalar_one())  # fmt: skip
