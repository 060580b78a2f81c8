"""Routes of the adapter API. No logic here: see service.py, which also decides which adapters
a caller may see (its tenant's and shared ones) and manage (its tenant's; shared ones need the
platform scope)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request, UploadFile, status
from fastapi.concurrency import run_in_threadpool

from server.adapters_api.protocol import (
    AdapterList,
    AdapterOut,
    AdapterVersionOut,
    AliasOut,
    PromoteRequest,
    PushFromPath,
    RollbackRequest,
)
from server.adapters_api.service import AdapterService
from server.auth import Admin, Platform
from server.errors import NotFoundError


def _service(request: Request) -> AdapterService:
    service: AdapterService | None = request.app.state.adapter_service
    if service is None:
        raise NotFoundError("Adapters are not enabled on this gateway", code="adapters_disabled")
    return service


ServiceDep = Annotated[AdapterService, Depends(_service)]

router = APIRouter(prefix="/v1", tags=["adapters"])


@router.get("/adapters")
def list_adapters(admin: Admin, service: ServiceDep) -> AdapterList:
    return AdapterList(data=service.list_all(admin))


@router.post("/adapters", status_code=status.HTTP_201_CREATED)
def push_from_path(body: PushFromPath, admin: Platform, service: ServiceDep) -> AdapterVersionOut:
    # A path on the gateway's own disk: only the platform's operators may name one.
    return service.push_directory(Path(body.path), body.name, body.version, admin)


@router.post("/adapters/upload", status_code=status.HTTP_201_CREATED)
async def push_upload(
    admin: Admin,
    service: ServiceDep,
    name: Annotated[str, Form()],
    files: list[UploadFile],
    version: Annotated[str | None, Form()] = None,
) -> AdapterVersionOut:
    # The parts are spooled to disk by the multipart parser (under admission's body limit);
    # they are copied into staging from there, never read whole into memory.
    parts = [(f.filename or "", f.file) for f in files]
    return await run_in_threadpool(service.push_files, parts, name, version, admin)


@router.get("/adapters/{name}")
def show_adapter(name: str, admin: Admin, service: ServiceDep) -> AdapterOut:
    return service.summary(name, admin)


@router.get("/adapters/{name}/audit")
def audit_log(name: str, admin: Admin, service: ServiceDep) -> list[dict[str, Any]]:
    return service.audit(name, admin)


@router.get("/adapters/{name}/{version}")
def show_version(name: str, version: str, admin: Admin, service: ServiceDep) -> AdapterVersionOut:
    return service.show(name, version, admin)


@router.put("/adapters/{name}/{version}/eval-report")
def attach_eval_report(
    name: str, version: str, report: dict[str, Any], admin: Admin, service: ServiceDep
) -> AdapterVersionOut:
    return service.attach_eval_report(name, version, report, admin)


@router.post("/adapters/{name}/{version}/promote")
async def promote(
    name: str, version: str, body: PromoteRequest, admin: Admin, service: ServiceDep
) -> AliasOut:
    return await service.promote(name, version, body.alias, body.force, admin, body.reason)


@router.post("/adapters/{name}/rollback")
async def rollback(name: str, body: RollbackRequest, admin: Admin, service: ServiceDep) -> AliasOut:
    return await service.rollback(name, body.alias, admin)


@router.delete("/adapters/{name}/{version}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_version(name: str, version: str, admin: Admin, service: ServiceDep) -> None:
    await service.delete(name, version, admin)
