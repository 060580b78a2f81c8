"""When the vector store fails, every retrieval and document route answers a clear 503 with
Retry-After (never a 500, never an answer without its sources), and the gateway recovers by
itself when the store is back, with nothing half-written visible.

The store is the real embedded Qdrant engine, made to fail on demand the way an unreachable
Qdrant server does: the one thing a test cannot get from a real store on cue."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import Response

from retrieval.store.base import VectorStore
from tests.unit.gateway_app import TEST_API_KEY, build_test_app, gateway_client

RETRY_AFTER = 7
FACT = "The ragdock gateway listens on port 8000 by default."
GONE = "The gateway logs to stderr, one line per request when the access log is on."
QUESTION = "Which port does the gateway listen on?"


class FlakyStore:
    """The real store; while `broken`, every call raises as a dropped connection would."""

    def __init__(self, real: VectorStore) -> None:
        self.real = real
        self.broken = False

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.real, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.broken:
                raise ConnectionError("qdrant: connection refused")
            return attribute(*args, **kwargs)

        return call


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    app = build_test_app(tmp_path_factory.mktemp("faults"), retry_after_s=RETRY_AFTER)
    yield app
    app.state.document_service.retriever.close()


@pytest.fixture(scope="module")
def store(app: FastAPI) -> FlakyStore:
    retriever = app.state.document_service.retriever
    flaky = FlakyStore(retriever.store)
    retriever.store = flaky
    return flaky


def _assert_store_503(response: Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == str(RETRY_AFTER)
    error = response.json()["error"]
    assert error["code"] == "retrieval_unavailable" and error["type"] == "server_error"
    assert "choices" not in response.json()


def test_store_failures_are_503_and_the_gateway_recovers(app: FastAPI, store: FlakyStore) -> None:
    client = gateway_client(app, TEST_API_KEY)
    assert client.post("/v1/collections", json={"name": "kb"}).status_code == 201
    ingest = client.post(
        "/v1/collections/kb/documents",
        json={"documents": [{"id": "port", "text": FACT}, {"id": "gone", "text": GONE}]},
    )
    assert ingest.status_code == 200, ingest.text
    search = {"collection": "kb", "query": QUESTION}
    before = client.post("/v1/retrieve", json=search).json()
    assert before["data"][0]["doc_id"] == "port"

    store.broken = True
    calls: list[Callable[[], Response]] = [
        lambda: client.post("/v1/retrieve", json=search),
        # The engine is not even asked (it would answer engine_unavailable): no sources, no answer.
        lambda: client.post(
            "/v1/chat/completions",
            json={
                "model": "gemma",
                "messages": [{"role": "user", "content": QUESTION}],
                "rag": {"collection": "kb"},
            },
        ),
        lambda: client.post(
            "/v1/collections/kb/documents",
            json={"documents": [{"id": "new", "text": "A document written while Qdrant is down."}]},
        ),
        lambda: client.get("/v1/collections/kb/documents/port"),
        lambda: client.post("/v1/collections", json={"name": "other"}),
    ]
    for call in calls:
        _assert_store_503(call())
    # A delete needs only the catalog, which is the commit: it holds, and the points it retired
    # stay hidden until the store can delete them.
    assert client.delete("/v1/collections/kb/documents/gone").status_code == 204
    metrics = client.get("/metrics").text
    assert 'ragdock_retrieval_errors_total{collection="kb"} 2.0' in metrics  # retrieve + chat

    store.broken = False
    after = client.post("/v1/retrieve", json=search).json()
    expected = [s for s in before["data"] if s["doc_id"] == "port"]
    assert [s["chunk_id"] for s in after["data"]] == [s["chunk_id"] for s in expected]
    listed = client.get("/v1/collections/kb/documents").json()["data"]
    assert [d["id"] for d in listed] == ["port"]  # the failed ingest left no document behind
    retry = client.post(
        "/v1/collections/kb/documents",
        json={"documents": [{"id": "new", "text": "A document written once Qdrant is back."}]},
    )
    assert retry.status_code == 200 and retry.json()["added"] == 1
