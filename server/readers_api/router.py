"""Routes of the reader API. No logic here: see service.py (who may do what, and why)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, status

from server.adapters_api.protocol import AliasOut, PromoteRequest, RollbackRequest
from server.auth import Admin, Platform
from server.readers_api.protocol import ReaderList, ReaderOut, ReaderPush, ReaderVersionOut
from server.readers_api.service import ReaderService


def _service(request: Request) -> ReaderService:
    return ReaderService(request.app.state.reader_registry)


ServiceDep = Annotated[ReaderService, Depends(_service)]

router = APIRouter(prefix="/v1", tags=["readers"])


@router.get("/readers")
def list_readers(admin: Admin, service: ServiceDep) -> ReaderList:
    return ReaderList(data=service.list_all())


@router.post("/readers", status_code=status.HTTP_201_CREATED)
def push_from_path(body: ReaderPush, admin: Platform, service: ServiceDep) -> ReaderVersionOut:
    # A path on the gateway's own disk: only the platform's operators may name one.
    return service.push(Path(body.path), body.name, body.version, admin)


@router.get("/readers/{name}")
def show_reader(name: str, admin: Admin, service: ServiceDep) -> ReaderOut:
    return service.summary(name)


@router.get("/readers/{name}/audit")
def audit_log(name: str, admin: Admin, service: ServiceDep) -> list[dict[str, Any]]:
    return service.audit(name)


@router.get("/readers/{name}/{version}")
def show_version(name: str, version: str, admin: Admin, service: ServiceDep) -> ReaderVersionOut:
    return service.show(name, version)


@router.post("/readers/{name}/{version}/promote")
def promote(
    name: str, version: str, body: PromoteRequest, admin: Platform, service: ServiceDep
) -> AliasOut:
    return service.promote(name, version, body.alias, body.force, admin, body.reason)


@router.post("/readers/{name}/rollback")
def rollback(name: str, body: RollbackRequest, admin: Platform, service: ServiceDep) -> AliasOut:
    return service.rollback(name, body.alias, admin)


@router.delete("/readers/{name}/{version}", status_code=status.HTTP_204_NO_CONTENT)
def delete_version(name: str, version: str, admin: Platform, service: ServiceDep) -> None:
    service.delete(name, version, admin)
