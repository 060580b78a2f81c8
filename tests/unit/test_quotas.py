"""Quotas through the real gateway (`build_app`, the embedded Qdrant engine, no engine):

- rate budgets shared by two replicas over one control plane (SQLite here; the PostgreSQL half
  of `control_plane_url` runs in the full tier): N requests or tokens allowed in all, the next
  refused on the OTHER replica with 429, `Retry-After` and OpenAI's error naming the limit;
- a completion charged its worst case (`n`, `echo`, `logprobs`) and refused before the engine;
- storage quotas (collections, documents, bytes, the store's collections) refused whole with
  429 `insufficient_quota` naming the limit;
- a tenant admin drops the collection its tenant alone uses.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import Response

from ragdock.controlplane.store import sqlite_url
from server.openai_api.protocol import ChatCompletionRequest, CompletionRequest
from server.quotas import WINDOW_S, completion_cost
from tests.unit.gateway_app import TEST_API_KEY, build_test_app, gateway_client

ACME_ADMIN = "acme-admin-0123456789abcdef"
ACME_APP = "acme-app-0123456789abcdef"
BETA_INGEST = "beta-ingest-0123456789abcdef"
KEYS = json.dumps([
    {"key": TEST_API_KEY, "name": "admin", "scopes": ["platform"]},
    {"key": ACME_ADMIN, "name": "boss", "tenant": "acme", "scopes": ["admin"]},
    {"key": ACME_APP, "name": "app", "tenant": "acme", "scopes": ["chat", "ingest"]},
    {"key": BETA_INGEST, "name": "loader", "tenant": "beta", "scopes": ["chat", "ingest"]},
])  # fmt: skip
MAX_MODEL_LEN = 2048


def replica(home: Path, database_url: str, **overrides: Any) -> FastAPI:
    return build_test_app(
        home, api_keys=KEYS, database_url=database_url, engine_max_model_len=MAX_MODEL_LEN,
        **overrides,
    )  # fmt: skip


@pytest.fixture
def apps() -> Iterator[list[FastAPI]]:
    built: list[FastAPI] = []
    yield built
    for app in built:
        app.state.document_service.retriever.close()


def fresh_window() -> None:
    """Start the test well inside a rate window, so its counts are not split across two."""
    left = WINDOW_S - time.time() % WINDOW_S
    if left < 8:
        time.sleep(left + 0.1)


def refused(reply: Response, error_type: str) -> dict[str, str]:
    assert reply.status_code == 429, reply.text
    error: dict[str, str] = reply.json()["error"]
    assert error["type"] == error_type
    return error


def chat(max_tokens: int) -> dict[str, Any]:
    return {"model": "gemma", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": max_tokens}  # fmt: skip


# -- rate budgets over two replicas ------------------------------------------------------------
def test_two_replicas_share_a_tenants_request_limit(
    tmp_path: Path, control_plane_url: str, apps: list[FastAPI]
) -> None:
    apps += [replica(tmp_path / n, control_plane_url, tenant_requests_per_minute=3) for n in "ab"]
    a, b = (gateway_client(app, ACME_APP) for app in apps)
    fresh_window()
    assert a.get("/v1/models").status_code == 200
    assert b.get("/v1/collections").status_code == 200
    assert a.get("/v1/models").status_code == 200
    reply = b.get("/v1/models")  # the fourth, on the other replica
    error = refused(reply, "requests")
    assert error["code"] == "rate_limit_exceeded"
    assert (
        "requests per minute for tenant acme: 3 (RAGDOCK_TENANT_REQUESTS_PER_MINUTE)"
        in error["message"]
    )
    assert 1 <= int(reply.headers["retry-after"]) <= WINDOW_S
    # Another tenant's budget is its own; the platform key is exempt.
    assert gateway_client(apps[1], BETA_INGEST).get("/v1/models").status_code == 200
    assert gateway_client(apps[0], TEST_API_KEY).get("/v1/models").status_code == 200
    # A refused request is not charged: still refused, not counted twice.
    refused(a.get("/v1/models"), "requests")


def test_two_replicas_share_a_keys_token_limit(
    tmp_path: Path, control_plane_url: str, apps: list[FastAPI]
) -> None:
    # "hi" is 1 token by the estimate; max_tokens 400: 401 tokens a request.
    apps += [replica(tmp_path / n, control_plane_url, key_tokens_per_minute=1000) for n in "ab"]
    a, b = (gateway_client(app, ACME_APP) for app in apps)
    fresh_window()
    for client in (a, b):  # charged, then on to the engine (a closed port: 503)
        assert client.post("/v1/chat/completions", json=chat(400)).status_code == 503
    reply = b.post("/v1/chat/completions", json=chat(400))
    error = refused(reply, "tokens")
    assert error["code"] == "rate_limit_exceeded"
    assert (
        "tokens per minute for API key acme/app: 1000 (RAGDOCK_KEY_TOKENS_PER_MINUTE)"
        in error["message"]
    )
    assert "charged 401" in error["message"]
    assert int(reply.headers["retry-after"]) >= 1
    # What is left still fits a smaller request, on either replica.
    assert a.post("/v1/chat/completions", json=chat(100)).status_code == 503


def test_a_wide_completion_is_charged_its_worst_case_before_the_engine(
    tmp_path: Path, apps: list[FastAPI]
) -> None:
    body = {"model": "gemma", "prompt": "x" * 400, "n": 16, "echo": True, "logprobs": 5}
    # 100 prompt tokens, 16 choices of the whole context, the prompt echoed, doubled.
    worst = (100 + 16 * MAX_MODEL_LEN + 100) * 2
    assert completion_cost(CompletionRequest.model_validate(body), MAX_MODEL_LEN) == worst
    url = sqlite_url(tmp_path / "control.sqlite")
    apps.append(replica(tmp_path / "a", url, tenant_tokens_per_minute=worst - 1))
    client = gateway_client(apps[0], ACME_APP)
    error = refused(client.post("/v1/completions", json=body), "tokens")
    assert f"charged {worst}" in error["message"] and "alone is over it" in error["message"]
    assert "tokens per minute for tenant acme" in error["message"]
    smaller = {**body, "n": 1, "max_tokens": 16}  # 100 + 16 + 100, doubled: fits
    assert client.post("/v1/completions", json=smaller).status_code == 503  # reached the engine


@pytest.mark.parametrize(
    ("body", "cost"),
    [
        ({"prompt": "abcdefgh", "max_tokens": 10}, 2 + 10),
        ({"prompt": "abcdefgh", "max_tokens": 10, "best_of": 3, "n": 2}, 2 + 30),
        ({"prompt": "abcdefgh", "max_tokens": 10, "echo": True}, 2 + 10 + 2),
        ({"prompt": [1, 2, 3, 4], "max_tokens": 10}, 4 + 10),
        ({"prompt": "abcd", "max_tokens": 99_999}, 1 + MAX_MODEL_LEN),  # capped by the context
        ({"prompt": "abcd", "logprobs": 0, "max_tokens": 1}, (1 + 1) * 2),
    ],
)
def test_completion_cost_rule(body: dict[str, Any], cost: int) -> None:
    request = CompletionRequest.model_validate({"model": "gemma", **body})
    assert completion_cost(request, MAX_MODEL_LEN) == cost


def test_chat_cost_counts_every_message_and_max_completion_tokens() -> None:
    request = ChatCompletionRequest.model_validate({
        "model": "gemma", "n": 4, "max_completion_tokens": 50, "top_logprobs": 2,
        "messages": [{"role": "system", "content": "a" * 40},
                     {"role": "user", "content": "b" * 40}],
    })  # fmt: skip
    assert completion_cost(request, MAX_MODEL_LEN) == (20 + 4 * 50) * 2


def rate_rows(url: str) -> int:
    from sqlalchemy import create_engine, func, select

    from ragdock.controlplane.schema import rate_windows

    engine = create_engine(url)
    with engine.connect() as conn:
        count = int(conn.execute(select(func.count()).select_from(rate_windows)).scalar_one())
    engine.dispose()
    return count


def test_no_limit_writes_nothing(tmp_path: Path, apps: list[FastAPI]) -> None:
    url = sqlite_url(tmp_path / "control.sqlite")
    apps.append(replica(tmp_path / "a", url, tenant_tokens_per_minute=0))
    client = gateway_client(apps[0], ACME_APP)
    assert client.post("/v1/chat/completions", json=chat(10)).status_code == 503
    assert client.get("/v1/models").status_code == 200
    assert not apps[0].state.completion_service._budget.active
    assert rate_rows(url) == 0


def test_token_limits_alone_leave_other_routes_unwritten(
    tmp_path: Path, apps: list[FastAPI]
) -> None:
    url = sqlite_url(tmp_path / "control.sqlite")
    apps.append(replica(tmp_path / "a", url))  # the default: tenant tokens per minute only
    client = gateway_client(apps[0], ACME_APP)
    assert client.get("/v1/models").status_code == 200
    assert client.get("/v1/collections").status_code == 200
    assert rate_rows(url) == 0
    assert client.post("/v1/chat/completions", json=chat(10)).status_code == 503
    assert rate_rows(url) == 1  # the tenant's row, charged by the completion


# -- storage quotas ------------------------------------------------------------------------------
def quota_error(reply: Response, setting: str) -> str:
    error = refused(reply, "insufficient_quota")
    assert error["code"] == "insufficient_quota"
    assert setting in error["message"], error["message"]
    assert "retry-after" not in reply.headers  # waiting frees nothing
    return error["message"]


def storage_app(tmp_path: Path, apps: list[FastAPI], **limits: Any) -> FastAPI:
    apps.append(replica(tmp_path / "a", sqlite_url(tmp_path / "control.sqlite"), **limits))
    return apps[-1]


def test_a_tenants_collections_are_bounded_and_a_drop_frees_one(
    tmp_path: Path, apps: list[FastAPI]
) -> None:
    app = storage_app(tmp_path, apps, tenant_max_collections=2)
    loader, boss = gateway_client(app, ACME_APP), gateway_client(app, ACME_ADMIN)
    for name in ("one", "two"):
        assert loader.post("/v1/collections", json={"name": name}).status_code == 201
    message = quota_error(
        loader.post("/v1/collections", json={"name": "three"}), "RAGDOCK_TENANT_MAX_COLLECTIONS"
    )
    assert "collections for tenant acme: 2" in message
    store = app.state.document_service.retriever.store
    assert "three" not in store.list_collections()  # refused before the store made it
    assert boss.delete("/v1/collections/one").status_code == 204
    assert loader.post("/v1/collections", json={"name": "three"}).status_code == 201
    # Another tenant is not counted against acme.
    beta = gateway_client(app, BETA_INGEST)
    assert beta.post("/v1/collections", json={"name": "beta-kb"}).status_code == 201


def test_the_store_bounds_all_collections_together(tmp_path: Path, apps: list[FastAPI]) -> None:
    app = storage_app(tmp_path, apps, max_collections=2)
    admin = gateway_client(app, TEST_API_KEY)
    for name in ("one", "two"):
        assert admin.post("/v1/collections", json={"name": name}).status_code == 201
    message = quota_error(
        admin.post("/v1/collections", json={"name": "three"}), "RAGDOCK_MAX_COLLECTIONS"
    )
    assert "collections in this store: 2" in message
    # A create of an existing name adds nothing and is not refused.
    assert admin.post("/v1/collections", json={"name": "one"}).status_code == 201


def docs(*items: tuple[str, str]) -> dict[str, Any]:
    return {"documents": [{"id": doc_id, "text": text} for doc_id, text in items]}


def test_documents_and_bytes_are_bounded_per_tenant(tmp_path: Path, apps: list[FastAPI]) -> None:
    app = storage_app(tmp_path, apps, tenant_max_documents=2, tenant_max_bytes=100)
    client = gateway_client(app, ACME_APP)
    assert client.post("/v1/collections", json={"name": "kb"}).status_code == 201
    url = "/v1/collections/kb/documents"
    message = quota_error(
        client.post(url, json=docs(("a", "x"), ("b", "y"), ("c", "z"))),
        "RAGDOCK_TENANT_MAX_DOCUMENTS",
    )
    assert "documents for tenant acme: 2" in message
    listed = client.get(url).json()["data"]
    assert listed == []  # the whole request was refused
    assert client.post(url, json=docs(("a", "a" * 60))).status_code == 200
    assert client.post(url, json=docs(("a", "b" * 90))).status_code == 200  # replaces: +30
    message = quota_error(client.post(url, json=docs(("b", "c" * 20))), "RAGDOCK_TENANT_MAX_BYTES")
    assert "stored bytes for tenant acme: 100" in message
    assert client.post(url, json=docs(("b", "c" * 10))).status_code == 200  # exactly 100
    assert client.delete(f"{url}/a").status_code == 204  # a delete frees its bytes
    assert client.post(url, json=docs(("c", "d" * 80))).status_code == 200


# -- a tenant admin drops what its tenant created ----------------------------------------------
def test_a_tenant_admin_drops_its_own_collection_whole(tmp_path: Path, apps: list[FastAPI]) -> None:
    app = storage_app(tmp_path, apps)
    boss, loader = gateway_client(app, ACME_ADMIN), gateway_client(app, ACME_APP)
    retriever = app.state.document_service.retriever
    assert loader.post("/v1/collections", json={"name": "mine"}).status_code == 201
    assert loader.post("/v1/collections/mine/documents", json=docs(("a", "alpha"))).is_success
    assert boss.delete("/v1/collections/mine").status_code == 204
    assert "mine" not in retriever.store.list_collections()  # its shard and threads are gone
    assert retriever.catalog.generation("mine") is None
    assert retriever.catalog.usage("acme").collections == 0


def test_a_tenant_admin_only_leaves_a_collection_another_tenant_uses(
    tmp_path: Path, apps: list[FastAPI]
) -> None:
    app = storage_app(tmp_path, apps)
    boss, loader = gateway_client(app, ACME_ADMIN), gateway_client(app, ACME_APP)
    beta = gateway_client(app, BETA_INGEST)
    retriever = app.state.document_service.retriever
    assert loader.post("/v1/collections", json={"name": "shared"}).status_code == 201
    assert loader.post("/v1/collections/shared/documents", json=docs(("a", "alpha"))).is_success
    assert beta.post("/v1/collections", json={"name": "shared"}).status_code == 201  # joins
    assert beta.post("/v1/collections/shared/documents", json=docs(("b", "beta"))).is_success
    assert boss.delete("/v1/collections/shared").status_code == 204
    assert "shared" in retriever.store.list_collections()
    assert [d["id"] for d in beta.get("/v1/collections/shared/documents").json()["data"]] == ["b"]
    assert loader.get("/v1/collections/shared/documents").status_code == 404  # acme left it


def test_concurrent_charges_on_two_replicas_admit_exactly_the_limit(control_plane_url: str) -> None:
    """The increment is atomic: 2 replicas x 8 threads racing for 50 requests get 50, no more
    (no lost update, no double count), and the rest are refused."""
    from concurrent.futures import ThreadPoolExecutor

    from ragdock.controlplane import open_control_plane
    from server.auth import Principal
    from server.errors import RateLimitError
    from server.quotas import RateBudget, RateLimits

    planes = [open_control_plane(control_plane_url, Path("/nonexistent")) for _ in range(2)]
    budgets = [RateBudget(plane, RateLimits(tenant_requests=50)) for plane in planes]
    callers = [Principal(f"app-{i}", "acme", frozenset({"chat"})) for i in range(2)]
    fresh_window()

    def attempt(i: int) -> bool:
        try:
            budgets[i % 2].charge(callers[i % 2], tokens=1)
        except RateLimitError:
            return False
        return True

    try:
        with ThreadPoolExecutor(16) as pool:
            admitted = list(pool.map(attempt, range(80)))
    finally:
        for plane in planes:
            plane.close()
    assert sum(admitted) == 50
