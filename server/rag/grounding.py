"""Grounding policy as pure functions: the grounded conversation, the post-check of an answer,
and the abstention the gateway sends without calling the model."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import Any

from retrieval.grounded_prompt import PromptSource, cited_sources, grounded_messages, is_abstention
from server.errors import InvalidRequestError
from server.rag.protocol import Grounding, Source


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
    system text), earlier turns as they were, and the last question over numbered sources."""
    question = question_of(messages)
    prompt_sources = [PromptSource(text=s.text, title=s.title) for s in sources]
    system, user = grounded_messages(
        question, prompt_sources, abstention_message=abstention_message
    )
    client_system = [
        str(m.get("content") or "") for m in messages if m.get("role") in ("system", "developer")
    ]
    if any(client_system):
        system = {
            **system,
            "content": "\n\n".join([system["content"], *filter(None, client_system)]),
        }
    last_user = max(i for i, m in enumerate(messages) if m.get("role") == "user")
    history = [m for m in messages[:last_user] if m.get("role") in ("user", "assistant")]
    return [system, *history, user]


def post_check(
    answer: str,
    source_count: int,
    abstention_message: str,
    top_score: float | None,
    threshold: float,
) -> Grounding:
    """Classify a model answer: abstained, answered with valid citations, or flagged."""
    if is_abstention(answer, abstention_message):
        return Grounding(
            status="abstained", reason="model_abstained", top_score=top_score, threshold=threshold
        )
    cited = cited_sources(answer)
    invalid = [n for n in cited if not 1 <= n <= source_count]
    if invalid:
        reason = "invalid_citation"
    elif not cited:
        reason = "no_citation"
    else:
        reason = "cited"
    return Grounding(
        status="answered", reason=reason, top_score=top_score, threshold=threshold,
        citations=[n for n in cited if n not in invalid], invalid_citations=invalid,
    )  # fmt: skip


def abstention_completion(model: str, message: str, grounding: Grounding) -> dict[str, Any]:
    """A chat.completion object answering with the abstention message (no model call)."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": message},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        "sources": [],
        "grounding": grounding.model_dump(),
    }


def abstention_events(
    model: str, message: str, grounding: Grounding, with_usage: bool
) -> list[bytes]:
    """The same abstention as a stream of chat.completion.chunk events."""
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
        {**base, "choices": [], "sources": [], "grounding": grounding.model_dump()},
    ]
    if with_usage:
        chunks.append(
            {
                **base,
                "choices": [],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            }
        )
    return [sse(chunk) for chunk in chunks] + [b"data: [DONE]\n\n"]


def sse(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"
