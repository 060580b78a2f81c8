"""The completion pipeline (guard, ground, resolve, lease, relay) over a scripted engine: what the
engine is sent for base, adapter and grounded chats (tools, tool choice, parallel tool calls and
JSON output go through untouched; with RAG the sources stay in the user turn and a tool-using turn
keeps its calls and results), and that a stream holds its adapter and meter until it ends."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from fastapi import Response
from fastapi.responses import StreamingResponse

from adapters.registry import AdapterVersion
from grounding.prompt import DEFAULT_ABSTENTION_MESSAGE
from retrieval.service import Retriever
from retrieval.types import ScoredChunk
from server.adapter_loading import RuntimeApiLoader
from server.auth import Principal
from server.engine_client import EngineClient
from server.errors import ModelNotFoundError
from server.lora_manager import LoraManager
from server.metrics import GatewayMetrics
from server.model_catalog import ModelCatalog, ResolvedModel
from server.openai_api.protocol import ChatCompletionRequest
from server.openai_api.serving import CompletionService
from server.rag.judge import AnswerJudge
from server.rag.service import RagService
from server.rag.step import GroundingStep
from tests.unit.fake_engine import body_of, chat_stream, engine_over, streamed

pytestmark = pytest.mark.anyio

WHO = Principal(name="app", tenant="acme", scopes=frozenset({"chat"}))
FACT = "The pump is serviced every 90 days."
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "open_ticket",
            "description": "Open a maintenance ticket.",
            "parameters": {
                "type": "object",
                "properties": {"asset": {"type": "string"}, "due": {"type": "string"}},
                "required": ["asset"],
            },
        },
    }
]
TOOL_FIELDS: dict[str, Any] = {
    "tools": TOOLS,
    "tool_choice": {"type": "function", "function": {"name": "open_ticket"}},
    "parallel_tool_calls": False,
    "response_format": {"type": "json_schema", "json_schema": {"name": "t", "schema": {}}},
}
TOOL_CALLS = [
    {
        "id": "call_1",
        "type": "function",
        "function": {"name": "open_ticket", "arguments": '{"asset": "pump"}'},
    }
]
TOOL_TURN = [
    {"role": "user", "content": "When is the pump due? Open a ticket for it."},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": TOOL_CALLS,
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"ticket": 42}'},
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class OneAdapterCatalog(ModelCatalog):
    """The base as `gemma` and one adapter, `tickets` (engine name `tickets@v1`)."""

    def __init__(self) -> None:
        super().__init__(alias="gemma", engine_name="gemma", root="base", max_model_len=None)

    async def resolve(
        self, name: str, engine: EngineClient, *, viewer: str | None = None
    ) -> ResolvedModel:
        if name == "gemma":
            return ResolvedModel("gemma")
        if name == "tickets":
            version = AdapterVersion("tickets", "v1", Path("/adapters/tickets/v1"), {})
            return ResolvedModel(version.ref, version)
        raise ModelNotFoundError(name)


class SetRetriever:
    def search(self, collection: str, tenant: str, query: str, **_: Any) -> list[ScoredChunk]:
        return [
            ScoredChunk(
                "c1", "pump", "Pump manual", "kb://pump", 0.9, FACT, "2026-01-01", similarity=0.9
            )
        ]


class Engine:
    """Records what it is sent; answers chats whole or streamed (or, `calls_tools`, with a tool
    call and no text), and adapter loads."""

    def __init__(self, *, calls_tools: bool = False) -> None:
        self.chats: list[dict[str, Any]] = []
        self.loads: list[str] = []
        self.calls_tools = calls_tools

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = body_of(request)
        if request.url.path == "/v1/load_lora_adapter":
            self.loads.append(body["lora_name"])
            return httpx.Response(200, text="ok")
        self.chats.append(body)
        if body.get("stream"):
            return streamed(chat_stream(body["model"], ["The", " pump", " [1]."]), [])
        message: dict[str, Any] = {"role": "assistant", "content": "Every 90 days [1]."}
        if self.calls_tools:
            message = {"role": "assistant", "content": None, "tool_calls": TOOL_CALLS}
        return httpx.Response(
            200,
            json={
                "choices": [{"index": 0, "message": message, "logprobs": None}],
                "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14},
            },
        )


def _service(engine: Engine) -> tuple[CompletionService, LoraManager, GatewayMetrics]:
    client = engine_over(engine)
    metrics = GatewayMetrics()
    catalog = OneAdapterCatalog()
    rag = RagService(
        cast(Retriever, SetRetriever()), default_top_k=4, default_min_score=0.5,
        default_min_support=0.5,  # the gateway's default: answers must be supported
        collection_min_scores={}, model_defaults={}, metrics=metrics, retry_after_s=1,
    )  # fmt: skip
    judge = AnswerJudge(client, catalog, metrics, DEFAULT_ABSTENTION_MESSAGE)
    loras = LoraManager(RuntimeApiLoader(client, capacity=2, metrics=metrics))
    service = CompletionService(client, catalog, loras, metrics, GroundingStep(rag, judge, metrics))
    return service, loras, metrics


async def _read(response: Response) -> bytes:
    if isinstance(response, StreamingResponse):
        return b"".join([cast(bytes, part) async for part in response.body_iterator])
    return bytes(response.body)


def _chat(model: str, messages: list[dict[str, Any]], **fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": model, "messages": messages, **fields})


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("model", ["gemma", "tickets"])
async def test_tools_and_json_output_reach_the_engine_untouched(model: str, stream: bool) -> None:
    engine = Engine()
    service, _, _ = _service(engine)
    request = _chat(model, TOOL_TURN, stream=stream, **TOOL_FIELDS)
    response = await service.chat(request, WHO)
    assert response.status_code == 200 and await _read(response)
    sent = engine.chats[0]
    assert sent["model"] == ("tickets@v1" if model == "tickets" else "gemma")
    for field, value in TOOL_FIELDS.items():
        assert sent[field] == value, field
    assert sent["messages"] == TOOL_TURN  # tool calls and results as the client sent them
    assert engine.loads == (["tickets@v1"] if model == "tickets" else [])


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("model", ["gemma", "tickets"])
async def test_a_grounded_chat_keeps_the_tools_and_puts_the_sources_in_the_user_turn(
    model: str, stream: bool
) -> None:
    engine = Engine()
    service, _, _ = _service(engine)
    request = _chat(model, TOOL_TURN, stream=stream, rag={"collection": "manuals"}, **TOOL_FIELDS)
    reply = await _read(await service.chat(request, WHO))
    assert b'"sources"' in reply and b'"grounding"' in reply
    sent = engine.chats[0]
    for field, value in TOOL_FIELDS.items():
        assert sent[field] == value, field
    assert "rag" not in sent and sent["logprobs"] is True
    system, user, call, result = sent["messages"]
    assert system["role"] == "system" and FACT not in system["content"]
    assert user["role"] == "user" and FACT in user["content"] and "[1]" in user["content"]
    assert user["content"].endswith("Question: When is the pump due? Open a ticket for it.")
    # The tool exchange follows the question (its null fields left out, as for every grounded turn).
    assert call == {"role": "assistant", "tool_calls": TOOL_TURN[1]["tool_calls"]}
    assert result == TOOL_TURN[2]


async def test_a_grounded_reply_that_calls_tools_reaches_the_client_intact() -> None:
    engine = Engine(calls_tools=True)
    service, _, _ = _service(engine)
    question = TOOL_TURN[:1]
    request = _chat("gemma", question, rag={"collection": "manuals"}, **TOOL_FIELDS)
    reply = json.loads(await _read(await service.chat(request, WHO)))
    message = reply["choices"][0]["message"]
    assert message["tool_calls"] == TOOL_CALLS and message["content"] is None
    assert reply["sources"][0]["doc_id"] == "pump"
    # No text to check against the sources: flagged as unsupported, not replaced.
    assert reply["grounding"]["status"] == "answered"
    assert reply["grounding"]["support"]["supported"] is False


async def test_a_stream_holds_its_adapter_and_meter_until_its_last_byte() -> None:
    engine = Engine()
    service, loras, metrics = _service(engine)
    options = {"include_usage": False}
    request = _chat("tickets", TOOL_TURN, stream=True, stream_options=options)
    response = await service.chat(request, WHO)
    assert isinstance(response, StreamingResponse)
    in_flight = {"route": "chat", "model": "tickets@v1"}
    assert loras.leased("tickets@v1")
    assert metrics.registry.get_sample_value("ragdock_requests_in_flight", in_flight) == 1
    body = await _read(response)
    assert body.endswith(b"data: [DONE]\n\n") and b'"usage"' not in body
    assert engine.chats[0]["stream_options"] == {"include_usage": True}  # asked for the count
    assert not loras.leased("tickets@v1")
    assert metrics.registry.get_sample_value("ragdock_requests_in_flight", in_flight) == 0
    done = {**in_flight, "status": "200"}
    assert metrics.registry.get_sample_value("ragdock_requests_total", done) == 1
    tokens = metrics.registry.get_sample_value(
        "ragdock_completion_tokens_total", {"model": "tickets@v1"}
    )
    assert tokens == 3


async def test_an_engine_error_is_relayed_in_openai_shape_and_lets_the_adapter_go() -> None:
    def refusing(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/load_lora_adapter":
            return httpx.Response(200, text="ok")
        vllm = {"message": "max_tokens too big", "type": "BadRequestError", "param": "max_tokens"}
        return httpx.Response(400, json={"error": {**vllm, "code": 400}})

    client = engine_over(refusing)
    metrics = GatewayMetrics()
    loras = LoraManager(RuntimeApiLoader(client, capacity=2, metrics=metrics))
    catalog = OneAdapterCatalog()
    judge = AnswerJudge(client, catalog, metrics, DEFAULT_ABSTENTION_MESSAGE)
    service = CompletionService(
        client, catalog, loras, metrics, GroundingStep(None, judge, metrics)
    )
    for stream in (False, True):
        request = _chat("tickets", TOOL_TURN, stream=stream, max_tokens=99999)
        response = await service.chat(request, WHO)
        assert response.status_code == 400
        error = json.loads(await _read(response))["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == "max_tokens"
        assert not loras.leased("tickets@v1")
    labels = {"route": "chat", "model": "tickets@v1", "status": "400"}
    assert metrics.registry.get_sample_value("ragdock_requests_total", labels) == 2


class EndlessEngine:
    """Streams until the gateway closes the connection, and records that it did."""

    def __init__(self) -> None:
        self.responses: list[httpx.Response] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/load_lora_adapter":
            return httpx.Response(200, text="ok")
        self.responses.append(httpx.Response(200, content=self._tokens()))
        return self.responses[-1]

    @property
    def closed(self) -> bool:
        return all(response.is_closed for response in self.responses)

    async def _tokens(self) -> AsyncIterator[bytes]:
        while True:
            yield chat_stream("tickets@v1", ["more"]).split(b"\n\n")[0] + b"\n\n"


@pytest.mark.parametrize("read_first", [False, True], ids=["before-first-byte", "mid-way"])
async def test_a_client_that_leaves_lets_the_engine_adapter_and_meter_go(read_first: bool) -> None:
    engine = EndlessEngine()
    client = engine_over(engine)
    metrics = GatewayMetrics()
    loras = LoraManager(RuntimeApiLoader(client, capacity=2, metrics=metrics))
    catalog = OneAdapterCatalog()
    judge = AnswerJudge(client, catalog, metrics, DEFAULT_ABSTENTION_MESSAGE)
    service = CompletionService(
        client, catalog, loras, metrics, GroundingStep(None, judge, metrics)
    )
    response = await service.chat(_chat("tickets", TOOL_TURN[:1], stream=True), WHO)
    assert isinstance(response, StreamingResponse) and response.background is not None
    if read_first:
        assert await anext(aiter(response.body_iterator))
    assert loras.leased("tickets@v1") and not engine.closed
    await response.background()  # Starlette runs it once the client is gone
    assert engine.closed and not loras.leased("tickets@v1")
    in_flight = {"route": "chat", "model": "tickets@v1"}
    assert metrics.registry.get_sample_value("ragdock_requests_in_flight", in_flight) == 0
