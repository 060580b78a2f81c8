"""Grounded replies decided by the reader: the policy's plan (made while the engine prefilled)
settled against the generated answer, as a whole reply, as a stream, or without the engine.

A stream is decided before its first content token and never takes text back: when the plan
abstains the engine's stream is closed at once; otherwise the answer is held until it is whole,
checked against the sources (its citations repaired, or the reader's span served in its place),
and only then sent.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from grounding.policy import Settled, settle
from grounding.prompt import is_abstention
from server.errors import EngineUnavailableError, sse_error_event
from server.metrics import GatewayMetrics
from server.rag.grounding import (
    abstention_completion,
    abstention_events,
    gateway_completion,
    is_structured,
)
from server.rag.protocol import Grounding, Support
from server.rag.reading import Reading
from server.rag.turn import GroundedTurn
from server.relay.framing import DATA_PREFIX, DONE, DONE_EVENT, SEPARATOR, event_data, sse_event
from server.relay.stream import EngineStream

_ABSTAIN_REASONS = {
    "not_answerable": "low_answerability",
    "no_span": "low_answerability",
    "generated_unsupported": "unsupported",
    "generator_abstained": "model_abstained",
}


def grounding_of(turn: GroundedTurn, reading: Reading, settled: Settled) -> Grounding:
    """The client's `grounding` for a reply the reader's plan decided."""
    outcome = turn.outcome
    checked = settled.checked
    support = None
    if checked is not None:
        support = Support(
            supported=checked.supported,
            overlap=checked.overlap,
            verbatim=checked.verbatim,
            min_support=turn.min_support,
        )
    if settled.outcome == "abstain":
        status, reason = "abstained", _ABSTAIN_REASONS.get(settled.why, "low_answerability")
    elif settled.outcome == "extract":
        status, reason = "answered", "extracted"
    else:
        status = "answered"
        reason = "citation_repaired" if settled.why == "citation_repaired" else "cited"
    return Grounding(
        status=status,
        reason=reason,
        top_score=outcome.top_score,
        threshold=outcome.threshold,
        citations=settled.citations,
        invalid_citations=checked.dropped if checked is not None else [],
        support=support,
        answer_mode=reading.plan.mode,
        outcome=settled.outcome,
        why=settled.why,
        reader=reading.verdict(outcome.sources),
    )


class ReaderReplies:
    """Builds the replies; counts each outcome.

    Args:
        metrics: where outcomes are counted.
        abstention_message: the exact reply that means "the sources do not say".
    """

    def __init__(self, metrics: GatewayMetrics, abstention_message: str) -> None:
        self._metrics = metrics
        self.abstention_message = abstention_message

    async def reading(self, turn: GroundedTurn) -> Reading:
        if turn.reading is None:
            raise RuntimeError("the turn was not read")  # a wiring error, not the caller's
        return await turn.reading

    def settle(self, turn: GroundedTurn, reading: Reading, generated: str | None) -> Settled:
        """The reply for the plan and the generated answer (None: the engine was not asked)."""
        settled = settle(
            reading.plan,
            generated,
            [s.text for s in turn.outcome.sources],
            generator_abstained=generated is not None
            and is_abstention(generated, self.abstention_message),
            min_support=turn.min_support,
        )
        self._metrics.reader_outcomes.labels(
            turn.collection, reading.plan.mode, settled.outcome, settled.why
        ).inc()
        status = "abstained" if settled.outcome == "abstain" else "answered"
        self._metrics.grounded_outcome(turn.collection, turn.tenant, status, settled.why)
        return settled

    # ------------------------------------------------------------------------------ whole
    async def whole(
        self, turn: GroundedTurn, content: bytes, payload: dict[str, Any]
    ) -> dict[str, Any]:
        """The chat.completion the client receives for the engine's whole 200 reply.

        A reply that calls tools, or one held to a JSON format, is relayed as it is, with the
        reader's findings reported: its text is not an answer to replace.
        """
        reading = await self.reading(turn)
        body: dict[str, Any] = json.loads(content)
        choices = body.get("choices") or [{}]
        message = choices[0].get("message") or {}
        text = message.get("content") or ""
        if bool(message.get("tool_calls")) or is_structured(payload):
            settled = Settled("answer", text, [], "not_checked")
        else:
            settled = self.settle(turn, reading, text)
            if settled.outcome == "abstain":
                reply = self.abstention(turn, reading, settled, model=str(body.get("model", "")))
                reply["usage"] = body.get("usage") or reply["usage"]
                return reply
            message["content"] = settled.text
            for extra in choices[1:]:  # n > 1: the other choices are judged the same way
                extra_message = extra.get("message") or {}
                again = self.settle(turn, reading, extra_message.get("content") or "")
                extra_message["content"] = again.text or self.abstention_message
        if not turn.client_logprobs:
            for item in choices:
                item["logprobs"] = None
        body["sources"] = turn.sources()
        body["grounding"] = grounding_of(turn, reading, settled).model_dump()
        return body

    def abstention(
        self, turn: GroundedTurn, reading: Reading, settled: Settled, *, model: str
    ) -> dict[str, Any]:
        reply = abstention_completion(
            model, self.abstention_message, grounding_of(turn, reading, settled)
        )
        reply["sources"] = turn.sources()
        return reply

    def extracted(self, turn: GroundedTurn, reading: Reading, *, model: str) -> dict[str, Any]:
        """`answer_mode: extract`: the reader's span (or the abstention), no engine call."""
        settled = self.settle(turn, reading, None)
        if settled.outcome == "abstain":
            return self.abstention(turn, reading, settled, model=model)
        reply = gateway_completion(model, settled.text or "")
        reply["sources"] = turn.sources()
        reply["grounding"] = grounding_of(turn, reading, settled).model_dump()
        return reply

    def extracted_events(
        self, turn: GroundedTurn, reading: Reading, *, model: str, with_usage: bool
    ) -> list[bytes]:
        """The same as a stream (sources first, then the span or the abstention)."""
        settled = self.settle(turn, reading, None)
        grounding = grounding_of(turn, reading, settled)
        head = sse_event(_chunk(model, [], sources=turn.sources()))
        if settled.outcome == "abstain":
            return [head, *abstention_events(
                model, self.abstention_message, grounding, with_usage, sources_sent=True
            )]  # fmt: skip
        return [head, *_text_events(model, settled.text or "", grounding, usage=None,
                                    with_usage=with_usage)]  # fmt: skip

    # ----------------------------------------------------------------------------- stream
    async def stream(
        self,
        turn: GroundedTurn,
        stream: EngineStream,
        *,
        payload: dict[str, Any],
        label: str,
        keep_usage: bool,
    ) -> AsyncGenerator[bytes, None]:
        """The client's events for a grounded stream the engine has opened.

        Raises:
            EngineUnavailableError: the engine dropped the stream.
        """
        yield sse_event(_chunk(label, [], sources=turn.sources()))
        events = stream.events()
        try:
            reading = await self.reading(turn)
            if not reading.plan.answerable:
                await events.aclose()
                settled = self.settle(turn, reading, None)
                for out in abstention_events(
                    label, self.abstention_message, grounding_of(turn, reading, settled),
                    keep_usage, sources_sent=True,
                ):  # fmt: skip
                    yield out
                return
            held: list[dict[str, Any]] = []
            passthrough: list[bytes] = []  # comments and non-JSON data, relayed as they were
            usage: dict[str, Any] | None = None
            async for event in events:
                if not event.startswith(DATA_PREFIX):
                    if event:
                        passthrough.append(event + SEPARATOR)
                    continue
                if event == DONE:
                    break
                data = event_data(event)
                if not isinstance(data, dict):
                    passthrough.append(event + SEPARATOR)
                elif data.get("usage") and not data.get("choices"):
                    usage = data
                else:
                    held.append(data)
            else:
                raise EngineUnavailableError("the engine ended the stream early", retry_after_s=1)
            text = "".join(
                ((c.get("delta") or {}).get("content") or "")
                for d in held for c in d.get("choices") or [] if c.get("index", 0) == 0
            )  # fmt: skip
            tools = any((c.get("delta") or {}).get("tool_calls")
                        for d in held for c in d.get("choices") or [])  # fmt: skip
            for out in passthrough:
                yield out
            if tools or is_structured(payload):
                settled = Settled("answer", text, [], "not_checked")
                for out in self._replay(turn, held, usage, reading, settled, keep_usage):
                    yield out
                return
            settled = self.settle(turn, reading, text)
            grounding = grounding_of(turn, reading, settled)
            if settled.outcome == "abstain":
                for out in abstention_events(
                    label, self.abstention_message, grounding, keep_usage, sources_sent=True
                ):
                    yield out
            elif settled.text == text:
                for out in self._replay(turn, held, usage, reading, settled, keep_usage):
                    yield out
            else:
                for out in _text_events(label, settled.text or "", grounding, usage=usage,
                                        with_usage=keep_usage):  # fmt: skip
                    yield out
        except EngineUnavailableError as exc:
            yield sse_error_event(exc)
        finally:
            await events.aclose()

    def _replay(
        self,
        turn: GroundedTurn,
        held: list[dict[str, Any]],
        usage: dict[str, Any] | None,
        reading: Reading,
        settled: Settled,
        keep_usage: bool,
    ) -> list[bytes]:
        """The engine's own chunks, unchanged (logprobs stripped unless asked), then the
        verdict, the usage chunk and [DONE]."""
        out = []
        for data in held:
            if not turn.client_logprobs:
                for choice in data.get("choices") or []:
                    choice["logprobs"] = None
            out.append(sse_event(data))
        label = str(held[0].get("model", "")) if held else ""
        grounding = grounding_of(turn, reading, settled).model_dump()
        out.append(sse_event(_chunk(label, [], grounding=grounding)))
        if usage is not None and keep_usage:
            out.append(sse_event(usage))
        return [*out, DONE_EVENT]


def _chunk(model: str, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model, "choices": choices, **extra}  # fmt: skip


def _text_events(
    model: str,
    text: str,
    grounding: Grounding,
    *,
    usage: dict[str, Any] | None,
    with_usage: bool,
) -> list[bytes]:
    """A reply the gateway wrote (a repaired or extracted answer) as stream events."""
    delta = {"role": "assistant", "content": text}
    events = [
        sse_event(_chunk(model, [{"index": 0, "delta": delta, "logprobs": None,
                                  "finish_reason": None}])),
        sse_event(_chunk(model, [{"index": 0, "delta": {}, "logprobs": None,
                                  "finish_reason": "stop"}])),
        sse_event(_chunk(model, [], grounding=grounding.model_dump())),
    ]  # fmt: skip
    if with_usage:
        events.append(
            sse_event(usage or _chunk(model, [], usage={"prompt_tokens": 0,
                                                        "completion_tokens": 0,
                                                        "total_tokens": 0}))
        )  # fmt: skip
    return [*events, DONE_EVENT]
