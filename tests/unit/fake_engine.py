"""A scripted stand-in for the vLLM engine, for tests that must not start it: an `EngineClient`
over `httpx.MockTransport`, and streams in the exact bytes vLLM writes (compact JSON, one blank
line after each event, the usage-only chunk, `[DONE]`), which a test can cut wherever it likes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx

from server.engine_client import EngineClient
from server.relay.framing import DONE_EVENT, sse_event

Handler = Callable[[httpx.Request], httpx.Response]


def engine_over(handler: Handler) -> EngineClient:
    """The real engine client, talking to `handler` instead of a server."""
    return EngineClient(
        "http://engine.test",
        connect_timeout_s=1.0,
        read_timeout_s=5.0,
        max_connections=4,
        retry_after_s=1,
        transport=httpx.MockTransport(handler),
    )


def event(data: dict[str, Any]) -> bytes:
    """One event as vLLM writes it (pydantic's compact JSON; test_relay pins those bytes)."""
    return sse_event(data)


def chunk(model: str, delta: dict[str, Any], *, logprobs: Any = None, finish: Any = None) -> bytes:
    return event(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": model,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
            ],
        }
    )


def usage_chunk(model: str, prompt_tokens: int, completion_tokens: int) -> bytes:
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    return event(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": model,
            "choices": [],
            "usage": usage,
        }
    )


DONE = DONE_EVENT


def token_logprobs(token: str, alternatives: Sequence[tuple[str, float]]) -> dict[str, Any]:
    """A chat choice's `logprobs` for one token and its top alternatives."""
    top = [{"token": t, "logprob": lp, "bytes": None} for t, lp in alternatives]
    return {"content": [{"token": token, "logprob": top[0]["logprob"], "top_logprobs": top}]}


def chat_stream(model: str, words: Sequence[str], *, prompt_tokens: int = 7) -> bytes:
    """A whole chat stream: role chunk, a comment line, one chunk per word (the last one with
    its finish reason), the usage chunk and [DONE]."""
    parts = [chunk(model, {"role": "assistant", "content": ""}), b": keep-alive\n\n"]
    for i, word in enumerate(words):
        finish = "stop" if i == len(words) - 1 else None
        parts.append(chunk(model, {"content": word}, finish=finish))
    parts += [usage_chunk(model, prompt_tokens, len(words)), DONE]
    return b"".join(parts)


async def pieces(data: bytes, cuts: Sequence[int]) -> AsyncIterator[bytes]:
    """`data` as network reads that end at the offsets in `cuts`."""
    start = 0
    for cut in [*cuts, len(data)]:
        yield data[start:cut]
        start = cut


def streamed(data: bytes, cuts: Sequence[int]) -> httpx.Response:
    """A 200 event-stream response whose body arrives cut at `cuts`."""
    return httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content=pieces(data, cuts)
    )


def body_of(request: httpx.Request) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(request.content)
    return payload
