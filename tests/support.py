"""What the tests share: their API keys, and the product's own launchers for the real stack (the
engine launcher `ragdock up` uses, the gateway as a `ragdock serve` subprocess)."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ragdock.ports import free_port
from server.process import GatewayProcess, start_gateway, wait_http_ok

__all__ = [
    "GatewayProcess",
    "free_port",
    "gateway_metric_total",
    "gateway_metrics",
    "start_gateway",
    "wait_http_ok",
]

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


def gateway_metrics(url: str) -> str:
    """A test gateway's `/metrics`, read with the platform test key (every test gateway's keys
    hold it; a gateway with keys answers /metrics only to a platform or metrics credential)."""
    reply = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {TEST_API_KEY}"})
    reply.raise_for_status()
    return reply.text


def gateway_metric_total(url: str, name: str) -> float:
    """A gateway metric summed over its label sets; 0 when it has no samples."""
    families = text_string_to_metric_families(gateway_metrics(url))
    return sum((s.value for f in families for s in f.samples if s.name == name), 0.0)
