"""`GET /metrics` names every tenant's collections, adapters and keys, so with API keys configured
it answers only the metrics token (what Prometheus sends), a key with the `metrics` scope, or a
platform key: no key is 401, any other key 403, before the exposition is built. Keyless
(loopback-only) mode keeps it open to loopback callers, with the same browser checks as `/v1/`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from pydantic import ValidationError
from starlette.testclient import TestClient

from ragdock.settings import Settings
from tests.unit.gateway_app import build_test_app, gateway_client

PLATFORM_KEY = "platform-key-0123456789abcdef"
CHAT_KEY = "chat-key-0123456789abcdef-x"
SCRAPER_KEY = "scraper-key-0123456789abcdef"
METRICS_TOKEN = "metrics-token-0123456789abcdef"
KEYS = [
    {"key": PLATFORM_KEY, "name": "ops", "scopes": ["platform"]},
    {"key": CHAT_KEY, "name": "acme-app", "tenant": "acme", "scopes": ["chat"]},
    {"key": SCRAPER_KEY, "name": "scraper", "scopes": ["metrics"]},
]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    app = build_test_app(
        tmp_path_factory.mktemp("metrics"),
        api_keys=json.dumps(KEYS),
        metrics_token=METRICS_TOKEN,
    )
    # Something tenant-specific in the exposition: a collection of acme's.
    admin = gateway_client(app, PLATFORM_KEY)
    assert admin.post("/v1/collections", json={"name": "acme-secret-plans"}).status_code == 201
    assert admin.post("/v1/retrieve", json={"collection": "acme-secret-plans", "query": "q"})
    yield app
    app.state.document_service.retriever.close()


def test_without_a_key_metrics_is_401(app: FastAPI) -> None:
    reply = TestClient(app).get("/metrics")
    assert reply.status_code == 401
    assert "acme-secret-plans" not in reply.text
    assert reply.json()["error"]["code"] == "missing_api_key"


def test_a_wrong_token_is_401(app: FastAPI) -> None:
    assert gateway_client(app, "not-the-token-0123456789").get("/metrics").status_code == 401


def test_a_chat_key_gets_403(app: FastAPI) -> None:
    reply = gateway_client(app, CHAT_KEY).get("/metrics")
    assert reply.status_code == 403
    assert "acme-secret-plans" not in reply.text
    assert reply.json()["error"]["code"] == "missing_scope"


@pytest.mark.parametrize("credential", [METRICS_TOKEN, SCRAPER_KEY, PLATFORM_KEY])
def test_the_metrics_credentials_get_the_metrics(app: FastAPI, credential: str) -> None:
    reply = gateway_client(app, credential).get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    assert 'ragdock_retrieval_duration_seconds_count{collection="acme-secret-plans"}' in reply.text


def test_the_metrics_token_opens_nothing_else(app: FastAPI) -> None:
    scraper = gateway_client(app, METRICS_TOKEN)
    assert scraper.get("/v1/models").status_code == 403
    assert scraper.get("/v1/collections").status_code == 403
    assert scraper.post("/v1/retrieve", json={"collection": "c", "query": "q"}).status_code == 403


def test_keyless_mode_serves_metrics_to_loopback_only(tmp_path: Path) -> None:
    app = build_test_app(tmp_path, api_keys=[])
    try:
        local = TestClient(app, headers={"host": "127.0.0.1:8000"})
        assert local.get("/metrics").status_code == 200
        assert local.get("/metrics", headers={"host": "evil.example"}).status_code == 403
        page = local.get("/metrics", headers={"origin": "https://evil.example"})
        assert page.status_code == 403
    finally:
        app.state.document_service.retriever.close()


def test_a_placeholder_metrics_token_is_refused_and_an_empty_one_is_none() -> None:
    with pytest.raises(ValidationError, match="at least 16 characters"):
        Settings(metrics_token="changeme")
    assert Settings(metrics_token="").metrics_token is None
    banner = "\n".join(Settings(metrics_token=METRICS_TOKEN).describe())
    assert "metrics_token = ****" in banner and METRICS_TOKEN not in banner
