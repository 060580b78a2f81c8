"""Who the caller is and how this replica is doing, for the web console (any chat key).

`/readyz` answers orchestrators unauthenticated, `/metrics` Prometheus's token; both replica-wide.
These answer a person behind a key: `/v1/me` says what the key may do (the console hides what it
may not), `/v1/status` shows the engine's state and the last minute of traffic, scoped like
everything else: a tenant's key sees its own tenant's requests, outcomes and adapters only; a
platform key sees all of them.
"""

from __future__ import annotations

import socket
from dataclasses import asdict

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from adapters.names import ModelRef
from server.adapters_api.service import AdapterService
from server.auth import Chat, KeyRing, viewer_of
from server.engine_client import EngineClient
from server.lora_manager import LoraManager
from server.metrics import GatewayMetrics

router = APIRouter(prefix="/v1", tags=["console"])


class PrincipalOut(BaseModel):
    object: str = "principal"
    name: str
    tenant: str
    scopes: list[str] = Field(description="Every scope the key grants, implied ones included.")
    auth: bool = Field(description="Whether API keys are configured (false: loopback-only mode).")


class EngineState(BaseModel):
    ready: bool = Field(description="The engine answers its health check (as /readyz asks).")


class LastMinute(BaseModel):
    requests: int
    errors: int = Field(description="Requests answered with a status of 500 or more.")
    latency_p50_s: float | None
    latency_p95_s: float | None
    grounded: int = Field(description="Grounded chats answered or abstained.")
    answered: int
    abstained: int
    abstention_rate: float | None = Field(description="abstained / grounded; null for none.")
    abstentions_by_reason: dict[str, int]


class StatusOut(BaseModel):
    object: str = "status"
    replica: str = Field(description="This gateway replica's host name.")
    engine: EngineState
    adapters_loaded: list[str] = Field(
        description="Adapter versions resident in the engine (name@version) the caller may use."
    )
    in_flight: int = Field(description="The caller's chat and completion requests in flight.")
    window_s: int
    last_minute: LastMinute


@router.get("/me")
def me(principal: Chat, request: Request) -> PrincipalOut:
    keyring: KeyRing = request.app.state.keyring
    return PrincipalOut(
        name=principal.name,
        tenant=principal.tenant,
        scopes=sorted(principal.granted),
        auth=keyring.enabled,
    )


@router.get("/status")
async def status(principal: Chat, request: Request) -> StatusOut:
    state = request.app.state
    engine: EngineClient = state.engine
    metrics: GatewayMetrics = state.metrics
    viewer = viewer_of(principal)
    ready = await engine.is_healthy()
    adapters = await _visible_loaded(state.loras, state.adapter_service, viewer)
    recent = metrics.recent
    summary = recent.summary(viewer)
    return StatusOut(
        replica=socket.gethostname(),
        engine=EngineState(ready=ready),
        adapters_loaded=adapters,
        in_flight=recent.in_flight(viewer),
        window_s=round(recent.window_s),
        last_minute=LastMinute(**asdict(summary), abstention_rate=summary.abstention_rate),
    )


async def _visible_loaded(
    loras: LoraManager, service: AdapterService | None, viewer: str | None
) -> list[str]:
    """The engine names (`name@version`) of the loaded adapters `viewer` may use (None: all)."""
    loaded = sorted(loras.loaded)
    if not loaded or viewer is None:
        return loaded
    if service is None:
        return []
    # One registry read (a database, possibly across the network: off the event loop).
    usable = set(await run_in_threadpool(service.registry.names, viewer))
    return [ref for ref in loaded if ModelRef.parse(ref).name in usable]
