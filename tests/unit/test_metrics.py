"""The gateway's metrics follow Prometheus conventions, checked by Prometheus's own promtool."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from server.metrics import GatewayMetrics

PROMTOOL = Path(__file__).resolve().parents[2] / ".venv" / "tools" / "promtool"


def _populated() -> GatewayMetrics:
    metrics = GatewayMetrics()
    metrics.requests.labels("chat", "grounded@v1", "200").inc()
    metrics.latency.labels("chat", "grounded@v1").observe(0.8)
    metrics.ttft.labels("grounded@v1").observe(0.1)
    metrics.prompt_tokens.labels("grounded@v1").inc(120)
    metrics.completion_tokens.labels("grounded@v1").inc(30)
    metrics.in_flight.labels("chat", "gemma").set(2)
    metrics.adapter_loads.labels("grounded@v1", "success").inc()
    metrics.adapter_load_seconds.labels("grounded@v1").observe(0.02)
    metrics.adapter_unloads.labels("old@v1").inc()
    metrics.adapters_loaded.set(1)
    metrics.rejections.labels("in_flight_key", "app").inc()
    return metrics


@pytest.mark.tools  # promtool, from scripts/install-tools.sh
def test_promtool_accepts_the_exposition() -> None:
    result = subprocess.run(
        [str(PROMTOOL), "check", "metrics"],
        input=_populated().exposition(),
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not result.stdout.strip() and not result.stderr.strip()  # no lint warnings either


def test_names_follow_conventions() -> None:
    text = _populated().exposition().decode()
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1].isalpha()}
    assert names and all(n.startswith("ragdock_") for n in names)
    assert "ragdock_requests_total" in names
    assert "ragdock_request_duration_seconds_bucket" in names
