"""Without API keys the gateway is open to anyone who reaches it, so it must stay on loopback and
say so; with keys it binds where it is told."""

from __future__ import annotations

from pathlib import Path

import psutil

from tests.support import ADMIN_KEY_JSON, free_port, start_gateway


def _listening_hosts(pid: int) -> set[str]:
    return {c.laddr.ip for c in psutil.Process(pid).net_connections() if c.status == "LISTEN"}


def test_no_keys_forces_loopback_and_warns(tmp_path: Path) -> None:
    dead_engine = f"http://127.0.0.1:{free_port()}"
    gateway = start_gateway(
        dead_engine, tmp_path / "gw.log", {"RAGDOCK_API_KEYS": ""}, "--host", "0.0.0.0"
    )
    try:
        assert _listening_hosts(gateway.proc.pid) == {"127.0.0.1"}
        log = gateway.log()
        assert "NO API KEYS CONFIGURED" in log
        assert "ignoring host=0.0.0.0" in log
    finally:
        gateway.stop()


def test_with_keys_the_configured_host_is_used(tmp_path: Path) -> None:
    dead_engine = f"http://127.0.0.1:{free_port()}"
    gateway = start_gateway(
        dead_engine, tmp_path / "gw.log", {"RAGDOCK_API_KEYS": ADMIN_KEY_JSON}, "--host", "0.0.0.0"
    )
    try:
        assert _listening_hosts(gateway.proc.pid) == {"0.0.0.0"}
        assert "NO API KEYS" not in gateway.log()
    finally:
        gateway.stop()
