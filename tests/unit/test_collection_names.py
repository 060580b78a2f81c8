"""A collection another tenant made answers exactly as a name nobody uses, on every route that
takes a collection (documents, retrieve, chat with RAG, drop): same status, same body but for the
name. Creating the name joins it, as creating a free name makes it; each tenant still sees only
its own documents in it, and a tenant admin's drop leaves it (the name is no longer its)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from ragdock.controlplane import open_control_plane
from retrieval.catalog import Catalog
from tests.unit.gateway_app import build_test_app, gateway_client
from tests.unit.test_authorization import KEYS, KEYS_JSON

TAKEN, FREE = "acme-kb", "nobody-kb"  # made by acme / by no one
SECRET = {"id": "vault", "text": "The acme vault code is 4471.", "title": "Vault"}


@pytest.fixture
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    app = build_test_app(tmp_path_factory.mktemp("names"), api_keys=KEYS_JSON, engine_model="gemma")
    yield app
    app.state.document_service.retriever.close()


@pytest.fixture
def acme(app: FastAPI) -> TestClient:
    acme = gateway_client(app, KEYS["admin"])
    assert acme.post("/v1/collections", json={"name": TAKEN}).status_code == 201
    ingest = acme.post(f"/v1/collections/{TAKEN}/documents", json={"documents": [SECRET]})
    assert ingest.status_code == 200, ingest.text
    return acme


def probes(name: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, request arguments) of every route that takes a collection name."""
    question = [{"role": "user", "content": "What is the vault code?"}]
    note = {"id": "note", "text": "beta's own note about pumps.", "title": "Note"}
    return [
        ("GET", f"/v1/collections/{name}/documents", {}),
        ("GET", f"/v1/collections/{name}/documents/vault", {}),
        ("DELETE", f"/v1/collections/{name}/documents/vault", {}),
        ("POST", "/v1/retrieve", {"json": {"collection": name, "query": "vault code"}}),
        ("POST", "/v1/retrieve", {"json": {"collection": name, "query": "the", "mode": "sparse"}}),
        ("POST", "/v1/chat/completions",
         {"json": {"model": "gemma", "messages": question, "rag": {"collection": name}}}),
        ("POST", "/v1/chat/completions", {"json": {
            "model": "gemma", "messages": question, "rag": {"collection": name}, "stream": True,
        }}),
        ("POST", f"/v1/collections/{name}/documents", {"json": {"documents": [note]}}),
        ("POST", f"/v1/collections/{name}/documents/upload",
         {"files": [("files", ("note.md", b"# Note\nAbout pumps."))]}),
        ("DELETE", f"/v1/collections/{name}", {}),
    ]  # fmt: skip


def answers(client: TestClient, name: str) -> list[tuple[int, str]]:
    """Each probe's status and body, the name in it replaced, so two names compare."""
    out = []
    for method, path, kwargs in probes(name):
        reply = client.request(method, path, **kwargs)
        out.append((reply.status_code, reply.text.replace(name, "<name>")))
    return out


@pytest.mark.parametrize("who", ["beta-admin", "beta-ingest"])
def test_another_tenants_collection_answers_as_a_free_name(
    app: FastAPI, acme: TestClient, who: str
) -> None:
    beta = gateway_client(app, KEYS[who])
    taken, free = answers(beta, TAKEN), answers(beta, FREE)
    for (method, path, _), one, other in zip(probes("<name>"), taken, free, strict=True):
        assert one == other, (method, path, one, other)
    # And what they answer is that the collection does not exist; or, on the routes whose
    # scope an ingest key lacks (retrieve, chat, drop), 403 before any name is looked at.
    lacks_scope = {3, 4, 5, 6, 9} if who == "beta-ingest" else set()
    assert [status for status, _ in taken] == [
        403 if i in lacks_scope else 404 for i in range(len(taken))
    ], taken
    assert all("collection_not_found" in body for status, body in taken if status == 404)
    listed = [c["name"] for c in beta.get("/v1/collections").json()["data"]]
    assert TAKEN not in listed and FREE not in listed
    # Nothing of acme's changed.
    assert acme.get(f"/v1/collections/{TAKEN}/documents/vault").json()["id"] == "vault"


def test_creating_a_taken_name_joins_it_and_shows_only_ones_own_documents(
    app: FastAPI, acme: TestClient
) -> None:
    beta = gateway_client(app, KEYS["beta-admin"])
    for name in (TAKEN, FREE):
        made = beta.post("/v1/collections", json={"name": name})
        assert (made.status_code, made.text.replace(name, "<name>")) == (
            201, '{"object":"collection","name":"<name>"}',
        )  # fmt: skip
    note = {"id": "note", "text": "Beta's pump is serviced every 30 days.", "title": "Pump"}
    for name in (TAKEN, FREE):
        ingest = beta.post(f"/v1/collections/{name}/documents", json={"documents": [note]})
        assert ingest.status_code == 200, ingest.text
    taken, free = answers_of_a_member(beta, TAKEN), answers_of_a_member(beta, FREE)
    assert taken == free
    found = beta.post("/v1/retrieve", json={"collection": TAKEN, "query": "vault code 4471"})
    assert {s["doc_id"] for s in found.json()["data"]} == {"note"}
    listed = [c["name"] for c in beta.get("/v1/collections").json()["data"]]
    assert TAKEN in listed and FREE in listed

    # A tenant admin's drop takes its documents and its name out: the collection answers it
    # as a free name again, and acme's documents stay.
    for name in (TAKEN, FREE):
        assert beta.delete(f"/v1/collections/{name}").status_code == 204
    assert answers(beta, TAKEN) == answers(beta, FREE)
    assert beta.get(f"/v1/collections/{TAKEN}/documents").status_code == 404
    assert acme.get(f"/v1/collections/{TAKEN}/documents/vault").json()["id"] == "vault"
    assert TAKEN in [c["name"] for c in acme.get("/v1/collections").json()["data"]]


def answers_of_a_member(client: TestClient, name: str) -> list[tuple[int, str]]:
    """What a tenant that joined `name` reads back from it (no writes)."""
    reads = [
        client.get(f"/v1/collections/{name}/documents"),
        client.get(f"/v1/collections/{name}/documents/note"),
        client.get(f"/v1/collections/{name}/documents/vault"),
        client.post("/v1/retrieve", json={"collection": name, "query": "pump serviced"}),
    ]
    return [(r.status_code, _without_times(r.json(), name)) for r in reads]


def _without_times(body: Any, name: str) -> str:
    """The body with the name and the ingest times (which differ by milliseconds) taken out."""
    text = json.dumps(body, sort_keys=True).replace(name, "<name>")
    return re.sub(r'"updated_at": "[^"]*"', '"updated_at": "<t>"', text)


def test_the_catalog_keeps_who_may_see_a_name(control_plane_url: str, tmp_path: Path) -> None:
    """Join, leave and drop on both control planes (SQLite here, PostgreSQL in the full tier)."""
    plane = open_control_plane(control_plane_url, tmp_path)
    try:
        catalog = Catalog(plane)
        first = catalog.ensure("kb", created_by="acme")
        assert catalog.ensure("kb", created_by="beta") == first  # a create does not take it
        assert (catalog.visible("kb", "acme"), catalog.visible("kb", "beta")) == (True, False)
        catalog.join("kb", "beta")
        catalog.join("kb", "beta")  # idempotent
        assert catalog.visible("kb", "beta") and catalog.names("beta") == ["kb"]
        assert catalog.names("gamma") == []
        catalog.remove_tenant("kb", first, "beta")
        catalog.remove_tenant("kb", first, "acme")
        assert catalog.names("beta") == catalog.names("acme") == []
        catalog.join("kb", "beta")
        catalog.drop("kb")
        # A re-created namesake starts without the old members.
        catalog.ensure("kb", created_by="gamma")
        assert catalog.names("beta") == [] and catalog.names("gamma") == ["kb"]
        with pytest.raises(KeyError):
            catalog.join("nowhere", "beta")
    finally:
        plane.close()
