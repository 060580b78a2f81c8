"""Starting the real stack for tests: the same launcher `ragdock up` uses, and the gateway as a
subprocess (`ragdock serve`), exactly as users run them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

TEST_API_KEY = "test-key-0123456789abcdef"
CHAT_ONLY_KEY = "chat-key-0123456789abcdef"
BETA_KEY = "beta-key-0123456789abcdef"
# A gateway of a test's own with the one test key, which may do everything (platform scope).
ADMIN_KEY_JSON = f'[{{"key": "{TEST_API_KEY}", "name": "admin", "scopes": ["platform"]}}]'
# The session gateway's keys: a platform admin (every scope, tenant "default"), an application
# key that may only chat (tenant "acme"), and another tenant's key that may chat and ingest
# ("beta").
TEST_KEYS_JSON = (
    f'[{{"key": "{TEST_API_KEY}", "name": "admin", "scopes": ["platform"]}}, '
    f'{{"key": "{CHAT_ONLY_KEY}", "name": "app", "tenant": "acme", "scopes": ["chat"]}}, '
    f'{{"key": "{BETA_KEY}", "name": "beta", "tenant": "beta", "scopes": ["chat", "ingest"]}}]'
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http_ok(url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_s} s")


@dataclass
class GatewayProcess:
    """A `ragdock serve` subprocess."""

    url: str
    proc: subprocess.Popen[bytes]
    log_file: Path

    @property
    def api_base(self) -> str:
        return f"{self.url}/v1"

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_gateway(
    engine_url: str, log_file: Path, env: Mapping[str, str] | None = None, *extra_args: str
) -> GatewayProcess:
    port = free_port()
    # Each gateway owns its embedded store and registry (the engine locks its directory).
    full_env = {
        **os.environ,
        "RAGDOCK_LOG_LEVEL": "warning",
        "RAGDOCK_DATA_DIR": str(log_file.parent / f"data-{port}"),
        "RAGDOCK_ADAPTERS_DIR": str(log_file.parent / f"adapters-{port}"),
        **(env or {}),
    }
    handle = log_file.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ragdock.cli", "serve", "--engine-url", engine_url,
         "--port", str(port), *extra_args],
        stdout=handle, stderr=subprocess.STDOUT, env=full_env,
    )  # fmt: skip
    gateway = GatewayProcess(f"http://127.0.0.1:{port}", proc, log_file)
    try:
        wait_http_ok(f"{gateway.url}/healthz", 60, proc)
    except Exception:
        gateway.stop()
        raise RuntimeError(f"gateway did not start:\n{gateway.log()}") from None
    return gateway


def engine_gauge(engine_url: str, name: str) -> float:
    """Sum of a vLLM metric over its label sets, read from the engine's /metrics."""
    text = httpx.get(f"{engine_url}/metrics", timeout=5).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                total += sample.value
    return total
