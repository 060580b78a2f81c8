"""Authorization in one place, proven by walking the real app: every `/v1/` route declares the
one scope the README's route table gives it, keys without it get 403, the door answers 401
before reading a body, keyless mode refuses browsers, and no route lets one tenant's admin or
ingest key read, list, change or delete anything of another tenant's."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.testclient import TestClient

from ragdock.settings import Settings
from server.access import AccessControl
from server.auth import KeyRing
from tests import contract_samples as samples
from tests.unit.gateway_app import build_test_app, gateway_client
from tests.unit.test_adapter_registry import make_adapter

README = Path(__file__).parents[2] / "README.md"

# The route table: (method, path) -> the scope it needs. The README's table must say the same.
ROUTE_SCOPES = {
    ("POST", "/v1/chat/completions"): "chat",
    ("POST", "/v1/completions"): "chat",
    ("GET", "/v1/models"): "chat",
    ("GET", "/v1/models/{model:path}"): "chat",
    ("GET", "/v1/me"): "chat",
    ("GET", "/v1/status"): "chat",
    ("POST", "/v1/retrieve"): "chat",
    ("POST", "/v1/embeddings"): "chat",
    ("POST", "/v1/collections"): "ingest",
    ("GET", "/v1/collections"): "ingest",
    ("DELETE", "/v1/collections/{collection}"): "admin",
    ("POST", "/v1/collections/{collection}/documents"): "ingest",
    ("POST", "/v1/collections/{collection}/documents/upload"): "ingest",
    ("GET", "/v1/collections/{collection}/documents"): "ingest",
    ("GET", "/v1/collections/{collection}/documents/{doc_id:path}"): "ingest",
    ("DELETE", "/v1/collections/{collection}/documents/{doc_id:path}"): "ingest",
    ("POST", "/v1/sources"): "ingest",
    ("GET", "/v1/sources"): "ingest",
    ("GET", "/v1/sources/{name}"): "ingest",
    ("DELETE", "/v1/sources/{name}"): "ingest",
    ("POST", "/v1/sources/{name}/sync"): "ingest",
    ("GET", "/v1/jobs"): "ingest",
    ("GET", "/v1/jobs/{job_id}"): "ingest",
    ("POST", "/v1/jobs/{job_id}/cancel"): "ingest",
    ("GET", "/v1/adapters"): "admin",
    ("POST", "/v1/adapters"): "platform",
    ("POST", "/v1/adapters/upload"): "admin",
    ("GET", "/v1/adapters/{name}"): "admin",
    ("GET", "/v1/adapters/{name}/audit"): "admin",
    ("GET", "/v1/adapters/{name}/{version}"): "admin",
    ("PUT", "/v1/adapters/{name}/{version}/eval-report"): "admin",
    ("POST", "/v1/adapters/{name}/{version}/promote"): "admin",
    ("POST", "/v1/adapters/{name}/rollback"): "admin",
    ("DELETE", "/v1/adapters/{name}/{version}"): "admin",
    ("GET", "/v1/readers"): "admin",
    ("POST", "/v1/readers"): "platform",
    ("GET", "/v1/readers/{name}"): "admin",
    ("GET", "/v1/readers/{name}/audit"): "admin",
    ("GET", "/v1/readers/{name}/{version}"): "admin",
    ("POST", "/v1/readers/{name}/{version}/promote"): "platform",
    ("POST", "/v1/readers/{name}/rollback"): "platform",
    ("DELETE", "/v1/readers/{name}/{version}"): "platform",
}
# One key per scope, tenant "acme"; and a second tenant with an admin and an ingest key.
KEYS = {
    "chat": "acme-chat-0123456789ab",
    "ingest": "acme-ingest-0123456789",
    "admin": "acme-admin-0123456789a",
    "platform": "platform-0123456789abc",
    "beta-admin": "beta-admin-0123456789a",
    "beta-ingest": "beta-ingest-0123456789",
}
KEYS_JSON = json.dumps(
    [
        {"key": KEYS["chat"], "name": "acme-chat", "tenant": "acme", "scopes": ["chat"]},
        {"key": KEYS["ingest"], "name": "acme-ingest", "tenant": "acme", "scopes": ["ingest"]},
        {"key": KEYS["admin"], "name": "acme-admin", "tenant": "acme", "scopes": ["admin"]},
        {"key": KEYS["platform"], "name": "ops", "tenant": "ops", "scopes": ["platform"]},
        {"key": KEYS["beta-admin"], "name": "beta-admin", "tenant": "beta", "scopes": ["admin"]},
        {"key": KEYS["beta-ingest"], "name": "beta-ingest", "tenant": "beta",
         "scopes": ["ingest"]},
    ]
)  # fmt: skip
RANK = {"chat": 0, "ingest": 0, "admin": 1, "platform": 2}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    app = build_test_app(tmp_path_factory.mktemp("authz"), api_keys=KEYS_JSON)
    yield app
    app.state.document_service.retriever.close()


def client(app: FastAPI, who: str) -> TestClient:
    return gateway_client(app, KEYS[who])


def declared_scope(route: APIRoute) -> str | None:
    """The scope of the `authorized(...)` dependency the route declares (searched deeply)."""
    pending = list(route.dependant.dependencies)
    while pending:
        dependency = pending.pop()
        scope = getattr(dependency.call, "required_scope", None)
        if scope is not None:
            return str(scope)
        pending.extend(dependency.dependencies)
    return None


def v1_routes(app: FastAPI) -> Iterator[tuple[str, str, APIRoute]]:
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path.startswith("/v1/"):
            for method in sorted(route.methods):
                yield method, route.path, route


def grants(held: str, needed: str) -> bool:
    """Whether a key with scope `held` may use a route that needs `needed`."""
    if held == needed:
        return True
    return held in ("admin", "platform") and RANK[held] >= RANK[needed]


def test_every_route_declares_the_scope_of_the_route_table(app: FastAPI) -> None:
    found = {(method, path): declared_scope(route) for method, path, route in v1_routes(app)}
    assert found == ROUTE_SCOPES


def test_the_readme_route_table_says_the_same(app: FastAPI) -> None:
    text = README.read_text()
    for (method, path), scope in ROUTE_SCOPES.items():
        shown = path.replace(":path}", "}")
        row = re.search(rf"^\| `{method} {re.escape(shown)}` \| ([a-z]+) \|", text, re.M)
        assert row is not None, f"README has no row for {method} {shown}"
        assert row.group(1) == scope, f"README says {row.group(1)} for {method} {shown}"


@pytest.mark.parametrize("held", ["chat", "ingest", "admin", "platform"])
def test_a_key_gets_403_exactly_on_the_routes_its_scope_does_not_grant(
    app: FastAPI, held: str
) -> None:
    caller = client(app, held)
    for (method, path), needed in ROUTE_SCOPES.items():
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        reply = caller.request(method, concrete, json={})
        refused = reply.status_code == 403 and reply.json()["error"]["code"] == "missing_scope"
        assert refused == (not grants(held, needed)), (held, method, path, reply.text[:200])


def test_the_door_answers_401_without_reading_the_body() -> None:
    """A request with a wrong key gets 401 and its body is never received."""
    import asyncio

    async def never_called() -> FastAPI:
        raise AssertionError("the app behind the door was reached")

    keyring = KeyRing(Settings.model_validate({"api_keys": KEYS_JSON}).api_keys)
    door = AccessControl(never_called, keyring=keyring)  # type: ignore[arg-type]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body was read")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": "POST", "path": "/v1/adapters/upload", "query_string": b"",
        "headers": [(b"authorization", b"Bearer wrong-0123456789abcdef"),
                    (b"content-length", str(500 << 20).encode())],
    }  # fmt: skip
    asyncio.run(door(scope, receive, send))  # type: ignore[arg-type]
    assert sent[0]["status"] == 401
    assert json.loads(sent[1]["body"])["error"]["code"] == "invalid_api_key"


@pytest.fixture(scope="module")
def keyless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    app = build_test_app(tmp_path_factory.mktemp("keyless"), api_keys=[])
    yield app
    app.state.document_service.retriever.close()


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({"host": "localhost:8000"}, True),
        ({"host": "127.0.0.1:8000"}, True),
        ({"host": "[::1]:8000"}, True),
        ({"host": "localhost:8000", "origin": "http://localhost:3000"}, True),
        ({"host": "evil.example:8000"}, False),  # DNS rebinding: a page under its own name
        ({"host": "localhost:8000", "origin": "https://evil.example"}, False),
        ({"host": "localhost:8000", "origin": "null"}, False),
    ],
)
def test_keyless_mode_refuses_browser_pages(
    keyless: FastAPI, headers: dict[str, str], allowed: bool
) -> None:
    caller = TestClient(keyless, raise_server_exceptions=False)
    reply = caller.post(
        "/v1/collections", json={"name": "page-made"}, headers=headers
    )  # a CORS-simple POST would look the same
    if allowed:
        assert reply.status_code in (201, 409), reply.text
    else:
        assert reply.status_code == 403
        assert reply.json()["error"]["code"] == "forbidden_origin"


def test_keyless_mode_never_grants_admin(keyless: FastAPI) -> None:
    caller = TestClient(keyless, raise_server_exceptions=False, headers={"host": "localhost"})
    assert caller.post("/v1/collections", json={"name": "mine"}).status_code == 201
    reply = caller.delete("/v1/collections/mine")
    assert reply.status_code == 403 and reply.json()["error"]["code"] == "missing_scope"
    assert caller.get("/v1/adapters").status_code == 403


def test_no_route_lets_one_tenant_touch_anothers_things(app: FastAPI, tmp_path: Path) -> None:
    acme, ops = client(app, "admin"), client(app, "platform")
    assert acme.post("/v1/collections", json={"name": "acme-kb"}).status_code == 201
    secret = {"id": "secret", "text": "The acme vault code is 4471.", "title": "Vault"}
    ingest = acme.post("/v1/collections/acme-kb/documents", json={"documents": [secret]})
    assert ingest.status_code == 200, ingest.text
    adapter = make_adapter(tmp_path / "lora")
    files = [("files", (p.name, p.read_bytes())) for p in sorted(adapter.iterdir())]
    pushed = acme.post("/v1/adapters/upload", files=files, data={"name": "acme-bot"})
    assert pushed.status_code == 201, pushed.text
    shared = ops.post("/v1/adapters/upload", files=files, data={"name": "shared-bot"})
    assert shared.status_code == 201, shared.text
    report = samples.eval_report(True, name="acme-bot")
    assert acme.put("/v1/adapters/acme-bot/v1/eval-report", json=report).status_code == 200

    for who in ("beta-admin", "beta-ingest"):
        beta = client(app, who)
        # Collections: not listed (before beta has put anything in it).
        listed = beta.get("/v1/collections").json()["data"]
        assert "acme-kb" not in [c["name"] for c in listed]
        # Documents: not listed, not readable, not deletable, not overwritable: for beta the
        # collection does not exist (test_collection_names: exactly as a free name).
        page = beta.get("/v1/collections/acme-kb/documents")
        assert page.status_code == 404 and page.json()["error"]["code"] == "collection_not_found"
        assert beta.get("/v1/collections/acme-kb/documents/secret").status_code == 404
        assert beta.delete("/v1/collections/acme-kb/documents/secret").status_code == 404
        own = {"id": "secret", "text": "beta's own note", "title": "Mine"}
        put = beta.post("/v1/collections/acme-kb/documents", json={"documents": [own]})
        assert put.status_code == 404
        if who == "beta-admin":
            # Once beta creates the name too (it joins it), its drop takes its own tenant's
            # documents, never acme's.
            assert beta.post("/v1/collections", json={"name": "acme-kb"}).status_code == 201
            put = beta.post("/v1/collections/acme-kb/documents", json={"documents": [own]})
            assert put.status_code == 200, put.text
            assert beta.delete("/v1/collections/acme-kb").status_code == 204
            found = beta.post("/v1/retrieve", json={"collection": "acme-kb", "query": "vault"})
            assert found.status_code == 404
            # Adapters: another tenant's does not exist; a shared one cannot be changed.
            names = [a["name"] for a in beta.get("/v1/adapters").json()["data"]]
            assert "acme-bot" not in names and "shared-bot" in names
            for method, path in [
                ("GET", "/v1/adapters/acme-bot"), ("GET", "/v1/adapters/acme-bot/audit"),
                ("GET", "/v1/adapters/acme-bot/v1"),
                ("PUT", "/v1/adapters/acme-bot/v1/eval-report"),
                ("POST", "/v1/adapters/acme-bot/v1/promote"),
                ("POST", "/v1/adapters/acme-bot/rollback"),
                ("DELETE", "/v1/adapters/acme-bot/v1"),
            ]:  # fmt: skip
                body = {"alias": "prod"} if "promote" in path or "rollback" in path else {}
                reply = beta.request(method, path, json=body)
                assert reply.status_code == 404, (method, path, reply.text)
            upload = beta.post("/v1/adapters/upload", files=files, data={"name": "acme-bot"})
            assert upload.status_code == 404
            promote = beta.post("/v1/adapters/shared-bot/v1/promote", json={"alias": "prod"})
            assert promote.status_code == 403
            models = [m["id"] for m in beta.get("/v1/models").json()["data"]]
            assert not any(m.startswith("acme-bot") for m in models)
            chat = beta.post(
                "/v1/chat/completions",
                json={"model": "acme-bot@v1", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert chat.status_code == 404 and chat.json()["error"]["code"] == "model_not_found"

    # Acme's things are all still there, unchanged.
    doc = acme.get("/v1/collections/acme-kb/documents/secret").json()
    assert "4471" in doc["chunks"][0]["text"]
    assert [a["name"] for a in acme.get("/v1/adapters").json()["data"]] == [
        "acme-bot", "shared-bot",
    ]  # fmt: skip
    assert [e["actor"] for e in acme.get("/v1/adapters/acme-bot/audit").json()] == [
        "acme/acme-admin", "acme/acme-admin",
    ]  # fmt: skip
    acme_models = [m["id"] for m in acme.get("/v1/models").json()["data"]]
    assert "acme-bot@v1" in acme_models
