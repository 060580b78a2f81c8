"""Shared by the deploy tests: where things are, the validators installed by
scripts/install-tools.sh, and the metric names the gateway and vLLM export."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.metrics_core import Metric

from server.metrics import GatewayMetrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
TOOLS = ROOT / ".venv" / "tools"
# The Kubernetes version the manifests are checked against (schemas shipped by kubernetes-validate).
KUBERNETES_VERSION = "1.33.0"


def tool(name: str) -> Path:
    """A validator binary from .venv/tools; a missing one fails the test, it is never skipped."""
    path = TOOLS / name
    assert path.is_file(), f"{path} is missing: run `bash scripts/install-tools.sh`"
    return path


def run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def load_yaml_docs(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def _exported_names(name: str, kind: str) -> set[str]:
    # prometheus_client's (and vLLM's) suffixes, as a scrape sees them.
    if kind == "counter":
        return {f"{name}_total"}
    if kind == "histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return {name}


def gateway_metric_names() -> set[str]:
    families: list[Metric] = list(GatewayMetrics().registry.collect())
    return {n for family in families for n in _exported_names(family.name, family.type)}


def vllm_metric_names() -> set[str]:
    """Names the installed vLLM's Prometheus logger defines, read from its source (importing vLLM
    would load torch): `self._gauge_cls(name="vllm:...")` and the like."""
    spec = importlib.util.find_spec("vllm")
    assert spec is not None and spec.origin is not None, "vLLM is not installed in .venv"
    source = (Path(spec.origin).parent / "v1" / "metrics" / "loggers.py").read_text()
    found = re.findall(
        r'self\._(gauge|counter|histogram)_cls\(\s*name="(vllm:[a-z0-9_:]+)"', source
    )
    assert len(found) > 20, "vLLM's metric definitions were not found where expected"
    return {n for kind, name in found for n in _exported_names(name, kind)}


_PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "and", "or", "unless", "inf", "nan",
}  # fmt: skip


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: what is left once strings, label matchers,
    ranges, grouping clauses, function calls and keywords are taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\boffset\s+\w+", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        if match.group(2) or match.group(1).lower() in _PROMQL_WORDS:
            continue
        names.add(match.group(1))
    return names
