"""Scrape configs and alert rules, checked by promtool, with the alerts' own unit tests."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.support import (
    DEPLOY,
    gateway_metric_names,
    promql_metric_names,
    run,
    tool,
    vllm_metric_names,
)

PROMETHEUS = DEPLOY / "prometheus"


# Where each config expects the Qdrant API key: a compose secret, or the Secret ragdock-backends
# mounted the Prometheus Operator's way.
QDRANT_KEY_FILES = {
    "prometheus.yml": "/run/secrets/qdrant_api_key",
    "prometheus-k8s.yml": "/etc/prometheus/secrets/ragdock-backends/QDRANT_API_KEY",
}

# Where each expects the gateway's RAGDOCK_METRICS_TOKEN: a compose secret, or the Secret
# ragdock-metrics mounted the same way.
METRICS_TOKEN_FILES = {
    "prometheus.yml": "/run/secrets/ragdock_metrics_token",
    "prometheus-k8s.yml": "/etc/prometheus/secrets/ragdock-metrics/RAGDOCK_METRICS_TOKEN",
}


def _jobs(config: str) -> dict[str, dict[str, Any]]:
    scrape_configs = yaml.safe_load((PROMETHEUS / config).read_text())["scrape_configs"]
    return {job["job_name"]: job for job in scrape_configs}


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-k8s.yml"])
def test_scrape_config_is_valid_and_scrapes_gateway_vllm_and_qdrant(
    config: str, tmp_path: Path
) -> None:
    # promtool checks that credential files exist: point them at a stand-in, rules alongside.
    text = (PROMETHEUS / config).read_text()
    for name, path in (
        ("qdrant", QDRANT_KEY_FILES[config]),
        ("gateway", METRICS_TOKEN_FILES[config]),
    ):
        key_file = tmp_path / f"{name}-key"
        key_file.write_text("k" * 32)
        assert text.count(path) == 1
        text = text.replace(path, str(key_file))
    (tmp_path / config).write_text(text)
    shutil.copy(PROMETHEUS / "alerts.yml", tmp_path)
    proc = run(tool("promtool"), "check", "config", tmp_path / config)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert set(_jobs(config)) == {"gateway", "vllm", "qdrant"}  # the alert rules select these


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-k8s.yml"])
def test_the_qdrant_and_gateway_scrapes_send_their_keys(config: str) -> None:
    # Qdrant's /metrics requires its API key and the gateway's its metrics token (as bearer
    # tokens); vLLM's is open.
    jobs = _jobs(config)
    assert jobs["qdrant"]["authorization"] == {"credentials_file": QDRANT_KEY_FILES[config]}
    assert jobs["gateway"]["authorization"] == {"credentials_file": METRICS_TOKEN_FILES[config]}
    assert "authorization" not in jobs["vllm"]


def test_alert_rules_are_valid() -> None:
    proc = run(tool("promtool"), "check", "rules", PROMETHEUS / "alerts.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_alert_unit_tests_pass() -> None:
    proc = run(tool("promtool"), "test", "rules", PROMETHEUS / "alerts_test.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_alert_unit_tests_catch_a_changed_threshold(tmp_path: Path) -> None:
    shutil.copy(PROMETHEUS / "alerts_test.yml", tmp_path)
    rules = (PROMETHEUS / "alerts.yml").read_text()
    assert rules.count("> 0.05") == 1
    (tmp_path / "alerts.yml").write_text(rules.replace("> 0.05", "> 0.5"))
    proc = run(tool("promtool"), "test", "rules", tmp_path / "alerts_test.yml")
    assert proc.returncode != 0
    assert "RagdockHighErrorRate" in proc.stdout + proc.stderr


def _alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_alerts_cover_the_failure_modes_and_are_documented() -> None:
    alerts = _alerts()
    names = {a["alert"] for a in alerts}
    assert names == {
        "RagdockEngineDown", "RagdockHighErrorRate", "RagdockHighLatencyP95",
        "RagdockAbstentionSpike", "RagdockAdapterLoadFailures", "RagdockRetrievalErrors",
        "RagdockQdrantDown", "RagdockSourceJobStuck", "RagdockSourceStale",
        "RagdockReaderReloadFailures",
    }  # fmt: skip
    readme = (DEPLOY / "README.md").read_text()
    tested = (PROMETHEUS / "alerts_test.yml").read_text()
    for alert in alerts:
        assert alert["labels"]["severity"] in {"critical", "warning"}
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
        assert f"`{alert['alert']}`" in readme, (
            f"{alert['alert']} is not explained in deploy/README.md"
        )
        assert f"alertname: {alert['alert']}\n" in tested, f"{alert['alert']} has no unit test"


def test_alerts_use_only_metrics_that_are_exported() -> None:
    known = gateway_metric_names() | vllm_metric_names() | {"up"}
    for alert in _alerts():
        used = promql_metric_names(alert["expr"])
        assert used, alert["alert"]
        assert used <= known, f"{alert['alert']}: unknown metrics {used - known}"
