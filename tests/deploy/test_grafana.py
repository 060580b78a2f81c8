"""The Grafana dashboard: valid JSON, unique panel ids, the provisioned datasource, PromQL that
promtool parses, and only metrics the gateway and vLLM export."""

from __future__ import annotations

import json
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

GRAFANA = DEPLOY / "grafana"
# What Grafana substitutes before a query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$model": ".*"}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((GRAFANA / "dashboards" / "ragdock.json").read_text())
    return loaded


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def _exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in _panels(dashboard) for t in p["targets"]]


def test_panel_ids_are_unique_and_the_layout_has_no_overlap(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        area = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & area, f"panel {panel['title']!r} overlaps another"
        assert g["x"] + g["w"] <= 24
        cells |= area


def test_every_query_uses_the_provisioned_datasource(dashboard: dict[str, Any]) -> None:
    provisioned = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    (source,) = provisioned["datasources"]
    expected = {"type": "prometheus", "uid": source["uid"]}
    for panel in _panels(dashboard):
        assert panel["datasource"] == expected, panel["title"]
        assert all(t["datasource"] == expected for t in panel["targets"]), panel["title"]
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"] == expected


def test_every_query_parses_as_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    rules = []
    for i, (_, expr) in enumerate(_exprs(dashboard)):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = run(tool("promtool"), "check", "rules", path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(rules)} rules found" in proc.stdout


def test_promtool_rejects_broken_promql(tmp_path: Path) -> None:
    path = tmp_path / "broken.yml"
    rule = {"record": "x:y", "expr": "sum by (model (rate(ragdock_requests_total[1m]))"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [rule]}]}))
    assert run(tool("promtool"), "check", "rules", path).returncode != 0


def test_queries_use_only_exported_metrics(dashboard: dict[str, Any]) -> None:
    known = gateway_metric_names() | vllm_metric_names()
    used: set[str] = set()
    for title, expr in _exprs(dashboard):
        names = promql_metric_names(expr)
        assert names, title
        assert names <= known, f"{title}: unknown metrics {names - known}"
        used |= names
    # The panels the operators' guide promises: per-adapter latency and TTFT, tokens, retrieval,
    # abstentions, and vLLM's KV cache.
    assert {
        "ragdock_request_duration_seconds_bucket", "ragdock_time_to_first_token_seconds_bucket",
        "ragdock_completion_tokens_total", "ragdock_retrieval_duration_seconds_bucket",
        "ragdock_rag_answers_total", "vllm:kv_cache_usage_perc", "vllm:generation_tokens_total",
        "vllm:num_requests_running",
    } <= used  # fmt: skip


def test_every_panel_is_explained_for_operators(dashboard: dict[str, Any]) -> None:
    readme = (DEPLOY / "README.md").read_text()
    for panel in _panels(dashboard):
        assert panel["description"], panel["title"]
        assert f"**{panel['title']}**" in readme, f"{panel['title']!r} is not in deploy/README.md"


def test_grafana_provisions_the_dashboard_folder() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "ragdock.yml").read_text())
    (entry,) = provider["providers"]
    assert entry["options"]["path"] == "/var/lib/grafana/dashboards"
