"""What the tests share: their API keys, and the product's own launchers for the real stack (the
engine launcher `ragdock up` uses, the gateway as a `ragdock serve` subprocess)."""

from __future__ import annotations

from ragdock.ports import free_port
from server.process import GatewayProcess, start_gateway, wait_http_ok

__all__ = ["GatewayProcess", "free_port", "start_gateway", "wait_http_ok"]

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
