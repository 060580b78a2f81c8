"""One request's call to the engine, whole or streamed, and the stream as the client receives it.

The engine answers 404 for an adapter it no longer holds (it restarted and lost what was loaded at
runtime): the call then has the request's adapter lease load it again and asks once more. Token
usage is counted for every answer; for streams the gateway always asks the engine for the usage
chunk, and drops it again when the client did not ask for it. Streamed bytes go on as the engine
sent them: only an event that carries the usage-only marker is ever decoded on the way.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import AsyncExitStack

import httpx
from fastapi import Response
from fastapi.responses import StreamingResponse

from server.engine_client import EngineClient, EngineReply
from server.errors import GatewayError, error_body, sse_error_event
from server.metrics import RequestMeter
from server.relay.framing import (
    SEPARATOR,
    USAGE_CHUNK_MARK,
    SseFramer,
    events_of,
    usage_of_body,
    usage_of_event,
)

# Proxies (nginx) must pass each event on at once rather than buffer the stream.
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

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
        return EngineStream(self._engine.relay(upstream), self._meter, keep_usage=self._keep_usage)


class EngineStream:
    """A streamed engine answer, read once, either as blocks of bytes or as single events.

    Either way the usage-only chunk is counted, and taken out unless the client asked for it;
    the engine connection is closed when the reading ends (closing it is what stops vLLM).
    """

    def __init__(
        self, chunks: AsyncGenerator[bytes, None], meter: RequestMeter, *, keep_usage: bool
    ) -> None:
        self._chunks = chunks
        self._meter = meter
        self._keep_usage = keep_usage

    async def blocks(self) -> AsyncGenerator[bytes, None]:
        """Whole events as the engine sent them, a read's worth at a time; an unterminated tail
        at the end is passed on as it came.

        Raises:
            EngineUnavailableError: the engine dropped the stream or went silent too long.
        """
        framed = self._framed()
        try:
            async for block in framed:
                if not block.endswith(SEPARATOR):  # the unterminated tail
                    if not self._drops_usage(block):
                        yield block
                    continue
                if USAGE_CHUNK_MARK in block:
                    block = self._take_usage(block)
                if block:
                    yield block
        finally:
            await framed.aclose()

    async def events(self) -> AsyncGenerator[bytes, None]:
        """The events one by one, without their separators (a non-blank unterminated tail is
        the last one). Usage is counted as its event is reached, so a reader that stops early
        (a grounded answer judged at its first token) counts none of what it left unread.

        Raises:
            EngineUnavailableError: as for `blocks`.
        """
        framed = self._framed()
        try:
            async for block in framed:
                for event in _events_in(block):
                    if not self._drops_usage(event):
                        yield event
        finally:
            await framed.aclose()

    async def _framed(self) -> AsyncGenerator[bytes, None]:
        """Blocks of whole events, then the unterminated tail (if any); closes the connection."""
        framer = SseFramer()
        try:
            async for chunk in self._chunks:
                block = framer.feed(chunk)
                if block:
                    self._meter.first_chunk()
                    yield block
            rest = framer.rest()
            if rest:
                yield rest
        finally:
            await self._chunks.aclose()

    def _take_usage(self, block: bytes) -> bytes:
        """`block` without the usage chunk, unless the client wants it (counted either way)."""
        events = events_of(block)
        kept = [event for event in events if not self._drops_usage(event)]
        if len(kept) == len(events):
            return block
        return b"".join(event + SEPARATOR for event in kept)

    def _drops_usage(self, event: bytes) -> bool:
        """Count the event's tokens if it is the usage chunk; True when it must not go on."""
        usage = usage_of_event(event)
        if usage is None:
            return False
        self._meter.count_usage(usage)
        return not self._keep_usage


async def client_stream(
    source: AsyncGenerator[bytes, None], resources: AsyncExitStack
) -> AsyncGenerator[bytes, None]:
    """What the client receives: `source` as it comes, where a gateway error on the way (the
    engine dropped the stream, a reload failed) becomes one OpenAI error event that ends it.

    `resources` (the request's meter and adapter lease) are released when the stream ends,
    however it ends.
    """
    async with resources:
        try:
            async for item in source:
                yield item
        except GatewayError as exc:
            yield sse_error_event(exc)
        finally:
            await source.aclose()


def event_stream_response(events: AsyncGenerator[bytes, None]) -> StreamingResponse:
    """A `text/event-stream` response relaying `events` as they come."""
    return StreamingResponse(events, media_type="text/event-stream", headers=_SSE_HEADERS)


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


def _events_in(block: bytes) -> list[bytes]:
    """The events of a framed block; the unterminated tail is one event (unless blank)."""
    if block.endswith(SEPARATOR):
        return events_of(block)
    return [block] if block.strip() else []


async def _read_whole(upstream: httpx.Response) -> EngineReply:
    try:
        content = await upstream.aread()
    finally:
        await upstream.aclose()
    content_type = upstream.headers.get("content-type", "application/json")
    return EngineReply(upstream.status_code, content, content_type)
