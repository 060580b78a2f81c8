"""The grounding step on its own, over a scripted engine and a retriever that returns set chunks:
abstention at the gate without the engine, the grounded conversation with numbered sources, and
what clients receive from a grounded reply, whole and streamed (first-token decision, asking again
with the abstention banned, the verdict just before [DONE])."""

from __future__ import annotations

import json
from typing import Any, cast

import httpx
import pytest
from fastapi.responses import JSONResponse, StreamingResponse

from grounding.answerability import Calibration
from grounding.prompt import DEFAULT_ABSTENTION_MESSAGE
from retrieval.service import Retriever
from retrieval.types import ScoredChunk
from server.auth import Principal
from server.engine_client import EngineClient
from server.metrics import GatewayMetrics, RequestMeter
from server.model_catalog import ModelCatalog, ResolvedModel
from server.openai_api.protocol import ChatCompletionRequest
from server.rag.grounding import grounded_conversation
from server.rag.judge import AnswerJudge
from server.rag.service import RagService
from server.rag.step import GroundedChat, GroundingStep
from server.relay.engine_call import EngineCall
from server.relay.framing import event_data, events_of
from server.relay.stream import EngineStream
from tests.unit.fake_engine import (
    DONE,
    body_of,
    chunk,
    engine_over,
    streamed,
    token_logprobs,
    usage_chunk,
)

pytestmark = pytest.mark.anyio

MODEL = "gemma"
QUESTION = "How often is the pump serviced?"
FACT = "The pump is serviced every 90 days by the facilities team."
ANSWER = ["The", " pump", " is", " serviced", " every", " 90", " days", " [1]."]
WHO = Principal(name="app", tenant="acme", scopes=frozenset({"chat"}))
ANSWERS = Calibration((), (), bias=5.0, threshold=0.5, target_hallucination=0.1)
ABSTAINS = Calibration((), (), bias=-5.0, threshold=0.5, target_hallucination=0.1)
ABSTAINING = ["I", " don't", " know", " based", " on", " the", " provided", " sources."]
# The token ids the scripted tokenizer gives the abstention's first token, bare and after a space.
BAN = {DEFAULT_ABSTENTION_MESSAGE: 40, " " + DEFAULT_ABSTENTION_MESSAGE: 358}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class SetRetriever:
    """Returns the same chunks for every search (dense or hybrid)."""

    def __init__(self, chunks: list[ScoredChunk]) -> None:
        self.chunks = chunks
        self.queries: list[tuple[str, str, str]] = []

    def search(self, collection: str, tenant: str, query: str, **_: Any) -> list[ScoredChunk]:
        self.queries.append((collection, tenant, query))
        return self.chunks


class FixedCalibration(ModelCatalog):
    def __init__(self, calibration: Calibration | None) -> None:
        super().__init__(alias=MODEL, engine_name=MODEL, root="base", max_model_len=None)
        self._fixed = calibration

    def calibration(self, model: ResolvedModel) -> Calibration | None:
        return self._fixed


def _chunk(score: float, text: str = FACT) -> ScoredChunk:
    # A hit's similarity is what the gate reads (its fused score says nothing absolute).
    return ScoredChunk(
        "c1", "pump", "Pump manual", "kb://pump", score, text, "2026-01-01", similarity=score
    )


class ScriptedEngine:
    """Tokenizes the abstention; answers chat with `first` (or, asked again with the ban in
    `logit_bias`, with `ANSWER`), whole or streamed."""

    def __init__(self, first: list[str]) -> None:
        self.first = first
        self.chats: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = body_of(request)
        if request.url.path == "/tokenize":
            return httpx.Response(200, json={"tokens": [BAN[body["prompt"]], 1]})
        self.chats.append(body)
        words = ANSWER if body.get("logit_bias") else self.first
        if body.get("stream"):
            return streamed(_stream(words), [])
        message = {"role": "assistant", "content": "".join(words)}
        choice = {"index": 0, "message": message, "logprobs": _logprobs(words[0])}
        usage = {"prompt_tokens": 50, "completion_tokens": len(words), "total_tokens": 0}
        return httpx.Response(200, json={"choices": [choice], "usage": usage})


def _logprobs(first: str) -> dict[str, Any]:
    return token_logprobs(first, [(first, -0.1), ("I", -2.5)])


def _stream(words: list[str]) -> bytes:
    role = chunk(MODEL, {"role": "assistant", "content": ""})
    parts = [chunk(MODEL, {"content": w}, logprobs=_logprobs(w)) for w in words]
    return role + b"".join(parts) + usage_chunk(MODEL, 50, len(words)) + DONE


def _step(
    chunks: list[ScoredChunk], engine: EngineClient, calibration: Calibration | None = None
) -> tuple[GroundingStep, GatewayMetrics, SetRetriever]:
    metrics = GatewayMetrics()
    retriever = SetRetriever(chunks)
    rag = RagService(
        cast(Retriever, retriever), default_top_k=4, default_min_score=0.5,
        collection_min_scores={}, model_defaults={}, metrics=metrics, retry_after_s=1,
    )  # fmt: skip
    judge = AnswerJudge(engine, FixedCalibration(calibration), metrics, DEFAULT_ABSTENTION_MESSAGE)
    return GroundingStep(rag, judge, metrics), metrics, retriever


def _request(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {
            "model": MODEL,
            "messages": [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": QUESTION},
            ],
            "rag": {"collection": "manuals"},
            **fields,
        }
    )


def _no_engine(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"the engine was asked: {request.url}")


@pytest.mark.parametrize("chunks", [[], [_chunk(0.2)]], ids=["nothing", "below-gate"])
async def test_nothing_above_the_gate_abstains_without_the_engine(
    chunks: list[ScoredChunk],
) -> None:
    step, metrics, retriever = _step(chunks, engine_over(_no_engine))
    prepared = await step.prepare(_request(), WHO)
    assert isinstance(prepared, JSONResponse)
    reply = json.loads(bytes(prepared.body))
    assert reply["model"] == MODEL and reply["sources"] == []
    assert reply["choices"][0]["message"]["content"] == DEFAULT_ABSTENTION_MESSAGE
    assert reply["grounding"]["status"] == "abstained"
    assert reply["grounding"]["reason"] == "retrieval_gate"
    assert retriever.queries[0] == ("manuals", "acme", QUESTION)  # the caller's tenant only
    labels = {"collection": "manuals", "status": "abstained", "reason": "retrieval_gate"}
    assert metrics.registry.get_sample_value("ragdock_rag_answers_total", labels) == 1


async def test_a_streamed_abstention_at_the_gate_has_the_abstention_shape() -> None:
    step, _, _ = _step([], engine_over(_no_engine))
    request = _request(stream=True, stream_options={"include_usage": True})
    prepared = await step.prepare(request, WHO)
    assert isinstance(prepared, StreamingResponse)
    assert prepared.media_type == "text/event-stream"
    body = b"".join([part async for part in prepared.body_iterator])  # type: ignore[misc]
    events = events_of(body)
    assert events[-1] == b"data: [DONE]"
    chunks = [event_data(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["content"] == DEFAULT_ABSTENTION_MESSAGE
    assert chunks[1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[2]["sources"] == [] and chunks[2]["grounding"]["reason"] == "retrieval_gate"
    assert chunks[3]["choices"] == [] and chunks[3]["usage"]["total_tokens"] == 0


async def test_above_the_gate_the_question_goes_to_the_engine_over_numbered_sources() -> None:
    second = _chunk(0.7, "Filters are changed monthly.")
    step, _, retriever = _step([_chunk(0.9), second], engine_over(_no_engine))
    prepared = await step.prepare(_request(top_logprobs=2), WHO)
    assert isinstance(prepared, GroundedChat)
    assert len(retriever.queries) == 1  # one search: the gate reads its hits' similarity
    assert prepared.turn.outcome.top_score == 0.9
    system, user = prepared.turn.messages
    assert system["role"] == "system" and system["content"].endswith("Answer briefly.")
    assert DEFAULT_ABSTENTION_MESSAGE in system["content"]
    assert user["role"] == "user"
    assert "[1]" in user["content"] and FACT in user["content"]
    assert "[2]" in user["content"] and "Filters are changed monthly." in user["content"]
    assert user["content"].endswith(f"Question: {QUESTION}")
    assert [s["index"] for s in prepared.turn.sources()] == [1, 2]
    payload = prepared.engine_payload(_request(top_logprobs=2).to_engine_payload(MODEL))
    assert payload["messages"] == prepared.turn.messages and "rag" not in payload
    assert payload["logprobs"] is True and payload["top_logprobs"] == 5


async def test_a_prepared_request_without_rag_is_not_grounded() -> None:
    step, _, retriever = _step([_chunk(0.9)], engine_over(_no_engine))
    plain = ChatCompletionRequest.model_validate(
        {"model": MODEL, "messages": [{"role": "user", "content": QUESTION}]}
    )
    assert await step.prepare(plain, WHO) is None and retriever.queries == []


async def _grounded(
    engine: ScriptedEngine, calibration: Calibration | None, **fields: Any
) -> tuple[GroundedChat, EngineCall, dict[str, Any], GatewayMetrics]:
    client = engine_over(engine)
    step, metrics, _ = _step([_chunk(0.9)], client, calibration)
    request = _request(**fields)
    prepared = await step.prepare(request, WHO)
    assert isinstance(prepared, GroundedChat)
    meter = RequestMeter(metrics, "chat", MODEL, 0.0)
    call = EngineCall(
        client, "/v1/chat/completions", meter=meter, reload=_no_reload,
        keep_usage=request.client_wants_usage,
    )  # fmt: skip
    payload = prepared.engine_payload(request.to_engine_payload(MODEL))
    return prepared, call, payload, metrics


async def _no_reload() -> bool:
    return False


async def _whole(
    engine: ScriptedEngine, calibration: Calibration | None = None, **fields: Any
) -> dict[str, Any]:
    prepared, call, payload, _ = await _grounded(engine, calibration, **fields)
    reply = await call.post(json.dumps(payload).encode())
    response = await prepared.reply(reply.content, payload, ResolvedModel(MODEL), call)
    answer: dict[str, Any] = json.loads(bytes(response.body))
    return answer


async def test_a_whole_grounded_reply_carries_sources_and_a_cited_verdict() -> None:
    engine = ScriptedEngine(ANSWER)
    reply = await _whole(engine)
    assert reply["choices"][0]["message"]["content"] == "".join(ANSWER)
    assert reply["choices"][0]["logprobs"] is None  # the gateway's own logprobs stay its own
    assert reply["sources"][0]["doc_id"] == "pump" and reply["sources"][0]["index"] == 1
    assert reply["grounding"]["status"] == "answered"
    assert reply["grounding"]["reason"] == "cited" and reply["grounding"]["citations"] == [1]
    assert engine.chats[0]["logprobs"] is True and len(engine.chats) == 1


async def test_a_whole_reply_the_score_does_not_support_becomes_the_abstention() -> None:
    reply = await _whole(ScriptedEngine(ANSWER), ABSTAINS)
    assert reply["choices"][0]["message"]["content"] == DEFAULT_ABSTENTION_MESSAGE
    assert reply["grounding"]["reason"] == "low_answerability"
    assert reply["usage"]["prompt_tokens"] == 50 and reply["sources"][0]["index"] == 1


async def test_a_whole_reply_that_began_to_abstain_is_asked_again_with_the_ban() -> None:
    engine = ScriptedEngine(ABSTAINING)
    reply = await _whole(engine, ANSWERS)
    assert engine.chats[1]["logit_bias"] == {"40": -100, "358": -100}
    assert reply["choices"][0]["message"]["content"] == "".join(ANSWER)
    assert reply["grounding"]["answerability"]["reasked"] is True


async def _streamed(
    engine: ScriptedEngine, calibration: Calibration | None = None, **fields: Any
) -> tuple[list[bytes], GatewayMetrics]:
    prepared, call, payload, metrics = await _grounded(engine, calibration, stream=True, **fields)
    opened = await call.open(json.dumps(payload).encode())
    assert isinstance(opened, EngineStream)
    model = ResolvedModel(MODEL)
    keep = bool(fields.get("stream_options"))
    events = prepared.stream(opened, payload, model, call, keep_usage=keep)
    body = b"".join([part async for part in events])
    return events_of(body), metrics


def _data(event: bytes) -> dict[str, Any]:
    data: dict[str, Any] = event_data(event)
    return data


async def test_a_grounded_stream_opens_with_sources_and_closes_with_the_verdict() -> None:
    events, metrics = await _streamed(ScriptedEngine(ANSWER))
    assert _data(events[0])["sources"][0]["doc_id"] == "pump" and _data(events[0])["choices"] == []
    assert events[-1] == b"data: [DONE]"
    verdict = _data(events[-2])
    assert verdict["choices"] == [] and verdict["grounding"]["reason"] == "cited"
    deltas = [_data(e)["choices"][0] for e in events[1:-2]]
    assert "".join(d["delta"].get("content", "") for d in deltas) == "".join(ANSWER)
    assert all(d["logprobs"] is None for d in deltas)
    assert all(b'"usage"' not in e for e in events)  # not asked for: dropped...
    count = metrics.registry.get_sample_value("ragdock_completion_tokens_total", {"model": MODEL})
    assert count == len(ANSWER)  # ...but counted


async def test_a_grounded_stream_keeps_usage_and_logprobs_when_asked() -> None:
    events, _ = await _streamed(
        ScriptedEngine(ANSWER), logprobs=True, stream_options={"include_usage": True}
    )
    usage = [_data(e) for e in events if b'"usage"' in e]
    assert len(usage) == 1 and usage[0]["usage"]["prompt_tokens"] == 50
    assert _data(events[2])["choices"][0]["logprobs"]["content"][0]["token"] == "The"
    # With logprobs asked for, the engine's events go on as they came.
    assert chunk(MODEL, {"content": "The"}, logprobs=_logprobs("The")).rstrip(b"\n") in events


async def test_a_stream_the_score_does_not_support_is_replaced_by_the_abstention() -> None:
    events, _ = await _streamed(ScriptedEngine(ANSWER), ABSTAINS)
    chunks = [_data(e) for e in events[:-1]]
    assert chunks[0]["sources"][0]["index"] == 1
    assert chunks[1]["choices"][0]["delta"]["content"] == DEFAULT_ABSTENTION_MESSAGE
    assert "sources" not in chunks[3] and chunks[3]["grounding"]["reason"] == "low_answerability"
    assert b"pump" not in b"".join(events[1:])  # nothing of the model's answer got out


async def test_a_stream_that_began_to_abstain_is_asked_again_and_relayed_whole() -> None:
    engine = ScriptedEngine(ABSTAINING)
    events, _ = await _streamed(engine, ANSWERS)
    assert len(engine.chats) == 2 and engine.chats[1]["logit_bias"] == {"40": -100, "358": -100}
    text = "".join(
        (_data(e)["choices"][0]["delta"].get("content") or "")
        for e in events[1:-2]
    )  # fmt: skip
    assert text == "".join(ANSWER) and "know" not in text
    assert _data(events[-2])["grounding"]["answerability"]["reasked"] is True


def test_earlier_tool_exchanges_keep_their_place_and_system_text_joins_the_instruction() -> None:
    call = {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function"}]}
    result = {"role": "tool", "tool_call_id": "c1", "content": "42"}
    messages = [
        {"role": "developer", "content": "Use metric units."},
        {"role": "user", "content": "Open a ticket."},
        call,
        result,
        {"role": "assistant", "content": "Ticket 42 is open."},
        {"role": "user", "content": QUESTION},
    ]
    system, *history, user = grounded_conversation(messages, [], DEFAULT_ABSTENTION_MESSAGE)
    assert system["content"].endswith("Use metric units.")
    assert history == messages[1:5]
    assert user["content"].endswith(f"Question: {QUESTION}")
