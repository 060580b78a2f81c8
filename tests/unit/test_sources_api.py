"""`/v1/sources` and `/v1/jobs` on the real gateway app (embedded Qdrant, real control plane,
its own sync worker thread), with the hashing embedder: a folder source is created, synced by
the gateway's worker and followed through its job; the tenant rules, the confinement and the
refusals answer in OpenAI's error shape; no credential comes back or reaches a log line."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from tests.unit.gateway_app import build_test_app, gateway_client

ACME, ACME_CHAT, BETA = "acme-ingest-0123456789", "acme-chat-0123456789", "beta-ingest-0123456789"
KEYS = json.dumps([
    {"key": ACME, "name": "acme-docs", "tenant": "acme", "scopes": ["ingest"]},
    {"key": ACME_CHAT, "name": "acme-app", "tenant": "acme", "scopes": ["chat"]},
    {"key": BETA, "name": "beta-docs", "tenant": "beta", "scopes": ["ingest"]},
])  # fmt: skip
SECRET = "s3cr3t-Pa55word-never-shown"


@pytest.fixture(scope="module")
def share(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("share")
    handbook = root / "acme" / "handbook"
    (handbook / "ops").mkdir(parents=True)
    (handbook / "intro.md").write_text("# Intro\nThe welcome desk opens at nine.")
    (handbook / "ops" / "pump.md").write_text("# Pump\nRestart the pump with lever seven.")
    (handbook / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    (root / "beta").mkdir()
    db = sqlite3.connect(root / "acme" / "t.db")
    db.execute("CREATE TABLE t (id INTEGER, title TEXT, text TEXT, updated_at TEXT)")
    db.execute("INSERT INTO t VALUES (1, 'One', 'The first row.', '2026-01-01')")
    db.commit()
    return root


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, share: Path) -> Iterator[FastAPI]:
    home = tmp_path_factory.mktemp("sources")
    app = build_test_app(
        home, api_keys=KEYS, source_roots=str(share / "{tenant}"),
        source_secrets_dir=str(home / "secrets"), job_lease_s=5.0,
    )  # fmt: skip
    app.state.source_service.queue.lease_s = 5.0
    yield app
    app.state.document_service.retriever.close()


@pytest.fixture(scope="module")
def acme(app: FastAPI) -> Iterator[TestClient]:
    with gateway_client(app, ACME) as client:  # the lifespan runs: the worker thread too
        yield client


def _error(reply: Any) -> dict[str, Any]:
    body = reply.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"}, body
    return dict(body["error"])


def _wait(client: TestClient, job_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] not in ("queued", "running"):
            return dict(job)
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job['state']}")


def test_a_folder_source_is_synced_by_the_gateways_worker(acme: TestClient, share: Path) -> None:
    reply = acme.post("/v1/sources", json={
        "name": "handbook", "collection": "kb",
        "spec": {"kind": "folder", "path": str(share / "acme" / "handbook")},
    })  # fmt: skip
    assert reply.status_code == 201, reply.text
    source = reply.json()
    assert source["active_job"]["state"] in ("queued", "running")
    job = _wait(acme, source["active_job"]["id"])
    assert job["state"] == "succeeded"
    assert (job["progress"]["added"], job["progress"]["failed"]) == (2, 1)
    assert [e["item"] for e in job["errors"]] == ["broken.pdf"]
    docs = acme.get("/v1/collections/kb/documents").json()["data"]
    assert sorted(d["id"] for d in docs) == ["handbook/intro.md", "handbook/ops/pump.md"]
    shown = acme.get("/v1/sources/handbook").json()
    assert shown["last_job"]["id"] == job["id"] and shown["last_success_at"] is not None
    assert shown["syncs"] == 1 and shown["active_job"] is None

    again = acme.post("/v1/sources/handbook/sync", json={"full": True})
    assert again.status_code == 202
    conflict = acme.post("/v1/sources/handbook/sync")
    if conflict.status_code == 409:  # the first is still queued or running
        assert _error(conflict)["code"] == "job_already_active"
        assert again.json()["id"] in _error(conflict)["message"]
    assert _wait(acme, again.json()["id"])["progress"]["unchanged"] == 2
    listed = acme.get("/v1/jobs", params={"source": "handbook"}).json()["data"]
    assert [j["id"] for j in listed][:1] == [again.json()["id"]]


def test_another_tenant_sees_no_source_and_no_job(app: FastAPI, acme: TestClient) -> None:
    job_id = acme.get("/v1/jobs").json()["data"][0]["id"]
    beta = gateway_client(app, BETA)
    for method, path in [
        ("GET", "/v1/sources/handbook"), ("DELETE", "/v1/sources/handbook"),
        ("POST", "/v1/sources/handbook/sync"), ("GET", f"/v1/jobs/{job_id}"),
        ("POST", f"/v1/jobs/{job_id}/cancel"), ("GET", "/v1/jobs?source=handbook"),
    ]:  # fmt: skip
        reply = beta.request(method, path)
        assert reply.status_code == 404, (method, path, reply.text)
        # Exactly as a name nobody uses: the same reply but for the name asked about.
        unused = beta.request(method, path.replace("handbook", "nobody").replace(job_id, "0" * 32))
        assert reply.text == unused.text.replace("nobody", "handbook").replace("0" * 32, job_id)
    assert beta.get("/v1/sources").json()["data"] == []
    assert beta.get("/v1/jobs").json()["data"] == []
    chat = gateway_client(app, ACME_CHAT)
    assert chat.get("/v1/sources").status_code == 403


def test_what_a_source_may_read_is_refused_with_a_clear_error(
    acme: TestClient, share: Path
) -> None:
    def create(spec: dict[str, Any]) -> Any:
        return acme.post("/v1/sources", json={"name": "x", "collection": "kb", "spec": spec})

    for path in ("/etc", str(share / "beta"), str(share / "acme" / ".." / "beta")):
        reply = create({"kind": "folder", "path": path})
        assert reply.status_code == 400
        assert "outside the directories this tenant may read" in _error(reply)["message"]
    writes = create({"kind": "sql", "url": f"sqlite:///{share / 'acme' / 't.db'}",
                     "query": "DELETE FROM t RETURNING *"})  # fmt: skip
    assert writes.status_code == 400 and "read-only" in _error(writes)["message"]
    clear = create({"kind": "sql", "url": f"postgresql://u:{SECRET}@db/x", "query": "SELECT 1"})
    assert clear.status_code == 400 and "reference" in _error(clear)["message"]
    assert SECRET not in clear.text
    foreign = create({"kind": "sql", "url_env": "RAGDOCK_DATABASE_URL", "query": "SELECT 1"})
    assert foreign.status_code == 400 and "RAGDOCK_SECRET_ACME_" in _error(foreign)["message"]
    missing = create({"kind": "folder"})
    assert missing.status_code == 400
    assert acme.get("/v1/sources/x").status_code == 404


def test_a_sql_source_by_reference_never_shows_its_credential(
    acme: TestClient, share: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RAGDOCK_SECRET_ACME_DB", f"sqlite:///{share / 'acme' / 't.db'}")
    monkeypatch.setenv("RAGDOCK_SECRET_ACME_PW", SECRET)
    caplog.set_level(logging.DEBUG)
    reply = acme.post("/v1/sources", json={
        "name": "rows", "collection": "kb",
        "spec": {"kind": "sql", "url_env": "RAGDOCK_SECRET_ACME_DB", "query": "SELECT * FROM t"},
    })  # fmt: skip
    assert reply.status_code == 201, reply.text
    assert reply.json()["spec"]["url_env"] == "RAGDOCK_SECRET_ACME_DB"
    job = _wait(acme, reply.json()["active_job"]["id"])
    assert (job["state"], job["progress"]["added"]) == ("succeeded", 1)
    shown = acme.get("/v1/sources/rows")
    bad = acme.post("/v1/sources", json={
        "name": "pg", "collection": "kb",
        "spec": {"kind": "sql", "url": "postgresql://reader@127.0.0.1:1/db",
                 "password_env": "RAGDOCK_SECRET_ACME_PW", "query": "SELECT 1"},
    })  # fmt: skip
    assert bad.status_code == 400  # nothing listens there
    assert "RAGDOCK_SECRET_ACME_PW" in bad.text or "connect" in bad.text
    for text in (reply.text, shown.text, bad.text, caplog.text):
        assert SECRET not in text


def test_deleting_a_source_purges_its_documents(acme: TestClient, share: Path) -> None:
    reply = acme.post("/v1/sources", json={
        "name": "gone", "collection": "scratch",
        "spec": {"kind": "folder", "path": str(share / "acme" / "handbook"),
                 "exclude": ["*.pdf"]},
    })  # fmt: skip
    assert _wait(acme, reply.json()["active_job"]["id"])["progress"]["added"] == 2
    assert acme.delete("/v1/sources/gone").status_code == 204
    assert acme.get("/v1/sources/gone").status_code == 404
    deadline = time.monotonic() + 30
    while acme.get("/v1/collections/scratch/documents").json()["data"]:
        assert time.monotonic() < deadline, "the purge did not run"
        time.sleep(0.3)
