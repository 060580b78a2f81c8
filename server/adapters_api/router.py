"""Routes of the adapter API (admin scope). No logic here: see service.py."""

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
from server.auth import Principal, current_principal, require_scope
from server.errors import NotFoundError


def _admin(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
    require_scope(principal, "admin")
    return principal


def _service(request: Request) -> AdapterService:
    service: AdapterService | None = request.app.state.adapter_service
    if service is None:
        raise NotFoundError("Adapters are not enabled on this gateway", code="adapters_disabled")
    return service


Admin = Annotated[Principal, Depends(_admin)]
ServiceDep = Annotated[AdapterService, Depends(_service)]

router = APIRouter(prefix="/v1", tags=["adapters"])


@router.get("/adapters")
def list_adapters(_: Admin, service: ServiceDep) -> AdapterList:
    return AdapterList(data=service.list_all())


@router.post("/adapters", status_code=status.HTTP_201_CREATED)
def push_from_path(body: PushFromPath, admin: Admin, service: ServiceDep) -> AdapterVersionOut:
    return service.push_directory(Path(body.path), body.name, body.version, admin.name)


@router.post("/adapters/upload", status_code=status.HTTP_201_CREATED)
async def push_upload(
    admin: Admin,
    service: ServiceDep,
    name: Annotated[str, Form()],
    files: list[UploadFile],
    version: Annotated[str | None, Form()] = None,
) -> AdapterVersionOut:
    contents = [(f.filename or "", await f.read()) for f in files]
    return await run_in_threadpool(service.push_files, contents, name, version, admin.name)


@router.get("/adapters/{name}")
def show_adapter(name: str, _: Admin, service: ServiceDep) -> AdapterOut:
    return service.summary(name)


@router.get("/adapters/{name}/audit")
def audit_log(name: str, _: Admin, service: ServiceDep) -> list[dict[str, Any]]:
    return service.registry.audit_entries(name)


@router.get("/adapters/{name}/{version}")
def show_version(name: str, version: str, _: Admin, service: ServiceDep) -> AdapterVersionOut:
    return service.show(name, version)


@router.put("/adapters/{name}/{version}/eval-report")
def attach_eval_report(
    name: str, version: str, report: dict[str, Any], admin: Admin, service: ServiceDep
) -> AdapterVersionOut:
    return service.attach_eval_report(name, version, report, admin.name)


@router.post("/adapters/{name}/{version}/promote")
async def promote(
    name: str, version: str, body: PromoteRequest, admin: Admin, service: ServiceDep
) -> AliasOut:
    return await service.promote(name, version, body.alias, body.force, admin.name)


@router.post("/adapters/{name}/rollback")
async def rollback(name: str, body: RollbackRequest, admin: Admin, service: ServiceDep) -> AliasOut:
    return await service.rollback(name, body.alias, admin.name)


@router.delete("/adapters/{name}/{version}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_version(name: str, version: str, admin: Admin, service: ServiceDep) -> None:
    await service.delete(name, version, admin.name)
