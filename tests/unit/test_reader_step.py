"""The grounding step with a reader (the weightless `PhraseReader`): the plan made while the engine
prefills, then answer (citations repaired), extract (the reader's span) or abstain, whole and
streamed, and `answer_mode: extract` without the engine."""

from __future__ import annotations

import json
from typing import Any, cast

import httpx
import pytest
from fastapi.responses import JSONResponse, StreamingResponse

from grounding.policy import DecisionModel
from grounding.prompt import DEFAULT_ABSTENTION_MESSAGE
from retrieval.service import Retriever
from retrieval.types import ScoredChunk
from server.engine_client import EngineClient
from server.errors import InvalidRequestError
from server.metrics import GatewayMetrics, RequestMeter
from server.model_catalog import ResolvedModel
from server.rag.judge import AnswerJudge
from server.rag.reading import SourceReader
from server.rag.service import RagService
from server.rag.step import GroundedChat, GroundingStep
from server.relay.engine_call import EngineCall
from server.relay.framing import event_data, events_of
from server.relay.stream import EngineStream
from tests.fakes.reader import PhraseReader
from tests.unit.fake_engine import DONE, body_of, chunk, engine_over, streamed, usage_chunk
from tests.unit.test_grounded_step import (
    MODEL,
    WHO,
    FixedCalibration,
    SetRetriever,
    _no_engine,
    _no_reload,
    _request,
)

pytestmark = pytest.mark.anyio

PUMP = "The pump is serviced every 90 days by the facilities team."
FILTER = "Filters are changed monthly by the night shift."
VALVE = "Valve V-7 is rated for 16 bar."


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _sources() -> list[ScoredChunk]:
    return [
        ScoredChunk(
            f"c{n}", f"d{n}", f"Doc {n}", f"kb://{n}", 1.0 / n, text, "2026-01-01", similarity=0.3
        )
        for n, text in enumerate([VALVE, FILTER, PUMP], start=1)
    ]


class WordEngine:
    """Answers every chat with `text`, whole or streamed word by word."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.chats: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = body_of(request)
        self.chats.append(body)
        if body.get("stream"):
            words = [w if i == 0 else " " + w for i, w in enumerate(self.text.split(" "))]
            role = chunk(MODEL, {"role": "assistant", "content": ""})
            parts = b"".join(chunk(MODEL, {"content": w}) for w in words)
            return streamed(role + parts + usage_chunk(MODEL, 40, len(words)) + DONE, [])
        message = {"role": "assistant", "content": self.text}
        usage = {"prompt_tokens": 40, "completion_tokens": 5, "total_tokens": 45}
        return httpx.Response(200, json={"choices": [{"index": 0, "message": message}],
                                         "usage": usage})  # fmt: skip


def _step(
    engine: EngineClient, reader: PhraseReader | None, **rag: Any
) -> tuple[GroundingStep, GatewayMetrics]:
    metrics = GatewayMetrics()
    service = RagService(
        cast(Retriever, SetRetriever(_sources())), default_top_k=3, default_min_score=0.35,
        collection_min_scores={}, model_defaults={}, metrics=metrics, retry_after_s=1,
        reader_min_score=0.15, default_min_support=0.5, **rag,
    )  # fmt: skip
    judge = AnswerJudge(engine, FixedCalibration(None), metrics, DEFAULT_ABSTENTION_MESSAGE)
    source_reader = SourceReader(reader, metrics) if reader is not None else None
    return GroundingStep(service, judge, metrics, source_reader), metrics


async def _prepared(engine: WordEngine, reader: PhraseReader, **fields: Any) -> Any:
    client = engine_over(engine)
    step, metrics = _step(client, reader)
    request = _request(**fields)
    prepared = await step.prepare(request, WHO)
    return prepared, client, request, metrics


async def _whole(engine: WordEngine, reader: PhraseReader, **rag: Any) -> dict[str, Any]:
    prepared, client, request, _ = await _prepared(
        engine, reader, rag={"collection": "manuals", **rag}
    )
    assert isinstance(prepared, GroundedChat)
    payload = prepared.engine_payload(request.to_engine_payload(MODEL))
    assert "logprobs" not in payload  # the reader decides: the first token's are not needed
    call = EngineCall(client, "/v1/chat/completions", meter=RequestMeter(GatewayMetrics(), "chat",
                      MODEL, 0.0), reload=_no_reload, keep_usage=False)  # fmt: skip
    reply = await call.post(json.dumps(payload).encode())
    response = await prepared.reply(reply.content, payload, ResolvedModel(MODEL), call)
    out: dict[str, Any] = json.loads(bytes(response.body))
    return out


async def _stream(engine: WordEngine, reader: PhraseReader, **rag: Any) -> list[dict[str, Any]]:
    prepared, client, request, _ = await _prepared(
        engine, reader, rag={"collection": "manuals", **rag}, stream=True
    )
    assert isinstance(prepared, GroundedChat)
    payload = prepared.engine_payload(request.to_engine_payload(MODEL))
    call = EngineCall(client, "/v1/chat/completions", meter=RequestMeter(GatewayMetrics(), "chat",
                      MODEL, 0.0), reload=_no_reload, keep_usage=False)  # fmt: skip
    opened = await call.open(json.dumps(payload).encode())
    assert isinstance(opened, EngineStream)
    events = prepared.stream(opened, payload, ResolvedModel(MODEL), call, keep_usage=False)
    body = b"".join([part async for part in events])
    found = events_of(body)
    assert found[-1] == b"data: [DONE]"
    return [event_data(e) for e in found[:-1]]


def _text(chunks: list[dict[str, Any]]) -> str:
    return "".join(
        (c["choices"][0]["delta"].get("content") or "") for c in chunks if c.get("choices")
    )


async def test_a_right_answer_citing_the_wrong_source_comes_back_cited_right() -> None:
    reply = await _whole(
        WordEngine("The pump is serviced every 90 days [1]."), PhraseReader(["90 days"])
    )
    assert reply["choices"][0]["message"]["content"] == "The pump is serviced every 90 days [3]."
    grounding = reply["grounding"]
    assert grounding["outcome"] == "answer" and grounding["why"] == "citation_repaired"
    assert grounding["citations"] == [3] and grounding["answer_mode"] == "auto"
    assert grounding["reader"]["span"] == "90 days" and grounding["reader"]["source"] == 3
    assert grounding["reader"]["chunk_id"] == "c3" and grounding["reader"]["calibrated"] is False


async def test_an_unsupported_answer_with_a_confident_span_is_served_as_the_span() -> None:
    reply = await _whole(
        WordEngine("The pump is replaced yearly [2]."), PhraseReader(["every 90 days"])
    )
    assert reply["choices"][0]["message"]["content"] == "every 90 days [3]"
    assert reply["grounding"]["outcome"] == "extract"
    assert reply["grounding"]["why"] == "generated_unsupported"
    assert reply["grounding"]["citations"] == [3] and reply["grounding"]["status"] == "answered"


async def test_a_generator_abstention_with_a_confident_span_is_served_as_the_span() -> None:
    reply = await _whole(WordEngine(DEFAULT_ABSTENTION_MESSAGE), PhraseReader(["16 bar"]))
    assert reply["choices"][0]["message"]["content"] == "16 bar [1]"
    assert reply["grounding"]["why"] == "generator_abstained"


async def test_no_confident_span_abstains_whatever_the_generator_wrote() -> None:
    reply = await _whole(WordEngine("The pump is serviced every 90 days [3]."), PhraseReader([]))
    assert reply["choices"][0]["message"]["content"] == DEFAULT_ABSTENTION_MESSAGE
    grounding = reply["grounding"]
    assert grounding["status"] == "abstained" and grounding["reason"] == "low_answerability"
    assert grounding["why"] == "not_answerable" and grounding["reader"]["margin"] < 0
    assert reply["sources"][2]["chunk_id"] == "c3"  # the sources it read are still shown


async def test_generate_mode_abstains_on_an_unsupported_answer_instead_of_extracting() -> None:
    reply = await _whole(
        WordEngine("The pump is replaced yearly [2]."), PhraseReader(["every 90 days"]),
        answer_mode="generate",
    )  # fmt: skip
    assert reply["choices"][0]["message"]["content"] == DEFAULT_ABSTENTION_MESSAGE
    assert reply["grounding"]["reason"] == "unsupported"
    assert reply["grounding"]["answer_mode"] == "generate"


async def test_a_calibrated_decision_and_a_request_threshold_decide() -> None:
    strict = DecisionModel(("reader_margin",), (1.0,), -10.0, 0.5)  # margin 6 -> p = 0.02
    reader = PhraseReader(["90 days"], strict)
    reply = await _whole(WordEngine("Every 90 days [3]."), reader)
    assert reply["grounding"]["status"] == "abstained"
    assert reply["grounding"]["reader"]["calibrated"] is True
    reply = await _whole(WordEngine("Every 90 days [3]."), reader, min_answerability=0.01)
    assert reply["grounding"]["outcome"] == "answer"
    assert reply["grounding"]["reader"]["threshold"] == 0.01


async def test_a_repaired_stream_sends_nothing_before_it_is_settled() -> None:
    chunks = await _stream(WordEngine("Serviced every 90 days [1]."), PhraseReader(["90 days"]))
    assert chunks[0]["sources"][2]["text"] == PUMP and chunks[0]["choices"] == []
    assert _text(chunks) == "Serviced every 90 days [3]."  # never the [1] that was generated
    assert chunks[-1]["grounding"]["why"] == "citation_repaired"


async def test_a_supported_stream_is_relayed_as_the_engine_wrote_it() -> None:
    chunks = await _stream(WordEngine("Serviced every 90 days [3]."), PhraseReader(["90 days"]))
    assert _text(chunks) == "Serviced every 90 days [3]."
    assert len([c for c in chunks if c.get("choices")]) > 3  # the engine's own chunks
    assert chunks[-1]["grounding"]["why"] == "supported"


async def test_a_stream_the_reader_abstains_on_never_shows_the_answer() -> None:
    chunks = await _stream(WordEngine("Serviced every 90 days [3]."), PhraseReader([]))
    assert _text(chunks) == DEFAULT_ABSTENTION_MESSAGE
    assert chunks[-1]["grounding"]["reason"] == "low_answerability"


async def test_extract_mode_answers_with_the_span_without_the_engine() -> None:
    step, metrics = _step(engine_over(_no_engine), PhraseReader(["16 bar"]))
    prepared = await step.prepare(_request(rag={"collection": "m", "answer_mode": "extract"}), WHO)
    assert isinstance(prepared, JSONResponse)
    reply = json.loads(bytes(prepared.body))
    assert reply["choices"][0]["message"]["content"] == "16 bar [1]"
    assert reply["grounding"]["outcome"] == "extract" and reply["grounding"]["why"] == "extracted"
    labels = {"collection": "m", "mode": "extract", "outcome": "extract", "why": "extracted"}
    assert metrics.registry.get_sample_value("ragdock_reader_outcomes_total", labels) == 1
    streamed_reply = await step.prepare(
        _request(rag={"collection": "m", "answer_mode": "extract"}, stream=True), WHO
    )
    assert isinstance(streamed_reply, StreamingResponse)
    body = b"".join([part async for part in streamed_reply.body_iterator])  # type: ignore[misc]
    chunks = [event_data(e) for e in events_of(body)[:-1]]
    assert chunks[0]["sources"][0]["text"] == VALVE and _text(chunks) == "16 bar [1]"


async def test_extract_without_a_reader_is_refused() -> None:
    step, _ = _step(engine_over(_no_engine), None)
    with pytest.raises(InvalidRequestError, match="reader") as caught:
        await step.prepare(_request(rag={"collection": "m", "answer_mode": "extract"}), WHO)
    assert caught.value.param == "rag.answer_mode"


async def test_with_a_reader_the_cheap_gate_is_lower() -> None:
    # The sources sit at similarity 0.3: under the reader-less gate (0.35), over the reader's.
    step, _ = _step(engine_over(_no_engine), None)
    assert isinstance(await step.prepare(_request(), WHO), JSONResponse)
    step, _ = _step(engine_over(_no_engine), PhraseReader([]))
    assert isinstance(await step.prepare(_request(), WHO), GroundedChat)
