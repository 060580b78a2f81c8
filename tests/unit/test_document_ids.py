"""Every document id the API accepts can be fetched and deleted: `/` (the ingest CLI names files
by their relative path), spaces, `%`, `?`, `#`, non-ASCII, sent as is or percent-encoded the way
the console (encodeURIComponent) and the ingest CLI do. The ids no URL can carry (`.` and `..`
segments, which clients drop) are refused at ingest with a 400 naming the id."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from tests.unit.gateway_app import TEST_API_KEY, build_test_app, gateway_client

IDS = [
    "guides/setup.md",
    "deep/er/still/here.txt",
    "/leading-slash",
    "trailing-slash/",
    "a//double",
    "spaces and ü?#&=+.md",
    # A '%' then two hex digits is left out: Starlette's TestClient decodes the path twice
    # (httpx's url.path is decoded already), which uvicorn does not.
    "50%-off",
]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    app = build_test_app(tmp_path_factory.mktemp("doc-ids"))
    yield app
    app.state.document_service.retriever.close()


@pytest.fixture
def http(app: FastAPI) -> TestClient:
    client = gateway_client(app, TEST_API_KEY)
    assert client.post("/v1/collections", json={"name": "ids"}).status_code in (200, 201)
    return client


def encoded(doc_id: str) -> str:
    """As encodeURIComponent does (the console)."""
    return quote(doc_id, safe="-_.!~*'()")


def ingest(http: TestClient, *ids: str) -> None:
    docs = [{"id": i, "text": f"The text of {i}."} for i in ids]
    reply = http.post("/v1/collections/ids/documents", json={"documents": docs})
    assert reply.status_code == 200, reply.text


def listed(http: TestClient) -> set[str]:
    page = http.get("/v1/collections/ids/documents", params={"limit": 500}).json()
    return {d["id"] for d in page["data"]}


@pytest.mark.parametrize("doc_id", IDS)
def test_an_id_is_fetched_and_deleted_percent_encoded(http: TestClient, doc_id: str) -> None:
    ingest(http, doc_id)
    assert doc_id in listed(http)
    path = f"/v1/collections/ids/documents/{encoded(doc_id)}"
    fetched = http.get(path)
    assert fetched.status_code == 200, fetched.text
    assert fetched.json()["id"] == doc_id
    assert doc_id in fetched.json()["chunks"][0]["text"]
    assert http.delete(path).status_code == 204
    assert doc_id not in listed(http)
    gone = http.get(path)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "document_not_found"


def test_an_id_with_slashes_is_fetched_and_deleted_as_is(http: TestClient) -> None:
    ingest(http, "notes/2024/q3.md", "notes/2024")
    fetched = http.get("/v1/collections/ids/documents/notes/2024/q3.md")
    assert fetched.status_code == 200 and fetched.json()["id"] == "notes/2024/q3.md"
    # A prefix of another id is a document of its own, not a folder.
    assert http.get("/v1/collections/ids/documents/notes/2024").json()["id"] == "notes/2024"
    assert http.delete("/v1/collections/ids/documents/notes/2024/q3.md").status_code == 204
    assert {"notes/2024"} <= listed(http) and "notes/2024/q3.md" not in listed(http)


@pytest.mark.parametrize("doc_id", ["..", ".", "a/../b", "a/./b", "../up", "down/.."])
def test_ids_no_url_can_carry_are_refused_at_ingest(http: TestClient, doc_id: str) -> None:
    reply = http.post(
        "/v1/collections/ids/documents", json={"documents": [{"id": doc_id, "text": "x"}]}
    )
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and "segment" in error["message"]
    assert error["param"] == "documents.0.id"
    upload = http.post(
        "/v1/collections/ids/documents/upload",
        files=[("files", ("note.md", b"# Note\nSome text."))],
        data={"doc_id": doc_id},
    )
    assert upload.status_code == 400, upload.text
    assert upload.json()["error"]["param"] == "doc_id"
    assert doc_id not in listed(http)


def test_an_upload_whose_id_is_too_long_is_a_400(http: TestClient) -> None:
    upload = http.post(
        "/v1/collections/ids/documents/upload",
        files=[("files", ("note.md", b"# Note\nSome text."))],
        data={"doc_id": "x" * 300},
    )
    assert upload.status_code == 400, upload.text
    error = upload.json()["error"]
    assert error["param"] == "doc_id" and "256" in error["message"]
