"""The gateway speaks the OpenAI API, driven by the official `openai` client against the real vLLM
engine serving the real Gemma 3 270M."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from engine.launcher import EngineProcess
from eval.perf.bench import metric_total
from tests.support import TEST_API_KEY, GatewayProcess

pytestmark = pytest.mark.e2e


def test_models_list_shows_the_base_alias(client: openai.OpenAI) -> None:
    models = client.models.list()
    base = models.data[0]
    assert base.id == "gemma"  # adapters pushed by other tests follow it, each with a parent
    assert base.model_extra["parent"] is None and base.model_extra["max_model_len"] == 2048
    assert all(m.model_extra["parent"] == "gemma" for m in models.data[1:])
    assert client.models.retrieve("gemma").id == "gemma"


def test_greedy_completion_is_the_real_model(client: openai.OpenAI) -> None:
    # Guards the GGUF tokenizer bug: without <bos>, Gemma produces unrelated garbage here.
    out = client.completions.create(
        model="gemma", prompt="The capital of France is", max_tokens=24, temperature=0
    )
    assert out.model == "gemma"
    assert "France" in out.choices[0].text
    assert out.usage is not None and out.usage.completion_tokens > 0


def test_engine_tokenizer_prepends_exactly_one_bos(engine: EngineProcess) -> None:
    reply = httpx.post(
        f"{engine.url}/tokenize",
        json={"model": "gemma", "prompt": "The capital of France is"},
        timeout=30,
    )
    tokens = reply.json()["tokens"]
    assert tokens[0] == 2
    assert tokens.count(2) == 1


def test_chat_completion_non_streaming(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model="gemma",
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Name a colour."},
        ],
        max_tokens=12,
        temperature=0,
    )
    choice = out.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in {"stop", "length"}
    assert out.usage is not None and out.usage.prompt_tokens > 5


def test_chat_completion_streams_chunk_by_chunk(client: openai.OpenAI) -> None:
    arrivals: list[float] = []
    text = []
    started = time.monotonic()
    stream = client.chat.completions.create(
        model="gemma",
        messages=[{"role": "user", "content": "Count from one to twenty."}],
        max_tokens=32,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},  # a vLLM extra: passes through the gateway untouched
    )
    usage = None
    for chunk in stream:
        arrivals.append(time.monotonic() - started)
        if chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert usage is not None and usage.completion_tokens == 32
    assert len(arrivals) >= 30 and "".join(text)
    # A buffering proxy delivers every chunk in one burst; a relay spreads them over the
    # generation (32 tokens take well over a second on this CPU).
    assert arrivals[-1] - arrivals[0] > 0.25


def test_text_completion_streams(client: openai.OpenAI) -> None:
    pieces = [
        chunk.choices[0].text
        for chunk in client.completions.create(
            model="gemma", prompt="One, two, three,", max_tokens=8, temperature=0, stream=True
        )
        if chunk.choices
    ]
    assert len(pieces) >= 2 and "".join(pieces).strip()


def test_unknown_model_is_404_model_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "model_not_found"
    assert caught.value.body["param"] == "model"


@pytest.mark.parametrize(
    "body",
    [
        {"model": "gemma", "messages": "hello"},
        {"model": "gemma", "messages": []},
        {"model": "gemma", "messages": [{"role": "wizard", "content": "hi"}]},
        {"model": "gemma", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "5"},
        {"model": "gemma", "messages": [{"role": "user", "content": "hi"}], "temperature": 9},
        {"model": 42, "messages": [{"role": "user", "content": "hi"}]},
        {"messages": [{"role": "user", "content": "hi"}]},
    ],
)
def test_wrong_types_are_400(client: openai.OpenAI, body: dict[str, object]) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.post("/chat/completions", cast_to=object, body=body)
    assert caught.value.body["type"] == "invalid_request_error"


def test_malformed_json_is_400_in_openai_shape(gateway: GatewayProcess) -> None:
    reply = httpx.post(
        f"{gateway.api_base}/chat/completions",
        content=b'{"model": "gemma", "messages": [',
        headers={"Authorization": f"Bearer {TEST_API_KEY}", "Content-Type": "application/json"},
    )
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "JSON" in error["message"]


def test_engine_validation_errors_come_back_as_openai_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="gemma", prompt="hi", max_tokens=100_000)
    assert caught.value.body["type"] == "invalid_request_error"
    assert "max_tokens" in caught.value.message


def test_missing_or_wrong_key_is_401(gateway: GatewayProcess) -> None:
    wrong = openai.OpenAI(
        base_url=gateway.api_base, api_key="not-the-key-but-long-enough", max_retries=0
    )
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.completions.create(model="gemma", prompt="x", max_tokens=1)
    assert caught.value.code == "invalid_api_key"
    # The SDK always sends a key, so the missing header is checked over plain HTTP.
    missing = httpx.post(f"{gateway.api_base}/completions", json={"model": "gemma", "prompt": "x"})
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "missing_api_key"
    # Probes stay open for orchestrators.
    assert httpx.get(f"{gateway.url}/healthz").status_code == 200


def test_unknown_route_is_404_in_openai_shape(gateway: GatewayProcess) -> None:
    known = {"Authorization": f"Bearer {TEST_API_KEY}"}
    reply = httpx.get(f"{gateway.api_base}/nothing-here", headers=known)
    assert reply.status_code == 404
    assert "error" in reply.json()
    # Without a valid key nothing past the door answers, not even "no such route".
    stranger = httpx.get(f"{gateway.api_base}/nothing-here", headers={"Authorization": "Bearer x"})
    assert stranger.status_code == 401


def test_client_disconnect_cancels_the_engine_request(
    client: openai.OpenAI, engine: EngineProcess
) -> None:
    stream = client.chat.completions.create(
        model="gemma",
        messages=[{"role": "user", "content": "Write a long story."}],
        max_tokens=1500,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    for received, _ in enumerate(stream):
        if received == 3:
            break
    assert metric_total(engine.url, "vllm:num_requests_running") >= 1
    stream.close()
    # 1500 tokens would take the engine most of a minute; an aborted request is gone at once.
    deadline = time.monotonic() + 15
    while metric_total(engine.url, "vllm:num_requests_running") > 0:
        assert time.monotonic() < deadline, "the engine kept generating after the client left"
        time.sleep(0.2)
