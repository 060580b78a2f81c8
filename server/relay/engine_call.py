"""One request's call to the engine, for a whole answer or a stream, and engine errors in
OpenAI's shape.

The engine answers 404 for an adapter it no longer holds (it restarted and lost what was loaded at
runtime): the call then has the request's adapter lease load it again and asks once more. Token
usage is counted for every answer (for streams, see `stream.py`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import httpx
from fastapi import Response

from server.engine_client import EngineClient, EngineReply
from server.errors import error_body
from server.metrics import RequestMeter
from server.relay.framing import usage_of_body
from server.relay.stream import EngineStream

# Called when the engine answers 404: makes the model servable again and says whether asking
# once more can help (an adapter lease's `reload`; False for the base model).
Reload = Callable[[], Awaitable[bool]]


class EngineCall:
    """The engine path, model and lease of one request; each `post` or `open` is one ask (with
    one retry after a reload)."""

    def __init__(
        self,
        engine: EngineClient,
        path: str,
        *,
        meter: RequestMeter,
        reload: Reload,
        keep_usage: bool = False,
    ) -> None:
        """
        Args:
            engine: the engine client.
            path: the engine route (`/v1/chat/completions`, `/v1/completions`).
            meter: where the request's tokens and first chunk are recorded.
            reload: the lease's hook for a 404.
            keep_usage: the client asked for the usage chunk (`stream_options.include_usage`).
        """
        self._engine = engine
        self._path = path
        self._meter = meter
        self._reload = reload
        self._keep_usage = keep_usage

    async def post(self, body: bytes) -> EngineReply:
        """Ask for a whole answer; its usage is counted when it is a 200.

        Raises:
            EngineUnavailableError: the engine is down or too slow.
            AdapterLoadError: the reload after a 404 failed.
        """
        reply = await self._engine.post(self._path, body)
        if reply.status_code == 404 and await self._reload():
            reply = await self._engine.post(self._path, body)
        if reply.status_code == 200:
            usage = usage_of_body(reply.content)
            if usage is not None:
                self._meter.count_usage(usage)
        return reply

    async def open(self, body: bytes) -> EngineStream | EngineReply:
        """Ask for a streamed answer.

        Returns:
            The open stream when the engine answered 200; otherwise its whole error reply (the
            connection is closed).

        Raises:
            EngineUnavailableError: the engine is down or did not answer in time.
            AdapterLoadError: the reload after a 404 failed.
        """
        upstream = await self._engine.open_stream(self._path, body)
        if upstream.status_code == 404:
            refused = await _read_whole(upstream)
            if not await self._reload():
                return refused
            upstream = await self._engine.open_stream(self._path, body)
        if upstream.status_code != 200:
            return await _read_whole(upstream)
        return EngineStream(self._engine, upstream, self._meter, keep_usage=self._keep_usage)


def engine_error_response(reply: EngineReply) -> Response:
    """Relay an engine error in OpenAI's shape: vLLM's own has the exception class as `type` and
    the status as `code`, which OpenAI clients do not expect."""
    status_code, content = reply.status_code, reply.content
    error_type = "invalid_request_error" if status_code < 500 else "server_error"
    try:
        parsed = json.loads(content)
    except ValueError:
        parsed = None
    upstream = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(upstream, dict):
        message = str(upstream.get("message") or f"engine error {status_code}")
        param = upstream.get("param")
        body = error_body(message, error_type, param=param if isinstance(param, str) else None)
    else:
        text = content.decode(errors="replace").strip()[:500] or f"engine error {status_code}"
        body = error_body(f"Engine error: {text}", error_type)
    return Response(
        json.dumps(body).encode(), status_code=status_code, media_type="application/json"
    )


async def _read_whole(upstream: httpx.Response) -> EngineReply:
    try:
        content = await upstream.aread()
    finally:
        await upstream.aclose()
    content_type = upstream.headers.get("content-type", "application/json")
    return EngineReply(upstream.status_code, content, content_type)
