"""Probes (no auth: orchestrators call them) and metrics (the `metrics` scope: Prometheus sends
the `metrics_token`, since the exposition names every tenant's collections, adapters and keys)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from server.auth import MetricsReader
from server.engine_client import EngineClient
from server.metrics import GatewayMetrics

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The gateway process is up (whatever the engine's state)."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Ready only when the engine answers its health check: a load balancer sends no traffic
    to a gateway whose engine is down."""
    engine: EngineClient = request.app.state.engine
    if await engine.is_healthy():
        return JSONResponse({"status": "ready", "engine": "up"})
    retry_after = str(request.app.state.settings.retry_after_s)
    return JSONResponse(
        {"status": "not_ready", "engine": "down"},
        status_code=503,
        headers={"Retry-After": retry_after},
    )


@router.get("/metrics")
async def metrics(request: Request, _: MetricsReader) -> Response:
    """Prometheus exposition of the gateway's metrics (per route, per model and adapter)."""
    gateway_metrics: GatewayMetrics = request.app.state.metrics
    return Response(gateway_metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
