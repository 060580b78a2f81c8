"""Connection-level attacks on a running gateway, with what each costs it: the bytes it accepted,
how many connections it still holds, its memory and threads, the worst `/healthz` latency while
the attack ran. `tests/e2e/test_hostile_connections.py` asserts on them; run this module to print
the table for a fresh `ragdock serve` (no engine) from whichever tree is first on the path:

    .venv/bin/python -m tests.connection_attacks
"""

from __future__ import annotations

import contextlib
import json
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from server.process import GatewayProcess, start_gateway

ATTACK_KEY = "attack-key-0123456789abcdef"
METRICS_TOKEN = "metrics-token-0123456789abcdef"
ATTACK_KEYS_JSON = json.dumps(
    [{"key": ATTACK_KEY, "name": "attacker", "tenant": "t", "scopes": ["admin"]}]
)
_CHUNK = 64 << 10


@dataclass
class Cost:
    """What an attack cost the gateway process."""

    rss_before_mb: float
    rss_peak_mb: float
    rss_after_mb: float
    threads_before: int
    threads_after: int
    worst_probe_s: float

    def line(self) -> str:
        return (
            f"RSS {self.rss_before_mb:.0f} -> peak {self.rss_peak_mb:.0f} -> "
            f"{self.rss_after_mb:.0f} MB, threads {self.threads_before} -> "
            f"{self.threads_after}, /healthz worst {self.worst_probe_s * 1000:.0f} ms"
        )


class Watch:
    """Samples `/healthz` (its own connection, every 20 ms) and the process's RSS meanwhile."""

    def __init__(self, gateway: GatewayProcess) -> None:
        self._url = gateway.url
        self._proc = psutil.Process(gateway.proc.pid)
        self._stop = threading.Event()
        self.worst, self.failures, self.samples = 0.0, 0, 0
        self._rss_before = self._rss()
        self._threads_before = self._proc.num_threads()
        self._peak = self._rss_before
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> float:
        return float(self._proc.memory_info().rss) / 2**20

    def _run(self) -> None:
        with httpx.Client(timeout=60) as http:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    ok = http.get(f"{self._url}/healthz").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.worst = max(self.worst, time.perf_counter() - started)
                self.samples += 1
                self.failures += not ok
                self._peak = max(self._peak, self._rss())
                time.sleep(0.02)

    def __enter__(self) -> Watch:
        self._thread.start()
        while self.samples == 0 and self._thread.is_alive():  # probing before the attack lands
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        time.sleep(0.2)  # and for a moment after it
        self._stop.set()
        self._thread.join(60)

    def cost(self) -> Cost:
        return Cost(
            self._rss_before,
            self._peak,
            self._rss(),
            self._threads_before,
            self._proc.num_threads(),
            self.worst,
        )


def connect(gateway: GatewayProcess, *, rcvbuf: int | None = None) -> socket.socket:
    host, port = gateway.url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # before connect, so the window is small from the handshake on
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((host, int(port)))
    return sock


def is_open(sock: socket.socket) -> bool:
    """Whether the peer has neither closed nor reset the connection (reads nothing from it
    unless data is waiting; a reply waiting means the server answered, counted as closing)."""
    sock.setblocking(False)
    try:
        return not sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def endless_header(gateway: GatewayProcess, limit_bytes: int) -> tuple[int, bytes]:
    """Send one header value that never ends, up to `limit_bytes`; returns the bytes the
    gateway took before it cut the connection, and what it answered."""
    sock = connect(gateway)
    sock.settimeout(30)
    sent = 0
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Endless: ")
        chunk = b"a" * _CHUNK
        while sent < limit_bytes:
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass
    answer = b""
    with contextlib.suppress(OSError):
        answer = sock.recv(4096)
    sock.close()
    return sent, answer


def half_request_lines(gateway: GatewayProcess, count: int, wait_s: float) -> int:
    """Open `count` connections that each send half a request line; after `wait_s`, how many
    the gateway still holds."""
    socks = [connect(gateway) for _ in range(count)]
    for sock in socks:
        sock.sendall(b"GET /v1/mod")
    time.sleep(wait_s)
    held = sum(is_open(sock) for sock in socks)
    for sock in socks:
        sock.close()
    return held


def stalled_uploads(gateway: GatewayProcess, count: int, collection: str) -> list[socket.socket]:
    """Start `count` document uploads with the attack key that declare 1 MiB and send 1 KiB."""
    head = (
        f"POST /v1/collections/{collection}/documents HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {ATTACK_KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {1 << 20}\r\n\r\n"
    ).encode()
    socks = []
    for _ in range(count):
        sock = connect(gateway)
        sock.sendall(head + b"{" + b" " * 1023)
        socks.append(sock)
    return socks


def key_status(gateway: GatewayProcess) -> int:
    """The attack key's status on a cheap route (429 while its slots are taken)."""
    headers = {"Authorization": f"Bearer {ATTACK_KEY}"}
    return httpx.get(f"{gateway.url}/v1/me", headers=headers, timeout=30).status_code


def unread_embeddings(gateway: GatewayProcess, inputs: int) -> tuple[socket.socket, int]:
    """Ask for `inputs` embeddings on a connection with a small receive window and read
    nothing; returns the socket and the request's size."""
    body = json.dumps(
        {"model": "all-minilm-l6-v2", "input": [f"text number {i}" for i in range(inputs)]}
    ).encode()
    head = (
        f"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ATTACK_KEY}"
        f"\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock = connect(gateway, rcvbuf=4096)
    sock.sendall(head + body)
    return sock, len(body)


def wait_for_the_answer(sock: socket.socket) -> float:
    """Seconds until the answer's first byte is there (peeked: the window stays shut)."""
    started = time.perf_counter()
    sock.settimeout(120)
    assert sock.recv(1, socket.MSG_PEEK)
    return time.perf_counter() - started


def drain(sock: socket.socket) -> tuple[int, bool]:
    """Read what the connection still delivers: (bytes, whether it ended in a reset)."""
    sock.settimeout(10)
    got = 0
    try:
        while chunk := sock.recv(1 << 20):
            got += len(chunk)
    except (ConnectionResetError, TimeoutError):
        return got, True
    return got, False


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="ragdock-attacks-"))
    nowhere = "http://127.0.0.1:9"
    gateway = start_gateway(
        nowhere, workdir / "gateway.log", {"RAGDOCK_API_KEYS": ATTACK_KEYS_JSON}
    )
    try:
        httpx.post(
            f"{gateway.url}/v1/collections",
            json={"name": "stalls"},
            headers={"Authorization": f"Bearer {ATTACK_KEY}"},
            timeout=60,
        )
        with Watch(gateway) as watch:
            sent, answer = endless_header(gateway, 48 << 20)
        print(f"endless header: {sent} bytes taken, answer {answer[:40]!r}; {watch.cost().line()}")

        with Watch(gateway) as watch:
            held = half_request_lines(gateway, 200, 15)
        print(f"200 half request lines: {held} held after 15 s; {watch.cost().line()}")

        with Watch(gateway) as watch:
            socks = stalled_uploads(gateway, 128, "stalls")
            time.sleep(2)
            during = key_status(gateway)
            time.sleep(45)
            after = key_status(gateway)
            held = sum(is_open(s) for s in socks)
            for s in socks:
                s.close()
        print(
            f"128 stalled uploads: key {during} after 2 s, {after} after 47 s, {held} held; "
            f"{watch.cost().line()}"
        )

        with Watch(gateway) as watch:
            sock, size = unread_embeddings(gateway, 2048)
            answered = wait_for_the_answer(sock)
            time.sleep(40)
            cost = watch.cost()
            got, reset = drain(sock)
            sock.close()
        print(
            f"unread /v1/embeddings (2048 inputs, {size} request bytes): answered after "
            f"{answered:.1f} s, 40 s later read {got} bytes, reset={reset}; {cost.line()}"
        )
    finally:
        gateway.stop()


if __name__ == "__main__":
    main()
