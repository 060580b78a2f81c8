"""`/v1/readers` on the real app (no engine): a platform key pushes the shipped reader from a
path, promotes it through the reader gate and rolls back; a refusal and a missing reader come in
OpenAI's error shape; tenant admins may look but not change; and what the API promotes is what
a gateway with `RAGDOCK_READER=auto` resolves."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from server.rag.reading import SHIPPED_READER, reader_directory
from tests.unit.gateway_app import build_test_app, gateway_client

PLATFORM_KEY = "platform-0123456789abc"
ADMIN_KEY = "acme-admin-0123456789a"
KEYS = json.dumps(
    [
        {"key": PLATFORM_KEY, "name": "ops", "tenant": "ops", "scopes": ["platform"]},
        {"key": ADMIN_KEY, "name": "acme-admin", "tenant": "acme", "scopes": ["admin"]},
    ]
)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[FastAPI]:
    app = build_test_app(tmp_path / "home", api_keys=KEYS)
    yield app
    app.state.document_service.retriever.close()


def test_push_promote_rollback_over_http(app: FastAPI) -> None:
    ops, acme = gateway_client(app, PLATFORM_KEY), gateway_client(app, ADMIN_KEY)
    for _ in range(2):
        pushed = ops.post("/v1/readers", json={"path": str(SHIPPED_READER)})
        assert pushed.status_code == 201, pushed.text
    body = pushed.json()
    assert body["ref"] == "reader@v2" and body["verdict"]["passed"] is True
    assert body["manifest"]["weights"]["sha256"] == body["record"]["weights_sha256"]

    for version in ("v1", "v2"):
        moved = ops.post(f"/v1/readers/reader/{version}/promote", json={"alias": "prod"})
        assert moved.status_code == 200, moved.text
    assert moved.json() == {"name": "reader", "alias": "prod", "version": "v2", "history": ["v1"]}
    listed = acme.get("/v1/readers").json()["data"]
    assert listed == [{"name": "reader", "versions": ["v1", "v2"], "aliases": {"prod": "v2"}}]
    assert reader_directory("auto", app.state.reader_registry).name == "v2"

    back = ops.post("/v1/readers/reader/rollback", json={"alias": "prod"})
    assert back.json()["version"] == "v1"
    in_use = ops.delete("/v1/readers/reader/v1")
    assert in_use.status_code == 409 and in_use.json()["error"]["code"] == "conflict"
    assert ops.delete("/v1/readers/reader/v2").status_code == 204
    audit = acme.get("/v1/readers/reader/audit").json()
    assert [e["action"] for e in audit] == ["push", "push", "promote", "promote", "rollback",
                                            "delete"]  # fmt: skip
    assert {e["actor"] for e in audit} == {"ops/ops"}


def test_refusals_in_openai_error_shape(app: FastAPI, tmp_path: Path) -> None:
    ops, acme = gateway_client(app, PLATFORM_KEY), gateway_client(app, ADMIN_KEY)
    uncalibrated = tmp_path / "uncalibrated"
    shutil.copytree(SHIPPED_READER, uncalibrated)
    manifest = json.loads((uncalibrated / "manifest.json").read_text())
    manifest["decision"] = None
    (uncalibrated / "manifest.json").write_text(json.dumps(manifest))
    pushed = ops.post("/v1/readers", json={"path": str(uncalibrated), "name": "raw"})
    assert pushed.json()["verdict"]["passed"] is False

    refused = ops.post("/v1/readers/raw/v1/promote", json={"alias": "prod"})
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "gate_not_passed"
    assert "decision is calibrated" in error["message"] and error["param"] == "version"

    # A tenant admin may look, but not change what grounds every tenant's answers.
    denied = acme.post("/v1/readers/raw/v1/promote", json={"alias": "prod", "force": True})
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "missing_scope"
    forced = ops.post(
        "/v1/readers/raw/v1/promote", json={"alias": "prod", "force": True, "reason": "trial"}
    )
    assert forced.status_code == 200, forced.text
    last = acme.get("/v1/readers/raw/audit").json()[-1]
    assert last["detail"]["forced"] is True and last["detail"]["reason"] == "trial"

    missing = acme.get("/v1/readers/raw/v9")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "reader_not_found"
    broken = ops.post("/v1/readers", json={"path": str(tmp_path)})
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_reader"
    bad_name = acme.get("/v1/readers/Bad%20Name")
    assert bad_name.status_code == 400 and bad_name.json()["error"]["code"] == "invalid_name"


def test_readers_are_not_tenant_scoped_but_need_a_key(app: FastAPI) -> None:
    anonymous = TestClient(app, raise_server_exceptions=False)
    assert anonymous.get("/v1/readers").status_code == 401
    assert gateway_client(app, ADMIN_KEY).get("/v1/readers").json() == {
        "object": "list",
        "data": [],
    }
