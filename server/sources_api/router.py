"""Routes of `/v1/sources` and `/v1/jobs`. No logic here: see `service`.

Managing sources and reading jobs needs the `ingest` scope; everything is the caller's
tenant's (a platform key sees every tenant's)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Query, Request, status

from server.auth import Ingest
from server.errors import NotFoundError
from server.sources_api.protocol import JobList, JobOut, SourceIn, SourceList, SourceOut, SyncIn
from server.sources_api.service import SourceService


def _sources(request: Request) -> SourceService:
    service: SourceService | None = getattr(request.app.state, "source_service", None)
    if service is None:
        raise NotFoundError("Retrieval is not enabled on this gateway", code="retrieval_disabled")
    return service


Sources = Annotated[SourceService, Depends(_sources)]
router = APIRouter(prefix="/v1", tags=["sources"])


@router.post("/sources", status_code=status.HTTP_201_CREATED)
async def create_source(body: SourceIn, who: Ingest, sources: Sources) -> SourceOut:
    return await sources.create(body, who)


@router.get("/sources")
async def list_sources(who: Ingest, sources: Sources) -> SourceList:
    return SourceList(data=await sources.list_sources(who))


@router.get("/sources/{name}")
async def get_source(name: str, who: Ingest, sources: Sources) -> SourceOut:
    return await sources.show(name, who)


@router.delete("/sources/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_source(name: str, who: Ingest, sources: Sources) -> None:
    await sources.delete(name, who)


@router.post("/sources/{name}/sync", status_code=status.HTTP_202_ACCEPTED)
async def sync_source(
    name: str, who: Ingest, sources: Sources, body: Annotated[SyncIn | None, Body()] = None
) -> JobOut:
    return await sources.sync(name, (body or SyncIn()).full, who)


@router.get("/jobs")
async def list_jobs(
    who: Ingest,
    sources: Sources,
    source: str | None = None,
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JobList:
    return JobList(data=await sources.list_jobs(who, source=source, state=state, limit=limit))


@router.get("/jobs/{job_id}")
async def get_job(job_id: str, who: Ingest, sources: Sources) -> JobOut:
    return await sources.show_job(job_id, who)


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(job_id: str, who: Ingest, sources: Sources) -> JobOut:
    return await sources.cancel(job_id, who)
