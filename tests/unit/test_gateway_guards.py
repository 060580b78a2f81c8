"""The real gateway app refuses, before any engine or store work: bodies over the limit (413),
prompts over the limit (400 `prompt_too_long`) and unknown keys (401), all in OpenAI's error
shape. (Scopes route by route: `test_authorization.py`.)"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from httpx import Response

from tests.unit.gateway_app import (
    CHAT_ONLY_KEY,
    TEST_API_KEY,
    build_test_app,
    gateway_client,
)

MAX_BODY = 4096
MAX_PROMPT = 1000


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    home = tmp_path_factory.mktemp("guards")
    app = build_test_app(home, max_body_bytes=MAX_BODY, max_prompt_chars=MAX_PROMPT)
    yield app
    app.state.document_service.retriever.close()


def _openai_error(response: Response, status: int, code: str | None = None) -> dict[str, str]:
    assert response.status_code == status, response.text
    error: dict[str, str] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    return error


def test_a_body_over_the_limit_is_413(app: FastAPI) -> None:
    client = gateway_client(app, TEST_API_KEY)
    padding = "x" * MAX_BODY
    reply = client.post(
        "/v1/chat/completions",
        json={"model": "gemma", "messages": [{"role": "user", "content": padding}]},
    )
    error = _openai_error(reply, 413, "payload_too_large")
    assert error["type"] == "invalid_request_error"


def test_a_prompt_over_the_limit_is_400_before_the_engine(app: FastAPI) -> None:
    client = gateway_client(app, CHAT_ONLY_KEY)
    half = "y" * (MAX_PROMPT // 2 + 1)
    chat = client.post(
        "/v1/chat/completions",
        json={
            "model": "gemma",
            "messages": [
                {"role": "system", "content": half},
                {"role": "user", "content": [{"type": "text", "text": half}]},
            ],
        },
    )
    assert _openai_error(chat, 400, "prompt_too_long")["param"] == "messages"
    completion = client.post("/v1/completions", json={"model": "gemma", "prompt": [half, half]})
    assert _openai_error(completion, 400, "prompt_too_long")["param"] == "prompt"
    # Under the limit the request goes on, to an engine that is not there: proof that the
    # refusals above happened before the engine was asked.
    short = client.post("/v1/completions", json={"model": "gemma", "prompt": half})
    _openai_error(short, 503, "engine_unavailable")
    metrics = gateway_client(app, TEST_API_KEY).get("/metrics").text  # a platform key reads it
    assert 'ragdock_rejected_requests_total{key="app",reason="prompt_too_long"} 2.0' in metrics


def test_unauthenticated_requests_reach_no_route(app: FastAPI) -> None:
    client = gateway_client(app, "not-a-key-0123456789")
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path.startswith("/v1/"):
            path = re.sub(r"\{[^}]+\}", "x", route.path)
            for method in route.methods:
                _openai_error(client.request(method, path, json={}), 401, "invalid_api_key")
