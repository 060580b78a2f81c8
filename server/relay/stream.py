"""A streamed engine answer on its way to the client.

The engine's bytes go on as they came, a read's worth at a time; only an event that carries the
usage-only marker is ever decoded on the way. The gateway always asks the engine for that usage
chunk, counts it, and drops it again when the client did not ask for it. A stream that fails on
the way ends with one OpenAI error event.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack

import httpx
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from server.engine_client import EngineClient
from server.errors import GatewayError, sse_error_event
from server.metrics import RequestMeter
from server.relay.framing import SEPARATOR, USAGE_CHUNK_MARK, SseFramer, events_of, usage_of_event

# Proxies (nginx) must pass each event on at once rather than buffer the stream.
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class EngineStream:
    """A streamed engine answer, read once, either as blocks of bytes or as single events.

    Either way the usage-only chunk is counted, and taken out unless the client asked for it;
    the engine connection is closed when the reading ends, or by `aclose` (closing it is what
    stops vLLM).
    """

    def __init__(
        self,
        engine: EngineClient,
        upstream: httpx.Response,
        meter: RequestMeter,
        *,
        keep_usage: bool,
    ) -> None:
        self._engine = engine
        self._upstream = upstream
        self._meter = meter
        self._keep_usage = keep_usage

    async def aclose(self) -> None:
        """Close the engine connection, read or not (a no-op once closed)."""
        await self._upstream.aclose()

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
        chunks = self._engine.relay(self._upstream)
        try:
            async for chunk in chunks:
                block = framer.feed(chunk)
                if block:
                    self._meter.first_chunk()
                    yield block
            rest = framer.rest()
            if rest:
                yield rest
        finally:
            await chunks.aclose()

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

    `resources` (the request's engine connection, adapter lease and meter) are released when
    the stream ends, however it ends.
    """
    async with resources:
        try:
            async for item in source:
                yield item
        except GatewayError as exc:
            yield sse_error_event(exc)
        finally:
            await source.aclose()


def client_stream_response(
    source: AsyncGenerator[bytes, None], resources: AsyncExitStack
) -> StreamingResponse:
    """The response relaying `source` to the client (see `client_stream`).

    A client that leaves before the first byte leaves the stream unstarted, and one that leaves
    mid-way leaves it suspended: either way the response's closing task closes it and
    `resources` (which hold the engine connection too), so the engine stops, and the lease and
    meter are let go at once (both closes are no-ops when the stream ended by itself).
    """
    events = client_stream(source, resources)

    async def close() -> None:
        await events.aclose()
        await resources.aclose()

    return event_stream_response(events, background=BackgroundTask(close))


def event_stream_response(
    events: AsyncGenerator[bytes, None], *, background: BackgroundTask | None = None
) -> StreamingResponse:
    """A `text/event-stream` response relaying `events` as they come."""
    return StreamingResponse(
        events, media_type="text/event-stream", headers=_SSE_HEADERS, background=background
    )


def _events_in(block: bytes) -> list[bytes]:
    """The events of a framed block; the unterminated tail is one event (unless blank)."""
    if block.endswith(SEPARATOR):
        return events_of(block)
    return [block] if block.strip() else []
