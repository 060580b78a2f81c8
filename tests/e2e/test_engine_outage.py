"""When the engine stops or hangs, the gateway answers 503 with Retry-After at once (never a hung
request or a bare 500) and recovers by itself when the engine is back."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import openai
import pytest

from engine.launcher import EngineProcess
from tests.support import ADMIN_KEY_JSON, TEST_API_KEY, GatewayProcess, start_gateway

pytestmark = pytest.mark.e2e

ASK = {"model": "gemma", "prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}


def _assert_503(exc: openai.APIStatusError, code: str) -> None:
    assert exc.status_code == 503
    assert exc.response.headers["Retry-After"].isdigit()
    assert exc.body["code"] == code
    assert exc.body["type"] == "server_error"


def test_a_hung_engine_times_out_as_503(engine: EngineProcess, tmp_path: Path) -> None:
    gateway = start_gateway(
        engine.url,
        tmp_path / "gateway.log",
        {"RAGDOCK_API_KEYS": ADMIN_KEY_JSON, "RAGDOCK_ENGINE_READ_TIMEOUT_S": "2"},
    )
    client = openai.OpenAI(base_url=gateway.api_base, api_key=TEST_API_KEY, max_retries=0)
    assert engine.pid is not None
    os.killpg(engine.pid, signal.SIGSTOP)  # the engine is alive but answers nothing
    try:
        started = time.monotonic()
        with pytest.raises(openai.InternalServerError) as caught:
            client.completions.create(**ASK)
        _assert_503(caught.value, "engine_timeout")
        assert time.monotonic() - started < 15
        assert httpx.get(f"{gateway.url}/readyz", timeout=10).status_code == 503
    finally:
        os.killpg(engine.pid, signal.SIGCONT)
        gateway.stop()


def test_a_stopped_engine_is_503_and_the_gateway_recovers(
    engine: EngineProcess, gateway: GatewayProcess, client: openai.OpenAI
) -> None:
    assert client.completions.create(**ASK).choices[0].text
    engine.stop()
    try:
        with pytest.raises(openai.InternalServerError) as caught:
            client.completions.create(**ASK)
        _assert_503(caught.value, "engine_unavailable")
        with pytest.raises(openai.InternalServerError) as caught:
            list(client.completions.create(**ASK, stream=True))
        _assert_503(caught.value, "engine_unavailable")
        ready = httpx.get(f"{gateway.url}/readyz", timeout=10)
        assert ready.status_code == 503 and ready.headers["Retry-After"]
    finally:
        engine.start()
        engine.wait_ready(600)
    # Same gateway process, no restart: it reconnects on the next request.
    assert httpx.get(f"{gateway.url}/readyz", timeout=10).status_code == 200
    assert "France" in client.completions.create(**{**ASK, "max_tokens": 24}).choices[0].text
