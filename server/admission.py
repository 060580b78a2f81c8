"""Admission control: a cap on requests in flight (per API key and overall) and on request body
sizes, enforced before any route runs.

Past a cap the gateway answers 429 at once instead of queueing. A queue in front of an engine that
is already saturated only turns overload into timeouts for everyone; an immediate 429 with
`Retry-After` lets clients back off (the openai SDK retries it by default) and lets a load
balancer try another replica. The per-key cap keeps one noisy application from taking every slot.

This is a plain ASGI middleware rather than a FastAPI dependency because a streamed answer must
hold its slot until its last byte is sent, long after the route function has returned. Probes
(`/healthz`, `/readyz`) and `/metrics` are never limited: an overloaded gateway must still say so.
It runs after `AccessControl`, so only authenticated requests ever hold a slot, and it reads the
principal that layer left instead of checking the key again.

Body limits are per route: the routes that carry files or documents take large bodies, every
other route (the JSON ones under `/v1/adapters` included) a small JSON body.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragdock.settings import Settings
from server.auth import Principal
from server.errors import (
    GatewayError,
    PayloadTooLargeError,
    RateLimitError,
    error_response,
)
from server.metrics import GatewayMetrics

# Multipart framing around an adapter's files: boundaries and part headers, far below this.
_MULTIPART_SLACK = 2**20
_LIMITED_PREFIX = "/v1/"
# The only routes whose bodies are documents or files (POST): everything else is small JSON.
_DOCUMENT_ROUTES = re.compile(r"^/v1/collections/[^/]+/documents(/upload)?/?$")
_ADAPTER_UPLOAD = re.compile(r"^/v1/adapters/upload/?$")


@dataclass(frozen=True)
class AdmissionLimits:
    """The caps, in plain numbers (see the settings of the same names)."""

    max_in_flight: int
    max_in_flight_per_key: int
    retry_after_s: int
    max_body_bytes: int
    max_ingest_body_bytes: int
    max_adapter_body_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> AdmissionLimits:
        return cls(
            max_in_flight=settings.max_in_flight,
            max_in_flight_per_key=settings.max_in_flight_per_key,
            retry_after_s=settings.overload_retry_after_s,
            max_body_bytes=settings.max_body_bytes,
            max_ingest_body_bytes=settings.max_ingest_body_bytes,
            max_adapter_body_bytes=settings.adapter_max_upload_bytes + _MULTIPART_SLACK,
        )

    def body_limit(self, method: str, path: str) -> int:
        """The largest body accepted: document ingest and uploads carry documents, an adapter
        upload its files; every other route a JSON request that is small by nature."""
        if method == "POST" and _DOCUMENT_ROUTES.match(path):
            return self.max_ingest_body_bytes
        if method == "POST" and _ADAPTER_UPLOAD.match(path):
            return self.max_adapter_body_bytes
        return self.max_body_bytes


class AdmissionControl:
    """ASGI middleware enforcing `AdmissionLimits` on every `/v1/` request.

    Args:
        app: the application it guards.
        limits: the caps.
        metrics: counts rejections by reason and key.
    """

    def __init__(self, app: ASGIApp, *, limits: AdmissionLimits, metrics: GatewayMetrics) -> None:
        self.app = app
        self.limits = limits
        self._metrics = metrics
        # One event loop, and no await between a check and its increment: no lock needed.
        self.in_flight = 0
        self.in_flight_by_key: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(_LIMITED_PREFIX):
            await self.app(scope, receive, send)
            return
        key = self._bucket(scope)
        limit = self.limits.body_limit(scope["method"], scope["path"])
        rejection = self._check(scope, key, limit)
        if rejection is not None:
            reason, error = rejection
            self._metrics.rejections.labels(reason, self._metrics.key_label(key)).inc()
            await error_response(error)(scope, receive, send)
            return
        self.in_flight += 1
        if key is not None:
            self.in_flight_by_key[key] += 1
        try:
            await self._guarded(scope, receive, send, key, limit)
        finally:
            self.in_flight -= 1
            if key is not None:
                self.in_flight_by_key[key] -= 1
                if self.in_flight_by_key[key] <= 0:
                    del self.in_flight_by_key[key]

    def _bucket(self, scope: Scope) -> str | None:
        """The key's name, from the principal `AccessControl` authenticated (None outside it)."""
        principal = (scope.get("state") or {}).get("principal")
        return principal.name if isinstance(principal, Principal) else None

    def _check(self, scope: Scope, key: str | None, limit: int) -> tuple[str, GatewayError] | None:
        """The reason (a metric label) and the error refusing this request, or None."""
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return "body_too_large", _too_large(limit)
        if self.in_flight >= self.limits.max_in_flight:
            return "in_flight_total", RateLimitError(
                f"The gateway has {self.limits.max_in_flight} requests in flight, its limit; "
                "retry after the Retry-After delay",
                retry_after_s=self.limits.retry_after_s,
            )
        if key is not None and self.in_flight_by_key[key] >= self.limits.max_in_flight_per_key:
            return "in_flight_key", RateLimitError(
                f"This API key has {self.limits.max_in_flight_per_key} requests in flight, its "
                "limit; retry after the Retry-After delay",
                retry_after_s=self.limits.retry_after_s,
            )
        return None

    async def _guarded(
        self, scope: Scope, receive: Receive, send: Send, key: str | None, limit: int
    ) -> None:
        """Run the app, cutting a body (sent without Content-Length) off at `limit`.

        The app sees the cut as a client disconnect and answers whatever it answers to that;
        that answer is dropped and the client gets the 413 instead.
        """
        received = 0
        too_large = False
        started = False

        async def bounded_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if too_large and not started:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded_receive, guarded_send)
        except Exception:
            if not too_large or started:
                raise
        if too_large and not started:
            self._metrics.rejections.labels("body_too_large", self._metrics.key_label(key)).inc()
            await error_response(_too_large(limit))(scope, receive, send)


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"The request body is over this route's {limit} byte limit")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None
