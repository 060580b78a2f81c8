"""Server-sent events: cut from the engine's body bytes wherever the network split them, read,
and written. The one place that knows the wire format (`data: JSON`, a blank line, `[DONE]`).

The plain relay forwards the engine's bytes untouched and needs only to know where whole events end
(to hold back a half-received one); the grounded relay reads events one by one. Both use the same
framer, so an event split across two reads is one event to both. The gateway's own events (sources,
verdicts, errors) are written by `sse_event`, and every reader of a stream (the grounded relay, the
benchmarks, the tests) parses events with `event_data`.
"""

from __future__ import annotations

import json
from typing import Any

SEPARATOR = b"\n\n"  # vLLM ends every event with a blank line and never uses CRLF
DONE = b"data: [DONE]"
DATA_PREFIX = b"data: "
DONE_EVENT = DONE + SEPARATOR  # the last event of every stream
# Only the usage-only chunk at the end has an empty `choices` (vLLM writes compact JSON; a quote in
# generated text is escaped, so this never matches inside content).
USAGE_CHUNK_MARK = b'"choices":[]'


class SseFramer:
    """Cuts a byte stream into whole events; keeps an unfinished one until its end arrives."""

    def __init__(self) -> None:
        self._pending = bytearray()

    def feed(self, chunk: bytes) -> bytes:
        """Add the next read and take the whole events it completes.

        Returns:
            Every event completed so far and not yet taken, as the bytes received (each with its
            separator); empty when the read ended inside an event.
        """
        if not self._pending:
            # The usual read is one or more whole events: hand it on without a copy.
            if chunk.endswith(SEPARATOR):
                return chunk
            cut = _end_of_last_event(chunk, 0)
            self._pending += chunk[cut:]
            return chunk[:cut]
        # A separator may straddle the two reads: search from the held bytes' last one.
        start = len(self._pending) - 1
        self._pending += chunk
        cut = _end_of_last_event(self._pending, start)
        block = bytes(self._pending[:cut])
        del self._pending[:cut]
        return block

    def rest(self) -> bytes:
        """What followed the last separator when the stream ended (normally nothing)."""
        rest = bytes(self._pending)
        self._pending.clear()
        return rest


def _end_of_last_event(data: bytes | bytearray, start: int) -> int:
    """The offset just past the last separator at or after `start`; 0 when there is none."""
    found = data.rfind(SEPARATOR, start)
    return found + len(SEPARATOR) if found >= 0 else 0


def events_of(block: bytes) -> list[bytes]:
    """The events of a block `SseFramer.feed` returned, without their separators."""
    return block.split(SEPARATOR)[:-1]


def sse_event(data: object) -> bytes:
    """One event carrying `data` as JSON, separator included, written compact as vLLM writes its
    own: the gateway's events and the engine's it relays look alike."""
    return DATA_PREFIX + json.dumps(data, separators=(",", ":")).encode() + SEPARATOR


def event_data(event: bytes | str) -> Any:
    """The JSON one event carries (an event without its separator, or one line of a stream).

    Returns:
        The decoded value; None for `[DONE]`, a comment (`: keep-alive`), or data that is not JSON.
    """
    raw = event.encode() if isinstance(event, str) else event
    if not raw.startswith(DATA_PREFIX) or raw == DONE:
        return None
    try:
        return json.loads(raw[len(DATA_PREFIX) :])
    except ValueError:
        return None


def is_done(event: bytes | str) -> bool:
    """True for the `[DONE]` event that ends a stream."""
    return (event.encode() if isinstance(event, str) else event) == DONE


def usage_of_event(event: bytes) -> dict[str, Any] | None:
    """The token usage an event carries when it is the stream's usage-only chunk, else None."""
    if USAGE_CHUNK_MARK not in event:
        return None
    data = event_data(event)
    usage = data.get("usage") if isinstance(data, dict) else None
    return usage if isinstance(usage, dict) else None


def usage_of_body(content: bytes) -> dict[str, Any] | None:
    """The token usage of a whole (non-streamed) engine answer, if it has one."""
    try:
        usage = json.loads(content).get("usage")
    except (ValueError, AttributeError):
        return None
    return usage if isinstance(usage, dict) else None
