"""Faults and overload on the real stack: the engine killed under streaming load, in-flight caps,
body limits, graceful shutdown, and a vector store that does not answer.

What must hold: every request ends (no hung connection) as a complete answer or a clear error in
OpenAI's shape; /readyz says when the engine is down; the same gateway serves again once the
engine is back; an overloaded gateway answers 429 with Retry-After at once; shutdown lets
in-flight streams finish, up to its deadline."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from engine.launcher import EngineProcess
from server.relay.framing import event_data, is_done
from tests.support import (
    ADMIN_KEY_JSON,
    BETA_KEY,
    CHAT_ONLY_KEY,
    TEST_API_KEY,
    TEST_KEYS_JSON,
    GatewayProcess,
    gateway_metric_total,
    gateway_metrics,
    start_gateway,
)

pytestmark = pytest.mark.e2e

LONG = {"model": "gemma", "prompt": "Once upon a time", "temperature": 0, "ignore_eos": True}
# The same request through the openai SDK, which takes vLLM's extras in extra_body.
SDK_LONG = {"model": "gemma", "prompt": "Once upon a time", "temperature": 0,
            "extra_body": {"ignore_eos": True}}  # fmt: skip


def _auth(key: str = TEST_API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _stream_outcome(http: httpx.Client, max_tokens: int) -> str:
    """One streamed completion, classified: ok, stream_error:<code>, http_<status>:<code>."""
    body = {**LONG, "max_tokens": max_tokens, "stream": True}
    with http.stream("POST", "/v1/completions", json=body, headers=_auth()) as response:
        if response.status_code != 200:
            error = json.loads(response.read())["error"]
            assert set(error) == {"message", "type", "param", "code"}
            assert response.headers["Retry-After"].isdigit()
            return f"http_{response.status_code}:{error['code']}"
        for line in response.iter_lines():
            if is_done(line):
                return "ok"
            data = event_data(line)
            if isinstance(data, dict) and "error" in data:
                return f"stream_error:{data['error']['code']}"
    return "ended_without_done"


def _in_flight(gateway: GatewayProcess) -> float:
    return gateway_metric_total(gateway.url, "ragdock_requests_in_flight")


def test_engine_killed_under_streaming_load_then_restarted(
    engine: EngineProcess, gateway: GatewayProcess
) -> None:
    outcomes: Counter[str] = Counter()
    recovered = threading.Event()
    stop = threading.Event()

    def client() -> None:
        # A hung connection would raise ReadTimeout here and fail the test.
        with httpx.Client(base_url=gateway.url, timeout=60) as http:
            while not stop.is_set():
                outcome = _stream_outcome(http, 48)
                outcomes[outcome] += 1
                if outcome == "ok" and outcomes["http_503:engine_unavailable"]:
                    recovered.set()
                if outcome != "ok":
                    time.sleep(0.5)

    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            client()
        except BaseException as exc:
            errors.append(exc)
            raise

    workers = [threading.Thread(target=guarded) for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        while outcomes["ok"] < 3:  # the load is running and answered
            assert not errors, errors
            time.sleep(0.2)
        assert engine.pid is not None
        os.killpg(engine.pid, signal.SIGKILL)  # no goodbye: connections just drop
        deadline = time.monotonic() + 30
        while httpx.get(f"{gateway.url}/readyz", timeout=10).status_code != 503:
            assert time.monotonic() < deadline, "/readyz still says ready with the engine dead"
            time.sleep(0.2)
        ready = httpx.get(f"{gateway.url}/readyz", timeout=10)
        assert ready.headers["Retry-After"].isdigit()
        while outcomes["http_503:engine_unavailable"] < 2:
            assert not errors, errors
            time.sleep(0.2)
    finally:
        engine.stop()
        engine.start()
        engine.wait_ready(600)
    try:
        assert recovered.wait(120), f"no answer after the engine came back: {outcomes}"
    finally:
        stop.set()
        for worker in workers:
            worker.join(90)
    assert not errors, errors
    # Streams cut by the kill ended with an error event; requests while it was down were 503s;
    # nothing else happened, and nothing is left in flight.
    assert outcomes["stream_error:engine_unavailable"] >= 1, outcomes
    assert set(outcomes) <= {
        "ok", "stream_error:engine_unavailable", "http_503:engine_unavailable",
    }, outcomes  # fmt: skip
    assert httpx.get(f"{gateway.url}/readyz", timeout=10).status_code == 200
    assert _in_flight(gateway) == 0


@pytest.fixture
def capped_gateway(engine: EngineProcess, tmp_path: Path) -> Iterator[GatewayProcess]:
    env = {
        "RAGDOCK_API_KEYS": TEST_KEYS_JSON,
        "RAGDOCK_MAX_IN_FLIGHT": "3",
        "RAGDOCK_MAX_IN_FLIGHT_PER_KEY": "2",
        "RAGDOCK_OVERLOAD_RETRY_AFTER_S": "2",
        "RAGDOCK_MAX_BODY_BYTES": "65536",
    }
    gateway = start_gateway(engine.url, tmp_path / "gateway.log", env)
    yield gateway
    gateway.stop()


def test_in_flight_caps_answer_429_with_retry_after(capped_gateway: GatewayProcess) -> None:
    def client(key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=capped_gateway.api_base, api_key=key, max_retries=0)

    app, beta, admin = client(CHAT_ONLY_KEY), client(BETA_KEY), client(TEST_API_KEY)
    held = []

    def hold(owner: openai.OpenAI) -> None:
        stream = owner.completions.create(**SDK_LONG, max_tokens=400, stream=True)
        next(iter(stream))  # answering: its slot is held until the stream ends
        held.append(stream)

    hold(app)
    hold(app)  # the app key's two slots
    with pytest.raises(openai.RateLimitError) as per_key:
        app.completions.create(**SDK_LONG, max_tokens=2)
    hold(beta)  # another key still has room, up to the gateway's 3
    with pytest.raises(openai.RateLimitError) as overall:
        admin.completions.create(**SDK_LONG, max_tokens=2)
    for caught in (per_key, overall):
        assert caught.value.response.headers["Retry-After"] == "2"
        assert caught.value.body["code"] == "rate_limit_exceeded"
        assert caught.value.body["type"] == "requests"
    assert httpx.get(f"{capped_gateway.url}/healthz", timeout=5).status_code == 200
    assert httpx.get(f"{capped_gateway.url}/readyz", timeout=5).status_code == 200

    for stream in held:
        stream.close()  # the client goes away: the gateway frees the slot
    deadline = time.monotonic() + 30
    while True:
        try:
            assert app.completions.create(**SDK_LONG, max_tokens=2).choices[0].text
            break
        except openai.RateLimitError:
            assert time.monotonic() < deadline, "slots were not freed after the streams closed"
            time.sleep(0.5)
    metrics = gateway_metrics(capped_gateway.url)
    assert 'ragdock_rejected_requests_total{key="app",reason="in_flight_key"} 1.0' in metrics
    assert 'ragdock_rejected_requests_total{key="admin",reason="in_flight_total"} 1.0' in metrics


def test_a_body_over_the_limit_is_413(capped_gateway: GatewayProcess) -> None:
    admin = openai.OpenAI(base_url=capped_gateway.api_base, api_key=TEST_API_KEY, max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        admin.completions.create(model="gemma", prompt="x" * 100_000, max_tokens=2)
    assert caught.value.status_code == 413
    assert caught.value.body["code"] == "payload_too_large"


def _sse_lines(response: httpx.Response) -> Iterator[str]:
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield line


def test_shutdown_drains_streams_in_flight(engine: EngineProcess, tmp_path: Path) -> None:
    gateway = start_gateway(
        engine.url, tmp_path / "gateway.log",
        {"RAGDOCK_API_KEYS": ADMIN_KEY_JSON, "RAGDOCK_SHUTDOWN_GRACE_S": "120"},
    )  # fmt: skip
    try:
        body = {**LONG, "max_tokens": 64, "stream": True}
        with (
            httpx.Client(base_url=gateway.url, timeout=60) as http,
            http.stream("POST", "/v1/completions", json=body, headers=_auth()) as response,
        ):
            lines = _sse_lines(response)
            first = next(lines)
            gateway.proc.send_signal(signal.SIGTERM)  # mid-stream
            rest = list(lines)
        assert is_done(rest[-1])  # the stream finished, every token of it
        chunks = [event_data(line) for line in [first, *rest[:-1]]]
        assert sum(1 for c in chunks if c["choices"]) == 64
        assert gateway.proc.wait(timeout=60) == 0
        with pytest.raises(httpx.ConnectError):  # and it took no new work
            httpx.get(f"{gateway.url}/healthz", timeout=5)
    finally:
        gateway.stop()


def test_shutdown_stops_waiting_at_its_deadline(engine: EngineProcess, tmp_path: Path) -> None:
    gateway = start_gateway(
        engine.url, tmp_path / "gateway.log",
        {"RAGDOCK_API_KEYS": ADMIN_KEY_JSON, "RAGDOCK_SHUTDOWN_GRACE_S": "2"},
    )  # fmt: skip
    try:
        body = {**LONG, "max_tokens": 1500, "stream": True}  # about a minute of generation
        lines: list[str] = []
        with (
            httpx.Client(base_url=gateway.url, timeout=60) as http,
            http.stream("POST", "/v1/completions", json=body, headers=_auth()) as response,
        ):
            events = _sse_lines(response)
            lines.append(next(events))
            gateway.proc.send_signal(signal.SIGTERM)
            # The gateway exits at its deadline; the stream stops there, unfinished.
            with pytest.raises(httpx.RemoteProtocolError):
                lines.extend(events)
        assert not any(is_done(line) for line in lines)
        assert gateway.proc.wait(timeout=60) == 0
    finally:
        gateway.stop()


@pytest.fixture
def silent_qdrant() -> Iterator[str]:
    """A 'Qdrant server' that accepts connections and never answers: the worst kind of down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_a_vector_store_that_does_not_answer_is_503(
    engine: EngineProcess, tmp_path: Path, silent_qdrant: str
) -> None:
    gateway = start_gateway(
        engine.url, tmp_path / "gateway.log",
        {"RAGDOCK_API_KEYS": ADMIN_KEY_JSON, "RAGDOCK_QDRANT_URL": silent_qdrant,
         "RAGDOCK_QDRANT_TIMEOUT_S": "2"},
    )  # fmt: skip
    client = openai.OpenAI(base_url=gateway.api_base, api_key=TEST_API_KEY, max_retries=0)
    try:
        calls = [
            lambda: client.post("/collections", body={"name": "kb"}, cast_to=object),
            lambda: client.post(
                "/retrieve", body={"collection": "kb", "query": "port"}, cast_to=object
            ),
            lambda: client.chat.completions.create(
                model="gemma",
                messages=[{"role": "user", "content": "Which port?"}],
                max_tokens=8,
                extra_body={"rag": {"collection": "kb"}},
            ),
        ]
        for call in calls:
            with pytest.raises(openai.InternalServerError) as caught:
                call()
            assert caught.value.status_code == 503
            assert caught.value.response.headers["Retry-After"].isdigit()
            assert caught.value.body["code"] == "retrieval_unavailable"
        # The engine path does not depend on the store: plain chat still answers.
        plain = client.completions.create(model="gemma", prompt="Hello", max_tokens=2)
        assert plain.choices[0].text
    finally:
        gateway.stop()
