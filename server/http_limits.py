"""The HTTP layer's bounds on every connection, before any route runs.

uvicorn gives an idle keep-alive timeout (`timeout_keep_alive`) and a cap on connections plus
running requests (`limit_concurrency`); both are used as they are. Its httptools protocol, which
it picks whenever httptools is installed, has no limit on a request head's size or header count,
no time limit for a head or a body to arrive, and waits forever on a client that reads nothing
(h11 bounds a head's size, through h11_max_incomplete_event_size, but none of the times, and
parses in pure Python). The protocol here is uvicorn's httptools one with those bounds added:

- head size and header count: past `max_header_bytes` (request line plus headers) or
  `max_headers`, 431 and close. A head that never ends is cut once it passes the size, so it
  costs at most that plus one read, not the whole stream it sends;
- head time: the head must arrive whole within `head_timeout_s` of the connection opening or of
  the next request's first byte, else 408 and close (half a request line, a dribbled header);
- body time: at most `body_timeout_s` between two pieces of a request body, else the request
  ends (its app sees a disconnect, so its admission slot is freed), 408 and close;
- slow reader: when the transport's write buffer has stayed above its high-water mark for
  `send_timeout_s` (the socket's buffers are full and the client reads nothing), the
  connection is aborted. The app sees a disconnect: a stream stops and cancels its engine
  request, its slot is freed, and the bytes buffered for the client are dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ragdock.settings import Settings
from server.errors import error_body

log = logging.getLogger(__name__)

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


@dataclass(frozen=True)
class ConnectionLimits:
    """The bounds, in plain numbers (see the settings of the same names)."""

    max_header_bytes: int
    max_headers: int
    head_timeout_s: float
    body_timeout_s: float
    send_timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            head_timeout_s=settings.head_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            send_timeout_s=settings.send_timeout_s,
        )


class _Refused(Exception):
    """Raised inside a parser callback: httptools stops parsing and uvicorn answers the error."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with `ConnectionLimits` (set on a subclass by
    `bounded_protocol`, since uvicorn builds one protocol object per connection itself)."""

    limits: ClassVar[ConnectionLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_head = True  # between requests, or inside a head
        self._head_bytes = 0
        self._header_count = 0
        self._refusal: tuple[int, str, str] | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._last_body_at = 0.0

    # --- connection ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._body_timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = self._write_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._reading_head:
            self._head_bytes += len(data)
            # Armed on the first byte after a response too: bytes that never make a head
            # (blank lines, which the parser skips) do not keep a connection either.
            self._arm_head_timer()
        super().data_received(data)
        if (
            self._reading_head
            and self._head_bytes > self.limits.max_header_bytes
            and not self.transport.is_closing()
        ):
            self._drop(431, "request_header_too_large", self._too_large_message())

    # --- parser callbacks ------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._refuse(
                431,
                "too_many_headers",
                f"The request has more than {self.limits.max_headers} headers",
            )
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        self._reading_head = False
        size = len(self.url) + sum(len(name) + len(value) for name, value in self.headers)
        if size > self.limits.max_header_bytes:
            self._refuse(431, "request_header_too_large", self._too_large_message())
        super().on_headers_complete()
        self._last_body_at = self.loop.time()
        self._body_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_timed_out)

    def on_body(self, body: bytes) -> None:
        self._last_body_at = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        self._reading_head, self._head_bytes, self._header_count = True, 0, 0
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error, which is also how a refusal raised in a
        callback ends: answer that refusal, or the 400."""
        status, code, message = self._refusal or (400, "invalid_http_request", msg)
        self._refusal = None
        self._drop(status, code, message)

    # --- writing ---------------------------------------------------------------------------
    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(
                self.limits.send_timeout_s, self._write_stalled
            )

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    # --- timers ----------------------------------------------------------------------------
    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(
                self.limits.head_timeout_s, self._head_timed_out
            )

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.flow.read_paused:  # we stopped reading (a pipelined request waits), not them
            self._arm_head_timer()
            return
        limit = self.limits.head_timeout_s
        log.info("%s: no whole request head within %s s, closing", self._peer(), limit)
        self._drop(408, "request_head_timeout", "The request head did not arrive in time")

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self.cycle is None or not self.cycle.more_body:
            return
        now = self.loop.time()
        if self.flow.read_paused:  # the app has not taken what came yet: not the client's pause
            self._last_body_at = now
        idle = now - self._last_body_at
        if idle < self.limits.body_timeout_s:
            delay = self.limits.body_timeout_s - idle
            self._body_timer = self.loop.call_later(delay, self._body_timed_out)
            return
        log.info("%s: request body stalled for %s s, closing", self._peer(), idle)
        self._drop(408, "request_body_timeout", "The request body stopped arriving")

    def _write_stalled(self) -> None:
        # Closing too (a keep-alive timeout after a whole answer was buffered): a close waits
        # for the unread bytes to be delivered, for ever.
        self._write_timer = None
        log.info(
            "%s: read nothing of its response for %s s, aborting",
            self._peer(),
            self.limits.send_timeout_s,
        )
        # abort, not close: close would keep the unread bytes until they are delivered.
        self.transport.abort()

    # --- answers ---------------------------------------------------------------------------
    def _refuse(self, status: int, code: str, message: str) -> None:
        self._refusal = (status, code, message)
        raise _Refused(message)

    def _drop(self, status: int, code: str, message: str) -> None:
        """End the connection: the running request's app sees a disconnect and its later
        sends are dropped; the client gets `status` unless a response had already begun (or,
        in a body's time, had been sent whole: a 401 whose body never came is answered)."""
        cycle = self.cycle
        if cycle is None:
            answer = True
        elif cycle.response_complete:
            answer = self._reading_head  # a new request's head, not the last one's body
        else:
            answer = not cycle.response_started
            cycle.disconnected = True
            cycle.message_event.set()
        if answer:
            body = json.dumps(error_body(message, "invalid_request_error", code=code)).encode()
            head = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"Bad Request"))]
            head += [
                name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers
            ]
            head.append(b"content-type: application/json\r\n")
            head.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
            self.transport.write(b"".join(head) + body)
        self.transport.close()

    def _too_large_message(self) -> str:
        return f"The request head is over the {self.limits.max_header_bytes} byte limit"

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "client"


def bounded_protocol(limits: ConnectionLimits) -> type[BoundedHttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, bound to `limits`."""

    class Bounded(BoundedHttpToolsProtocol):
        pass

    Bounded.limits = limits
    return Bounded


def server_config(app: Any, settings: Settings) -> uvicorn.Config:
    """uvicorn's configuration of the gateway: address, logging, and every connection bound."""
    return uvicorn.Config(
        app,
        host=settings.bind_host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        http=bounded_protocol(ConnectionLimits.from_settings(settings)),
        timeout_keep_alive=settings.keep_alive_timeout_s,
        limit_concurrency=settings.max_connections,
    )
