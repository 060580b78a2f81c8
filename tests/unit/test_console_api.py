"""What the web console reads, through the real app over a scripted engine: `/v1/me` (the key's
granted scopes), `/v1/status` (engine state, the caller's loaded adapters, the last minute of its
own tenant's traffic; everyone's for a platform key), and an adapter version's training history."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from server.metrics import GatewayMetrics
from server.recent_activity import RecentActivity
from tests.unit.fake_engine import body_of, engine_over
from tests.unit.gateway_app import build_test_app, gateway_client
from tests.unit.test_adapter_registry import make_adapter

KEYS = {
    "acme-chat": "acme-chat-0123456789ab",
    "acme-admin": "acme-admin-0123456789a",
    "beta-chat": "beta-chat-0123456789ab",
    "platform": "platform-0123456789abc",
}
KEYS_JSON = json.dumps(
    [
        {"key": KEYS["acme-chat"], "name": "acme-app", "tenant": "acme", "scopes": ["chat"]},
        {"key": KEYS["acme-admin"], "name": "acme-ops", "tenant": "acme", "scopes": ["admin"]},
        {"key": KEYS["beta-chat"], "name": "beta-app", "tenant": "beta", "scopes": ["chat"]},
        {"key": KEYS["platform"], "name": "ops", "tenant": "ops", "scopes": ["platform"]},
    ]
)


class Engine:
    """Healthy or not as told; serves one base, answers chats, accepts adapter loads."""

    def __init__(self) -> None:
        self.healthy = True

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/health":
            return httpx.Response(200 if self.healthy else 503)
        if path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "base"}]})
        if path == "/v1/load_lora_adapter":
            return httpx.Response(200, text="ok")
        body = body_of(request)
        message = {"role": "assistant", "content": "Hi."}
        return httpx.Response(
            200,
            json={
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            },
        )


@pytest.fixture(scope="module")
def scripted_engine() -> Engine:
    return Engine()


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, scripted_engine: Engine) -> Iterator[FastAPI]:
    home = tmp_path_factory.mktemp("console")
    app = build_test_app(home, engine=engine_over(scripted_engine), api_keys=KEYS_JSON)
    yield app
    app.state.document_service.retriever.close()


def client(app: FastAPI, who: str) -> TestClient:
    return gateway_client(app, KEYS[who])


def test_me_names_the_key_and_every_scope_it_grants(app: FastAPI) -> None:
    assert client(app, "acme-chat").get("/v1/me").json() == {
        "object": "principal", "name": "acme-app", "tenant": "acme", "scopes": ["chat"],
        "auth": True,
    }  # fmt: skip
    admin = client(app, "acme-admin").get("/v1/me").json()
    assert admin["scopes"] == ["admin", "chat", "ingest"]
    platform = client(app, "platform").get("/v1/me").json()
    assert platform["scopes"] == ["admin", "chat", "ingest", "metrics", "platform"]
    assert TestClient(app).get("/v1/me").status_code == 401


def test_me_in_keyless_mode_is_the_anonymous_caller(tmp_path: Path) -> None:
    app = build_test_app(tmp_path, engine=engine_over(Engine()), api_keys=[])
    try:
        reply = TestClient(app, headers={"host": "localhost"}).get("/v1/me").json()
    finally:
        app.state.document_service.retriever.close()
    assert reply["auth"] is False and reply["scopes"] == ["chat", "ingest", "metrics"]
    assert reply["tenant"] == "default"


def test_status_shows_only_the_callers_tenant_and_everything_to_a_platform_key(
    app: FastAPI, scripted_engine: Engine, tmp_path: Path
) -> None:
    scripted_engine.healthy = True
    recent = _recent(app)
    # Traffic of two tenants: chats through the gateway, grounded outcomes as the judge and the
    # retrieval gate record them (tests/unit/test_recent_activity.py covers those sites).
    chat = {"model": "gemma", "messages": [{"role": "user", "content": "Hello"}]}
    assert client(app, "acme-chat").post("/v1/chat/completions", json=chat).status_code == 200
    for _ in range(2):
        assert client(app, "beta-chat").post("/v1/chat/completions", json=chat).status_code == 200
    recent.outcome("acme", "answered", "cited")
    recent.outcome("beta", "abstained", "retrieval_gate")
    recent.outcome("beta", "abstained", "low_answerability")
    # Adapters resident in the engine: acme's own, and a shared one (promoting loads them; a
    # platform key forces them past the gate, which only it may do).
    adapter = make_adapter(tmp_path / "lora")
    files = [("files", (p.name, p.read_bytes())) for p in sorted(adapter.iterdir())]
    for who, name in [("acme-admin", "acme-bot"), ("platform", "shared-bot")]:
        pushed = client(app, who).post("/v1/adapters/upload", files=files, data={"name": name})
        assert pushed.status_code == 201, pushed.text
        body = {"alias": "prod", "force": True}
        promoted = client(app, "platform").post(f"/v1/adapters/{name}/v1/promote", json=body)
        assert promoted.status_code == 200, promoted.text

    acme = client(app, "acme-chat").get("/v1/status").json()
    assert acme["object"] == "status" and acme["replica"]
    assert acme["engine"] == {"ready": True}
    assert acme["adapters_loaded"] == ["acme-bot@v1", "shared-bot@v1"]
    assert acme["in_flight"] == 0 and acme["window_s"] == 60
    minute = acme["last_minute"]
    assert (minute["requests"], minute["errors"]) == (1, 0)
    assert minute["latency_p50_s"] is not None and minute["latency_p95_s"] is not None
    assert (minute["grounded"], minute["answered"], minute["abstained"]) == (1, 1, 0)
    assert minute["abstention_rate"] == 0.0 and minute["abstentions_by_reason"] == {}

    beta = client(app, "beta-chat").get("/v1/status").json()
    assert beta["adapters_loaded"] == ["shared-bot@v1"]  # acme's adapter does not exist for beta
    minute = beta["last_minute"]
    assert (minute["requests"], minute["grounded"], minute["abstained"]) == (2, 2, 2)
    assert minute["abstention_rate"] == 1.0
    assert minute["abstentions_by_reason"] == {"low_answerability": 1, "retrieval_gate": 1}

    everyone = client(app, "platform").get("/v1/status").json()
    assert everyone["adapters_loaded"] == ["acme-bot@v1", "shared-bot@v1"]
    minute = everyone["last_minute"]
    assert (minute["requests"], minute["grounded"], minute["abstained"]) == (3, 3, 2)
    assert minute["abstention_rate"] == pytest.approx(2 / 3)


def test_status_says_the_engine_is_not_ready_when_its_health_check_fails(
    app: FastAPI, scripted_engine: Engine
) -> None:
    scripted_engine.healthy = False
    try:
        reply = client(app, "acme-chat").get("/v1/status")
    finally:
        scripted_engine.healthy = True
    assert reply.status_code == 200  # the console shows the state; /readyz answers 503
    assert reply.json()["engine"] == {"ready": False}


def test_an_adapter_version_shows_its_training_history(app: FastAPI, tmp_path: Path) -> None:
    adapter = make_adapter(tmp_path / "run")
    lines = [json.dumps({"step": s, "epoch": 0.1, "loss": 3.0 - s / 1000, "lr": 1e-4})
             for s in range(1, 1001)]  # fmt: skip
    lines.insert(500, json.dumps({"step": 500, "eval_loss": 2.5, "best_eval_loss": 2.5}))
    lines.append("not json")
    (adapter / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    files = [("files", (p.name, p.read_bytes())) for p in sorted(adapter.iterdir())]
    caller = client(app, "acme-admin")
    pushed = caller.post("/v1/adapters/upload", files=files, data={"name": "curve"})
    assert pushed.status_code == 201, pushed.text

    history = caller.get("/v1/adapters/curve/v1").json()["training_history"]
    train = [p for p in history if "loss" in p]
    assert len(train) == 400 and train[0] == {"step": 1, "loss": 2.999}
    assert train[-1] == {"step": 1000, "loss": 2.0}
    assert {"step": 500, "eval_loss": 2.5} in history
    bare = [f for f in files if f[1][0] != "metrics.jsonl"]
    pushed = caller.post("/v1/adapters/upload", files=bare, data={"name": "no-curve"})
    assert pushed.status_code == 201 and pushed.json()["training_history"] is None


def _recent(app: FastAPI) -> RecentActivity:
    metrics: GatewayMetrics = app.state.metrics
    return metrics.recent
