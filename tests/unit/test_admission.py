"""Admission control on its own: in-flight caps per key and overall (429 + Retry-After in OpenAI's
shape, the slot held until a stream's last byte), body limits (413), probes never limited.

The middleware is driven through raw ASGI calls so a test can hold a streamed answer open and look
at the counters while it is."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from ragdock.settings import ApiKey
from server.access import AccessControl
from server.admission import AdmissionControl, AdmissionLimits
from server.auth import KeyRing
from server.errors import install_error_handlers
from server.metrics import GatewayMetrics

pytestmark = pytest.mark.anyio

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-0123456789abcdef"
LIMITS = AdmissionLimits(
    max_in_flight=3,
    max_in_flight_per_key=2,
    retry_after_s=1,
    max_body_bytes=1024,
    max_ingest_body_bytes=4096,
    max_adapter_body_bytes=8192,
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Echo(BaseModel):
    text: str


class Harness:
    """A FastAPI app with one streaming route that waits for `release`, behind the middleware."""

    def __init__(self, limits: AdmissionLimits = LIMITS) -> None:
        self.release = asyncio.Event()
        self.calls = 0
        app = FastAPI()
        install_error_handlers(app)

        @app.post("/v1/stream")
        async def stream(body: Echo) -> StreamingResponse:
            self.calls += 1

            async def chunks() -> AsyncIterator[bytes]:
                yield b"data: first\n\n"
                await self.release.wait()
                yield b"data: " + body.text.encode() + b"\n\n"

            return StreamingResponse(chunks(), media_type="text/event-stream")

        @app.get("/healthz")
        async def healthz() -> dict[str, str]:
            return {"status": "ok"}

        self.metrics = GatewayMetrics()
        keyring = KeyRing(
            [
                ApiKey.model_validate({"key": KEY_A, "name": "a"}),
                ApiKey.model_validate({"key": KEY_B}),
            ]
        )
        # As the gateway stacks them: the door, then admission.
        self.admission = AdmissionControl(app, limits=limits, metrics=self.metrics)
        self.gate = AccessControl(self.admission, keyring=keyring)

    async def call(
        self,
        path: str,
        *,
        key: str | None = KEY_A,
        body: bytes = b'{"text": "hi"}',
        chunked: bool = False,
        method: str = "POST",
        first_chunk: asyncio.Event | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request as an ASGI server makes it; `chunked` sends the body in 100-byte parts
        without a Content-Length."""
        headers = [(b"content-type", b"application/json")]
        if key is not None:
            headers.append((b"authorization", f"Bearer {key}".encode()))
        if not chunked:
            headers.append((b"content-length", str(len(body)).encode()))
        parts = [body[i : i + 100] for i in range(0, len(body), 100)] if chunked else [body]
        messages = [
            {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
            for i, part in enumerate(parts)
        ]
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
            "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
            "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
        }  # fmt: skip
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop(0)
            await asyncio.Event().wait()  # the client stays connected
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if first_chunk is not None and message.get("body", b"").startswith(b"data: first"):
                first_chunk.set()

        await self.gate(scope, receive, send)
        start = sent[0]
        response_headers = {k.decode(): v.decode() for k, v in start["headers"]}
        return start["status"], response_headers, b"".join(m.get("body", b"") for m in sent[1:])

    async def open_stream(self, key: str) -> asyncio.Task[tuple[int, dict[str, str], bytes]]:
        """A streamed request that has sent its first chunk and now waits for `release`."""
        first = asyncio.Event()
        task = asyncio.create_task(self.call("/v1/stream", key=key, first_chunk=first))
        await asyncio.wait_for(first.wait(), 5)
        return task


def _assert_openai_error(status: int, body: bytes, expected_status: int, code: str) -> None:
    assert status == expected_status
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["message"]


def _rejections(harness: Harness, reason: str, key: str) -> float:
    value = harness.metrics.registry.get_sample_value(
        "ragdock_rejected_requests_total", {"reason": reason, "key": key}
    )
    return value or 0.0


async def test_a_key_over_its_cap_gets_429_until_its_streams_end() -> None:
    harness = Harness()
    streams = [await harness.open_stream(KEY_A), await harness.open_stream(KEY_A)]
    # Both streams have sent a chunk and are still open: they hold their slots.
    assert harness.admission.in_flight == 2 and harness.admission.in_flight_by_key["a"] == 2

    status, headers, body = await harness.call("/v1/stream", key=KEY_A)
    _assert_openai_error(status, body, 429, "rate_limit_exceeded")
    assert json.loads(body)["error"]["type"] == "requests"
    assert headers["retry-after"] == "1"
    assert harness.calls == 2  # the refused request never reached the route
    assert _rejections(harness, "in_flight_key", "a") == 1

    other = await harness.open_stream(KEY_B)  # another key still has room
    harness.release.set()
    for task in [*streams, other]:
        status, _, body = await task
        assert status == 200 and body.endswith(b"data: hi\n\n")
    assert harness.admission.in_flight == 0 and not harness.admission.in_flight_by_key
    status, _, _ = await harness.call("/v1/stream", key=KEY_A, body=b'{"text": "again"}')
    assert status == 200


async def test_the_overall_cap_holds_across_keys_and_probes_are_never_limited() -> None:
    harness = Harness()
    held = [
        await harness.open_stream(KEY_A),
        await harness.open_stream(KEY_B),
        await harness.open_stream(KEY_B),
    ]
    status, headers, body = await harness.call("/v1/stream", key=KEY_A)
    _assert_openai_error(status, body, 429, "rate_limit_exceeded")
    assert headers["retry-after"] == "1"
    assert _rejections(harness, "in_flight_total", "a") == 1
    # A wrong key is refused at the door, before admission: it never counts, never holds a slot.
    status, _, body = await harness.call("/v1/stream", key="wrong-key-0123456789")
    _assert_openai_error(status, body, 401, "invalid_api_key")
    assert _rejections(harness, "in_flight_total", "-") == 0

    status, _, body = await harness.call("/healthz", method="GET", body=b"")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    harness.release.set()
    assert [(await t)[0] for t in held] == [200, 200, 200]


async def test_a_declared_body_over_the_limit_is_413_before_the_route() -> None:
    harness = Harness()
    big = json.dumps({"text": "x" * 2000}).encode()
    status, _, body = await harness.call("/v1/stream", body=big)
    _assert_openai_error(status, body, 413, "payload_too_large")
    assert harness.calls == 0
    assert _rejections(harness, "body_too_large", "a") == 1


async def test_a_chunked_body_is_cut_off_at_the_limit_with_413() -> None:
    harness = Harness()
    big = json.dumps({"text": "x" * 2000}).encode()
    status, _, body = await harness.call("/v1/stream", body=big, chunked=True)
    _assert_openai_error(status, body, 413, "payload_too_large")
    assert harness.calls == 0
    assert harness.admission.in_flight == 0

    harness.release.set()
    small = json.dumps({"text": "y" * 500}).encode()  # several parts, under the limit
    status, _, body = await harness.call("/v1/stream", body=small, chunked=True)
    assert status == 200 and body.endswith(b"y\n\n")


@pytest.mark.parametrize(
    ("method", "path", "limit"),
    [
        ("POST", "/v1/chat/completions", 1024),
        ("POST", "/v1/retrieve", 1024),
        ("POST", "/v1/collections", 1024),
        ("POST", "/v1/collections/kb/documents", 4096),
        ("POST", "/v1/collections/kb/documents/upload", 4096),
        ("POST", "/v1/adapters/upload", 8192),
        # The JSON routes under /v1/adapters and /v1/collections are small JSON like the rest.
        ("POST", "/v1/adapters", 1024),
        ("PUT", "/v1/adapters/x/v1/eval-report", 1024),
        ("POST", "/v1/adapters/x/v1/promote", 1024),
        ("GET", "/v1/collections/kb/documents", 1024),
        ("DELETE", "/v1/collections/kb/documents/d", 1024),
    ],
)
def test_body_limits_by_route(method: str, path: str, limit: int) -> None:
    assert LIMITS.body_limit(method, path) == limit
