"""Request and response bodies of `/v1/sources` and `/v1/jobs` (OpenAI-style `object` fields).

A source's spec comes back as it was given: references to credentials (variable and file
names), never a credential.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from ragdock.contracts.source_spec import SourceSpec


class SourceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="Unique per tenant."
    )
    collection: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    spec: Annotated[SourceSpec, Field(description="A folder or a SQL query (`kind`).")]
    interval_s: float | None = Field(
        default=None, ge=10, le=366 * 86400,
        description="Sync on this interval (seconds); none: only when asked.",
    )  # fmt: skip
    sync: bool = Field(default=True, description="Queue a first sync at once.")


class SyncIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    full: bool = Field(
        default=True,
        description="Read every item (and find deletions); false: a SQL source reads only rows "
        "updated since its last sync.",
    )


class JobProgressOut(BaseModel):
    total: int | None
    seen: int
    added: int
    updated: int
    unchanged: int
    deleted: int
    failed: int
    bytes: int


class JobErrorOut(BaseModel):
    item: str
    error: str
    at: float


class JobOut(BaseModel):
    object: Literal["job"] = "job"
    id: str
    source: str
    collection: str
    kind: Literal["full", "incremental", "purge"]
    trigger: str
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    attempts: int
    cancel_requested: bool
    created_at: float
    started_at: float | None
    finished_at: float | None
    progress: JobProgressOut
    rate_per_s: float | None = Field(description="Items per second over the current attempt.")
    eta_s: float | None = Field(description="Seconds left at that rate (when the total is known).")
    error: str | None
    errors: list[JobErrorOut] | None = Field(
        default=None, description="Items skipped with why (on GET /v1/jobs/{id}; first 100)."
    )


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobOut]


class SourceOut(BaseModel):
    object: Literal["source"] = "source"
    id: str = Field(description="The source's name (its id in every route).")
    name: str
    collection: str
    kind: Literal["folder", "sql"]
    spec: SourceSpec
    interval_s: float | None
    created_at: float
    created_by: str
    last_success_at: float | None
    syncs: int
    last_job: JobOut | None
    active_job: JobOut | None


class SourceList(BaseModel):
    object: Literal["list"] = "list"
    data: list[SourceOut]
