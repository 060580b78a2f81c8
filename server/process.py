"""Start and stop a gateway (`ragdock serve`) as a subprocess, as users run it.

`ragdock up` runs the gateway in its own process; the benchmarks and the tests that need a gateway
of their own in front of an engine start it through here, so there is one way to start it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from ragdock.ports import free_port


def wait_http_ok(url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll `url` until it answers 200.

    Raises:
        RuntimeError: `proc` exited first.
        TimeoutError: no 200 within `timeout_s`.
    """
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
    """Start `ragdock serve` in front of `engine_url` on a free port and wait for /healthz.

    The gateway gets a data and adapters directory of its own beside `log_file` (an embedded
    store belongs to one process); `env` overrides any setting.

    Raises:
        RuntimeError: the gateway did not answer within 60 s; the message carries its log.
    """
    port = free_port()
    full_env = {
        **os.environ,
        "RAGDOCK_LOG_LEVEL": "warning",
        "RAGDOCK_DATA_DIR": str(log_file.parent / f"data-{port}"),
        "RAGDOCK_ADAPTERS_DIR": str(log_file.parent / f"adapters-{port}"),
        **(env or {}),
    }
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handle = log_file.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ragdock_cli", "serve", "--engine-url", engine_url,
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
