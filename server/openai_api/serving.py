"""Chat and text completions: resolve the model, forward to the engine, relay its answer.

Non-streaming answers are returned as the engine's bytes; streams are relayed chunk by chunk as they
arrive (never buffered), and an engine failure mid-stream becomes one OpenAI error event that ends
the stream.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
from fastapi import Response
from fastapi.responses import StreamingResponse

from server.engine_client import EngineClient
from server.errors import EngineUnavailableError, error_body, sse_error_event
from server.model_catalog import ModelCatalog
from server.openai_api.protocol import ChatCompletionRequest, CompletionRequest

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class CompletionService:
    def __init__(self, engine: EngineClient, catalog: ModelCatalog) -> None:
        self._engine = engine
        self._catalog = catalog

    async def chat(self, request: ChatCompletionRequest) -> Response:
        return await self._forward(CHAT_PATH, request)

    async def complete(self, request: CompletionRequest) -> Response:
        return await self._forward(COMPLETIONS_PATH, request)

    async def _forward(
        self, path: str, request: ChatCompletionRequest | CompletionRequest
    ) -> Response:
        payload = request.model_dump(exclude_unset=True)
        payload["model"] = await self._catalog.engine_model_for(request.model, self._engine)
        body = json.dumps(payload).encode()
        if not request.stream:
            reply = await self._engine.post(path, body)
            if reply.status_code != 200:
                return _engine_error(reply.status_code, reply.content)
            return Response(reply.content, media_type=reply.content_type)

        upstream = await self._engine.open_stream(path, body)
        if upstream.status_code != 200:
            content = await upstream.aread()
            await upstream.aclose()
            return _engine_error(upstream.status_code, content)
        return StreamingResponse(
            self._relay_events(upstream), media_type="text/event-stream", headers=_SSE_HEADERS
        )

    async def _relay_events(self, upstream: httpx.Response) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._engine.relay(upstream):
                yield chunk
        except EngineUnavailableError as exc:
            yield sse_error_event(exc)


def _engine_error(status_code: int, content: bytes) -> Response:
    """Relay an engine error in OpenAI's shape: vLLM's own has the exception class as `type` and
    the status as `code`, which OpenAI clients do not expect."""
    error_type = "invalid_request_error" if status_code < 500 else "server_error"
    try:
        parsed = json.loads(content)
    except ValueError:
        parsed = None
    upstream = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(upstream, dict):
        message = str(upstream.get("message") or f"engine error {status_code}")
        param = upstream.get("param")
        body = error_body(message, error_type, param=param if isinstance(param, str) else None)
    else:
        text = content.decode(errors="replace").strip()[:500] or f"engine error {status_code}"
        body = error_body(f"Engine error: {text}", error_type)
    return Response(
        json.dumps(body).encode(), status_code=status_code, media_type="application/json"
    )
