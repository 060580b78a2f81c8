"""An in-process gateway for tests that need no engine: the real `build_app` with the real
retriever (embedded Qdrant in a temporary directory, real BM25) over the hashing embedder
(`tests.fakes.HashingEmbedder`: no weights, same contract as all-MiniLM-L6-v2), driven by
Starlette's TestClient. Its engine URL points at a closed port, so a request that reached the
engine would come back as 503 `engine_unavailable`: a test can tell that a request was refused
before it. A test whose assertions need real semantic similarity passes `embedder=` a
`MiniLMEmbedder` (and so joins the full tier)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.testclient import TestClient

from ragdock.settings import Settings
from retrieval.dense import Embedder
from server.app import build_app
from server.engine_client import EngineClient
from tests.fakes import HashingEmbedder
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


def build_test_app(
    home: Path,
    *,
    engine: EngineClient | None = None,
    embedder: Embedder | None = None,
    **overrides: Any,
) -> FastAPI:
    """`build_app` over `gateway_settings(home, **overrides)`, with `engine` (default: a closed
    port) and `embedder` (default: the hashing embedder) behind its retriever."""
    app = build_app(gateway_settings(home, **overrides), engine=engine)
    retriever = app.state.document_service.retriever
    # build_app makes its own (lazily loading, so still unloaded) MiniLMEmbedder and has no
    # parameter for another; one retriever serves both the documents and the RAG service, so
    # its embedder is swapped in one place before any request.
    assert app.state.rag_service.retriever is retriever
    retriever.embedder = embedder or HashingEmbedder()
    return app


__all__ = ["BETA_KEY", "CHAT_ONLY_KEY", "TEST_API_KEY", "build_test_app", "gateway_client"]
