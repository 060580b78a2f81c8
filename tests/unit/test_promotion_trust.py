"""Promotion trusts only what the platform measured, proven through the real app: a report a
caller uploads is evidence, and its own `gate.passed` is never read. A forged report (a bare
claim, a made-up or foreign signature, another version's report, a signed one changed since)
cannot promote; a platform-signed one whose metrics pass the platform's gate can; a signed one
whose metrics fail that gate cannot, whatever it claims. Only a platform key may force, and the
audit log names it (tenant-qualified) and says forced."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from eval.signing import SigningKey
from tests import contract_samples as samples
from tests.unit.gateway_app import build_test_app, gateway_client
from tests.unit.test_adapter_registry import make_adapter

KEYS = {"acme-admin": "acme-admin-0123456789abcdef", "ops": "ops-platform-0123456789abcd"}
KEYS_JSON = json.dumps(
    [
        {"key": KEYS["acme-admin"], "name": "acme-admin", "tenant": "acme", "scopes": ["admin"]},
        {"key": KEYS["ops"], "name": "ops", "tenant": "ops", "scopes": ["platform"]},
    ]
)
OTHER_KEY = SigningKey(b"a-key-that-is-not-the-platforms-0123456789")
_NAMES = itertools.count(1)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    home = tmp_path_factory.mktemp("trust")
    platform = samples.platform_files(home / "platform")
    app = build_test_app(
        home, api_keys=KEYS_JSON, adapter_loading="resolver",
        signing_key_file=platform["signing_key_file"], promotion_gate=platform["promotion_gate"],
    )  # fmt: skip
    yield app
    app.state.document_service.retriever.close()


def client(app: FastAPI, who: str) -> TestClient:
    return gateway_client(app, KEYS[who])


@pytest.fixture
def pushed(app: FastAPI, tmp_path: Path) -> str:
    """A fresh adapter of acme's, at v1."""
    name = f"trust-{next(_NAMES)}"
    adapter = make_adapter(tmp_path / "lora")
    files = [("files", (p.name, p.read_bytes())) for p in sorted(adapter.iterdir())]
    reply = client(app, "acme-admin").post("/v1/adapters/upload", files=files, data={"name": name})
    assert reply.status_code == 201, reply.text
    return name


def attach(app: FastAPI, name: str, report: dict[str, Any]) -> dict[str, Any]:
    reply = client(app, "acme-admin").put(f"/v1/adapters/{name}/v1/eval-report", json=report)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def promote(app: FastAPI, who: str, name: str, **body: Any) -> Any:
    return client(app, who).post(f"/v1/adapters/{name}/v1/promote", json={"alias": "prod", **body})


def audit(app: FastAPI, name: str) -> list[dict[str, Any]]:
    return list(client(app, "ops").get(f"/v1/adapters/{name}/audit").json())


def aliases(app: FastAPI, name: str) -> dict[str, str]:
    return dict(client(app, "ops").get(f"/v1/adapters/{name}").json()["aliases"])


def forged(name: str, how: str) -> dict[str, Any]:
    """A report that claims its gate passed, with metrics that would pass, not measured by the
    platform for name@v1."""
    claim = samples.eval_report(True, name=name, signed=False)
    if how == "unsigned":
        return claim
    if how == "made-up signature":
        return {**claim, "signature": {"alg": "hmac-sha256", "key_id": "0" * 16, "value": "f" * 64}}
    if how == "the platform's key id, made-up value":
        key_id = samples.SIGNING_KEY.key_id
        return {**claim, "signature": {"alg": "hmac-sha256", "key_id": key_id, "value": "0" * 64}}
    if how == "signed with another key":
        return samples.signed(claim, OTHER_KEY)
    if how == "another version's report":
        return samples.eval_report(True, name=name, version="v9")
    if how == "another adapter's report":
        return samples.eval_report(True, name="someone-else")
    assert how == "signed, then its metrics changed"
    report = samples.eval_report(True, name=name, measured=False)
    report["tasks"]["forgetting"]["relative"]["perplexity_increase"]["value"] = 0.0
    return report


FORGERIES = [
    "unsigned",
    "made-up signature",
    "the platform's key id, made-up value",
    "signed with another key",
    "another version's report",
    "another adapter's report",
    "signed, then its metrics changed",
]


@pytest.mark.parametrize("how", FORGERIES)
def test_a_forged_report_cannot_promote(app: FastAPI, pushed: str, how: str) -> None:
    shown = attach(app, pushed, forged(pushed, how))
    # Kept as evidence, as uploaded; the platform's verdict beside it.
    assert shown["eval_report"]["gate"]["passed"] is True
    assert shown["verdict"]["status"] == "unverified" and shown["verdict"]["gate"] is None
    refused = promote(app, "acme-admin", pushed)
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "report_not_verified" and error["type"] == "invalid_request_error"
    assert "not platform-measured" in error["message"] and "ragdock eval" in error["message"]
    assert "prod" not in aliases(app, pushed)
    entries = audit(app, pushed)
    assert [e["action"] for e in entries] == ["push", "eval_report"]
    assert entries[-1]["detail"] == {"gate_passed": False, "verdict": "unverified"}


def test_a_bare_claim_is_no_report_and_promotes_nothing(app: FastAPI, pushed: str) -> None:
    acme = client(app, "acme-admin")
    bare = acme.put(f"/v1/adapters/{pushed}/v1/eval-report", json={"gate": {"passed": True}})
    assert bare.status_code == 400 and bare.json()["error"]["code"] == "invalid_adapter"
    refused = promote(app, "acme-admin", pushed)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "gate_not_passed"
    assert "no eval report" in refused.json()["error"]["message"]


def test_a_platform_signed_report_that_passes_the_platforms_gate_promotes(
    app: FastAPI, pushed: str
) -> None:
    shown = attach(app, pushed, samples.eval_report(True, name=pushed))
    assert shown["verdict"]["status"] == "passed"
    assert shown["verdict"]["gate"]["name"] == samples.PLATFORM_GATE.name
    promoted = promote(app, "acme-admin", pushed)
    assert promoted.status_code == 200, promoted.text
    assert aliases(app, pushed) == {"prod": "v1"}
    last = audit(app, pushed)[-1]
    assert (last["action"], last["actor"]) == ("promote", "acme/acme-admin")
    assert last["detail"]["forced"] is False and last["detail"]["verdict"] == "passed"


def test_a_platform_verdict_ignores_a_signed_reports_own_claim(app: FastAPI, pushed: str) -> None:
    # Measured by the platform (signed), its metrics fail the platform's gate, and its own gate
    # (another, laxer one, or an edit made before signing) says passed: the platform's decides.
    claims_passed = samples.eval_report(True, name=pushed, measured=False)
    shown = attach(app, pushed, claims_passed)
    assert shown["eval_report"]["gate"]["passed"] is True
    assert shown["verdict"]["status"] == "failed"
    refused = promote(app, "acme-admin", pushed)
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["code"] == "gate_not_passed"
    assert "forgetting.perplexity_increase <= 1" in error["message"]
    assert "prod" not in aliases(app, pushed)
    # And the converse: a signed report whose own gate failed passes on its metrics.
    attach(app, pushed, samples.eval_report(False, name=pushed, measured=True))
    assert promote(app, "acme-admin", pushed).status_code == 200


def test_a_tenant_admin_cannot_force(app: FastAPI, pushed: str) -> None:
    attach(app, pushed, forged(pushed, "unsigned"))
    refused = promote(app, "acme-admin", pushed, force=True, reason="trust me")
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert error["code"] == "missing_scope" and "platform" in error["message"]
    assert "prod" not in aliases(app, pushed)
    assert [e["action"] for e in audit(app, pushed)] == ["push", "eval_report"]
    # Even with a report that passes: force is the platform's alone.
    attach(app, pushed, samples.eval_report(True, name=pushed))
    assert promote(app, "acme-admin", pushed, force=True).status_code == 403


def test_a_platform_force_is_audited_as_forced(app: FastAPI, pushed: str) -> None:
    attach(app, pushed, forged(pushed, "made-up signature"))
    forced = promote(app, "ops", pushed, force=True, reason="incident 42: roll forward")
    assert forced.status_code == 200, forced.text
    assert aliases(app, pushed) == {"prod": "v1"}
    last = audit(app, pushed)[-1]
    assert (last["action"], last["actor"], last["alias"]) == ("promote", "ops/ops", "prod")
    assert last["detail"]["forced"] is True
    assert last["detail"]["reason"] == "incident 42: roll forward"
    assert last["detail"]["verdict"] == "unverified"
    assert "not platform-measured" in last["detail"]["gate"]


def test_the_signing_key_is_never_shown(app: FastAPI, pushed: str) -> None:
    attach(app, pushed, samples.eval_report(True, name=pushed))
    for path in (f"/v1/adapters/{pushed}/v1", f"/v1/adapters/{pushed}/audit", "/v1/status"):
        reply = client(app, "ops").get(path)
        assert reply.status_code == 200, (path, reply.text)
        assert samples.SIGNING_SECRET not in reply.text, path


def test_the_default_key_is_created_private_on_first_start_and_kept(tmp_path: Path) -> None:
    key = tmp_path / "data" / "signing.key"
    build_test_app(tmp_path, api_keys=KEYS_JSON).state.document_service.retriever.close()
    assert key.stat().st_mode & 0o777 == 0o600
    secret = key.read_text()
    assert len(secret.strip()) == 64
    build_test_app(tmp_path, api_keys=KEYS_JSON).state.document_service.retriever.close()
    assert key.read_text() == secret  # a restart keeps the key its reports were signed with
