"""An in-process gateway for tests that need no engine: the real `build_app` with the real
retriever (all-MiniLM-L6-v2, embedded Qdrant in a temporary directory), driven by Starlette's
TestClient. Its engine URL points at a closed port, so a request that reached the engine would
come back as 503 `engine_unavailable`: a test can tell that a request was refused before it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.testclient import TestClient

from ragdock.settings import Settings
from server.app import build_app
from tests.support import BETA_KEY, CHAT_ONLY_KEY, TEST_API_KEY, TEST_KEYS_JSON, free_port


def gateway_settings(home: Path, **overrides: Any) -> Settings:
    return Settings.model_validate(
        {
            "home": home,
            "api_keys": TEST_KEYS_JSON,
            "engine_url": f"http://127.0.0.1:{free_port()}",
            **overrides,
        }
    )


def gateway_client(app: FastAPI, key: str) -> TestClient:
    return TestClient(
        app, headers={"Authorization": f"Bearer {key}"}, raise_server_exceptions=False
    )


def build_test_app(home: Path, **overrides: Any) -> FastAPI:
    return build_app(gateway_settings(home, **overrides))


__all__ = ["BETA_KEY", "CHAT_ONLY_KEY", "TEST_API_KEY", "build_test_app", "gateway_client"]
