"""Grounding policy as pure functions: the grounded conversation, the answer-or-abstain decision
at the reply's first token, the post-check of a finished answer (citations and support), and the
abstention the gateway sends in the model's place."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from grounding.answerability import (
    AnswerabilitySignals,
    Calibration,
    abstention_probability,
    answer_support,
    question_coverage,
)
from grounding.prompt import PromptSource, cited_sources, grounded_messages, is_abstention
from server.errors import InvalidRequestError
from server.rag.protocol import Answerability, Grounding, Source, Support
from server.relay.framing import DONE_EVENT, sse_event

# Top logprobs asked of the engine for the reply's first token: enough to hold the abstention's
# first piece whenever it has any real probability.
DECISION_TOP_LOGPROBS = 5
_SYSTEM_ROLES = ("system", "developer")


def question_of(messages: Sequence[dict[str, Any]]) -> str:
    """The text of the last user message (what retrieval searches for).

    Raises:
        InvalidRequestError: there is no user message with text.
    """
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            if isinstance(content, str) and content.strip():
                return content.strip()
    raise InvalidRequestError("RAG needs a user message with text", param="messages")


def grounded_conversation(
    messages: Sequence[dict[str, Any]], sources: Sequence[Source], abstention_message: str
) -> list[dict[str, Any]]:
    """The conversation sent to the model: the grounding instruction (plus the client's own
    system text), earlier turns as they were, the last question over numbered sources, and what
    followed it (the assistant's tool calls and their results, in a tool-using turn)."""
    question = question_of(messages)
    prompt_sources = [PromptSource(text=s.text, title=s.title) for s in sources]
    system, user = grounded_messages(
        question, prompt_sources, abstention_message=abstention_message
    )
    client_system = [
        str(m.get("content") or "") for m in messages if m.get("role") in _SYSTEM_ROLES
    ]
    if any(client_system):
        system = {
            **system,
            "content": "\n\n".join([system["content"], *filter(None, client_system)]),
        }
    last_user = max(i for i, m in enumerate(messages) if m.get("role") == "user")
    # The client's system text is in the instruction already; every other turn keeps its place.
    history = [m for m in messages[:last_user] if m.get("role") not in _SYSTEM_ROLES]
    after = [m for m in messages[last_user + 1 :] if m.get("role") not in _SYSTEM_ROLES]
    return [system, *history, user, *after]


@dataclass(frozen=True)
class AnswerDecision:
    """What the gateway does with a grounded reply once its first token is known.

    `action`: `relay` the model's reply, `abstain` in its place (it began an answer the score
    does not support), or `reask` with the abstention's first token banned (it began to abstain
    but the score says the sources answer the question).
    """

    action: Literal["relay", "abstain", "reask"]
    info: Answerability


def decide_answer(
    first_token: str,
    top_logprobs: Sequence[dict[str, Any]],
    *,
    question: str,
    sources: Sequence[Source],
    top_score: float | None,
    calibration: Calibration | None,
    threshold: float | None,
    abstention_message: str,
) -> AnswerDecision:
    """Answer or abstain by the calibrated score rather than by the model's first token alone.

    Without a calibration (the base model, an adapter never calibrated) or without a threshold
    (a calibration not enforced, and none asked for) the model's own choice stands; the signals,
    and the score where there is a calibration, are reported for the record.
    """
    signals = AnswerabilitySignals(
        p_abstain=abstention_probability(top_logprobs, abstention_message),
        question_coverage=question_coverage(question, [s.text for s in sources]),
        top_score=top_score,
    )
    starts_abstaining = bool(first_token.strip()) and abstention_message.strip().startswith(
        first_token.lstrip(" \u2581")
    )
    if calibration is None or threshold is None:
        unscored = Answerability(
            score=None if calibration is None else calibration.score(signals),
            decision="model",
            p_abstain=signals.p_abstain,
            question_coverage=signals.question_coverage,
        )
        return AnswerDecision("relay", unscored)
    score = calibration.score(signals)
    answer = score >= threshold
    scored = Answerability(
        score=score,
        threshold=threshold,
        decision="answer" if answer else "abstain",
        p_abstain=signals.p_abstain,
        question_coverage=signals.question_coverage,
    )
    if answer:
        return AnswerDecision("reask" if starts_abstaining else "relay", scored)
    return AnswerDecision("relay" if starts_abstaining else "abstain", scored)


def post_check(
    answer: str,
    sources: Sequence[Source],
    abstention_message: str,
    top_score: float | None,
    threshold: float,
    *,
    min_support: float = 0.0,
    enforce_support: bool = True,
    answerability: Answerability | None = None,
) -> Grounding:
    """Classify a finished answer: abstained, answered with valid citations, or flagged.

    An answer whose content words the cited sources hold less than `min_support` of is
    unsupported: with `enforce_support` it becomes an abstention (the caller replaces the text),
    otherwise (a stream already sent) it stays answered and is flagged in `support`.
    """
    if is_abstention(answer, abstention_message):
        reason = "model_abstained"
        if answerability is not None and answerability.decision == "abstain":
            reason = "low_answerability"
        return Grounding(
            status="abstained", reason=reason, top_score=top_score, threshold=threshold,
            answerability=answerability, support=None,
        )  # fmt: skip
    cited = cited_sources(answer)
    invalid = [n for n in cited if not 1 <= n <= len(sources)]
    valid = [n for n in cited if n not in invalid]
    found = answer_support(answer, [s.text for s in sources], valid)
    support = Support(
        supported=found.overlap >= min_support,
        overlap=found.overlap,
        verbatim=found.verbatim,
        min_support=min_support,
    )
    if not support.supported and enforce_support:
        return Grounding(
            status="abstained", reason="unsupported", top_score=top_score, threshold=threshold,
            answerability=answerability, support=support,
        )  # fmt: skip
    if invalid:
        reason = "invalid_citation"
    elif not cited:
        reason = "no_citation"
    else:
        reason = "cited"
    return Grounding(
        status="answered", reason=reason, top_score=top_score, threshold=threshold,
        citations=valid, invalid_citations=invalid, answerability=answerability, support=support,
    )  # fmt: skip


def abstention_grounding(
    info: Answerability, top_score: float | None, threshold: float
) -> Grounding:
    """The verdict when the score, not the model, decided to abstain."""
    return Grounding(
        status="abstained",
        reason="low_answerability",
        top_score=top_score,
        threshold=threshold,
        answerability=info,
        support=None,
    )


def abstention_completion(model: str, message: str, grounding: Grounding) -> dict[str, Any]:
    """A chat.completion object answering with the abstention message (no model call)."""
    return {
        **gateway_completion(model, message),
        "sources": [],
        "grounding": grounding.model_dump(),
    }


def is_structured(payload: dict[str, Any]) -> bool:
    """The request holds its reply to a JSON format (such a reply is flagged, never replaced)."""
    response_format = payload.get("response_format")
    return isinstance(response_format, dict) and response_format.get("type") in (
        "json_schema",
        "json_object",
    )


def gateway_completion(model: str, text: str) -> dict[str, Any]:
    """A chat.completion object the gateway writes itself (no model call, no usage)."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def abstention_events(
    model: str, message: str, grounding: Grounding, with_usage: bool, *, sources_sent: bool = False
) -> list[bytes]:
    """The same abstention as a stream of chat.completion.chunk events (`sources_sent`: the
    stream already opened with its sources event, so the closing event does not repeat them)."""
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model}  # fmt: skip
    chunks: list[dict[str, Any]] = [
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": message},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
        },
        {**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]},
        {
            **base,
            "choices": [],
            **({} if sources_sent else {"sources": []}),
            "grounding": grounding.model_dump(),
        },
    ]
    if with_usage:
        chunks.append(
            {
                **base,
                "choices": [],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            }
        )
    return [sse_event(chunk) for chunk in chunks] + [DONE_EVENT]


def first_token(logprobs: Any) -> tuple[str, list[dict[str, Any]]] | None:
    """The first generated token and its top logprobs from a chat choice's `logprobs` (a whole
    reply's or one stream chunk's); None when it carries none."""
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not content or not isinstance(content[0], dict):
        return None
    head = content[0]
    return str(head.get("token", "")), list(head.get("top_logprobs") or [])
