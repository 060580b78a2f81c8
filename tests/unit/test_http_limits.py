"""The connection bounds of `server.http_limits`, on a real uvicorn server (in a thread, with the
gateway's own protocol and tight limits) in front of a small ASGI app that records what it saw:
heads too large, too many or too slow, bodies that stall, and clients that never read, each
answered (431 or 408 in OpenAI's error shape) or cut off in bounded time, with the app's work
released; requests within the limits, and slow clients that do read, are served whole."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest
import uvicorn
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from ragdock.ports import free_port
from ragdock.settings import Settings
from server.http_limits import ConnectionLimits, bounded_protocol, server_config

LIMITS = ConnectionLimits(
    max_header_bytes=4096,
    max_headers=20,
    head_timeout_s=0.5,
    body_timeout_s=0.5,
    send_timeout_s=1.5,  # longer than the keep-alive timeout (1 s), which closes first
)
BIG = 8 << 20


@dataclass
class Recorder:
    """What the app saw: disconnects while reading a body, streams that were stopped."""

    disconnected_reads: int = 0
    streams_stopped: threading.Event = field(default_factory=threading.Event)
    in_flight: int = 0


class App:
    """`/echo` reads the body and says how long it was; `/stream` streams without end; `/big`
    answers 8 MiB at once."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        self.recorder.in_flight += 1
        try:
            await self._route(scope, receive, send)
        finally:
            self.recorder.in_flight -= 1

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if path == "/stream":
            await StreamingResponse(self._endless())(scope, receive, send)
        elif path == "/big":
            await Response(b"x" * BIG)(scope, receive, send)
        else:
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    self.recorder.disconnected_reads += 1
                    return
                size += len(message.get("body", b""))
                if not message.get("more_body"):
                    break
            await Response(json.dumps({"size": size}))(scope, receive, send)

    async def _endless(self) -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"data: " + b"t" * 65536 + b"\n\n"
                await asyncio.sleep(0)
        finally:  # where a relay closes its engine stream
            self.recorder.streams_stopped.set()


@dataclass
class Server:
    port: int
    recorder: Recorder

    def connect(self, rcvbuf: int | None = None) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.connect(("127.0.0.1", self.port))
        sock.settimeout(10)
        return sock


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    recorder = Recorder()
    port = free_port()
    config = uvicorn.Config(
        App(recorder),
        host="127.0.0.1",
        port=port,
        http=bounded_protocol(LIMITS),
        timeout_keep_alive=1,
        log_level="warning",
        lifespan="off",
    )
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not running.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert running.started
    yield Server(port, recorder)
    running.should_exit = True
    thread.join(10)


def read_reply(sock: socket.socket) -> tuple[int, dict[str, object], float]:
    """(status, JSON body, seconds until the connection closed after the reply)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    closed_at = time.perf_counter()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body), closed_at


def assert_openai_error(body: dict[str, object], code: str) -> None:
    error = body["error"]
    assert isinstance(error, dict)
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code


def test_a_request_within_the_limits_is_served(server: Server) -> None:
    sock = server.connect()
    headers = "".join(f"X-H{i}: {'v' * 100}\r\n" for i in range(15))
    sock.sendall(
        f"POST /echo HTTP/1.1\r\nHost: a\r\n{headers}Content-Length: 5\r\n"
        "Connection: close\r\n\r\nhello".encode()
    )
    status, body, _ = read_reply(sock)
    assert (status, body) == (200, {"size": 5})


def test_a_header_that_never_ends_is_cut_at_the_size_limit(server: Server) -> None:
    sock = server.connect()
    sock.sendall(b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Endless: ")
    sent = 0
    with pytest.raises(OSError):  # reset or broken pipe once the gateway has answered and closed
        while sent < 64 << 20:
            sock.sendall(b"a" * 4096)
            sent += 4096
    # Counted on the client's side, so the sockets' kernel buffers are in it too.
    assert sent < 8 << 20, f"{sent} bytes were written before the cut"


def test_a_whole_head_over_the_size_limit_gets_431(server: Server) -> None:
    sock = server.connect()
    sock.sendall(b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 5000 + b"\r\n\r\n")
    status, body, _ = read_reply(sock)
    assert status == 431
    assert_openai_error(body, "request_header_too_large")


def test_too_many_headers_get_431(server: Server) -> None:
    sock = server.connect()
    headers = "".join(f"X-H{i}: v\r\n" for i in range(25))
    sock.sendall(f"GET /echo HTTP/1.1\r\nHost: a\r\n{headers}\r\n".encode())
    status, body, _ = read_reply(sock)
    assert status == 431
    assert_openai_error(body, "too_many_headers")


def test_half_a_request_line_gets_408_after_the_head_timeout(server: Server) -> None:
    sock = server.connect()
    started = time.perf_counter()
    sock.sendall(b"GET /ec")
    status, body, closed_at = read_reply(sock)
    assert status == 408
    assert_openai_error(body, "request_head_timeout")
    assert LIMITS.head_timeout_s <= closed_at - started < LIMITS.head_timeout_s + 2


def test_a_connection_that_sends_nothing_is_closed(server: Server) -> None:
    sock = server.connect()
    started = time.perf_counter()
    status, _, closed_at = read_reply(sock)
    assert status == 408 and closed_at - started < LIMITS.head_timeout_s + 2


def test_blank_lines_after_a_response_do_not_keep_the_connection(server: Server) -> None:
    sock = server.connect()
    sock.sendall(b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n")
    assert b"200 OK" in sock.recv(65536)
    started = time.perf_counter()
    with pytest.raises(OSError):  # the parser skips blank lines, so no head ever begins
        for _ in range(200):
            sock.sendall(b"\r\n")
            time.sleep(0.05)
            if sock.recv(65536, socket.MSG_DONTWAIT) == b"":
                raise ConnectionResetError
    assert time.perf_counter() - started < LIMITS.head_timeout_s + 2


def test_a_stalled_body_ends_the_request_with_408(server: Server) -> None:
    before = server.recorder.disconnected_reads
    sock = server.connect()
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
    status, body, _ = read_reply(sock)
    assert status == 408
    assert_openai_error(body, "request_body_timeout")
    deadline = time.monotonic() + 5
    while server.recorder.disconnected_reads == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.recorder.disconnected_reads == before + 1  # the app stopped waiting


def test_a_body_that_keeps_coming_is_not_cut(server: Server) -> None:
    sock = server.connect()
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 20\r\n\r\n")
    for _ in range(20):  # 20 pieces, 0.1 s apart: 2 s in all, each gap under the timeout
        time.sleep(0.1)
        sock.sendall(b"y")
    assert b'{"size": 20}' in sock.recv(65536)


def test_a_stream_nobody_reads_is_cut_and_stopped(server: Server) -> None:
    server.recorder.streams_stopped.clear()
    sock = server.connect(rcvbuf=4096)
    started = time.perf_counter()
    sock.sendall(b"GET /stream HTTP/1.1\r\nHost: a\r\n\r\n")
    assert server.recorder.streams_stopped.wait(LIMITS.send_timeout_s + 10)
    stopped_after = time.perf_counter() - started
    print(f"\nunread stream stopped after {stopped_after:.2f} s")
    assert stopped_after >= LIMITS.send_timeout_s
    assert read_to_the_end(sock) < 64 << 20  # the connection ends (a timeout would raise)


def read_to_the_end(sock: socket.socket) -> int:
    """Bytes read until the server's close (what the kernel still held) or reset."""
    got = 0
    try:
        while chunk := sock.recv(1 << 20):
            got += len(chunk)
    except ConnectionResetError:
        pass
    return got


def test_a_large_answer_nobody_reads_is_dropped(server: Server) -> None:
    sock = server.connect(rcvbuf=4096)
    sock.sendall(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
    time.sleep(LIMITS.send_timeout_s + 1.5)
    assert (
        read_to_the_end(sock) < BIG
    )  # aborted: the rest was never sent, nor kept for a client that never reads


def test_a_slow_reader_that_reads_gets_everything(server: Server) -> None:
    sock = server.connect()
    sock.sendall(b"GET /big HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    got = 0
    while chunk := sock.recv(256 << 10):
        got += len(chunk)
        time.sleep(0.01)
    assert got > BIG


def test_the_app_holds_no_request_after_the_attacks(server: Server) -> None:
    deadline = time.monotonic() + 5
    while server.recorder.in_flight and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.recorder.in_flight == 0


def test_the_gateway_config_carries_every_limit() -> None:
    settings = Settings(
        max_header_bytes=8192,
        max_headers=50,
        head_timeout_s=3,
        body_timeout_s=7,
        send_timeout_s=11,
        keep_alive_timeout_s=4,
        max_connections=300,
    )
    config = server_config(lambda *_: None, settings)
    assert config.timeout_keep_alive == 4 and config.limit_concurrency == 300
    protocol = config.http
    assert isinstance(protocol, type) and hasattr(protocol, "limits")
    assert protocol.limits == ConnectionLimits(8192, 50, 3, 7, 11)
