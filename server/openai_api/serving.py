"""Chat and text completions: resolve the model, make sure its adapter is loaded, forward to the
engine, relay its answer, and record per-model metrics.

Non-streaming answers are returned as the engine's bytes. Streams are relayed chunk by chunk as
they arrive (never buffered); an engine failure mid-stream becomes one OpenAI error event that ends
the stream. Token usage for metrics is read from the one usage chunk the engine sends at the end:
the gateway always asks the engine for it and drops it again when the client did not ask.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import Response
from fastapi.responses import StreamingResponse

from server.engine_client import EngineClient, EngineReply
from server.errors import EngineUnavailableError, GatewayError, error_body, sse_error_event
from server.lora_manager import LoraManager
from server.metrics import GatewayMetrics
from server.model_catalog import ModelCatalog, ResolvedModel
from server.openai_api.protocol import ChatCompletionRequest, CompletionRequest

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_USAGE_MARK = b'"usage":{'
_FINAL_CHUNK_MARK = b'"choices":[]'  # the usage-only chunk; others may carry running usage


class CompletionService:
    def __init__(
        self,
        engine: EngineClient,
        catalog: ModelCatalog,
        loras: LoraManager,
        metrics: GatewayMetrics,
    ) -> None:
        self._engine = engine
        self._catalog = catalog
        self._loras = loras
        self._metrics = metrics

    async def chat(self, request: ChatCompletionRequest) -> Response:
        return await self._forward("chat", CHAT_PATH, request)

    async def complete(self, request: CompletionRequest) -> Response:
        return await self._forward("completions", COMPLETIONS_PATH, request)

    async def _forward(
        self, route: str, path: str, request: ChatCompletionRequest | CompletionRequest
    ) -> Response:
        started = time.perf_counter()
        try:
            model = await self._catalog.resolve(request.model, self._engine)
        except GatewayError as exc:
            self._metrics.requests.labels(route, "_unknown", str(exc.status_code)).inc()
            raise
        label = model.engine_name
        in_flight = self._metrics.in_flight.labels(route, label)
        in_flight.inc()
        if model.adapter:
            self._loras.acquire(label)
        handed_to_stream = False
        status = 500
        try:
            payload = request.model_dump(exclude_unset=True)
            payload["model"] = label
            client_wants_usage = bool(
                request.stream_options and request.stream_options.include_usage
            )
            if request.stream:
                options = payload.get("stream_options") or {}
                payload["stream_options"] = {**options, "include_usage": True}
            body = json.dumps(payload).encode()
            await self._ensure_adapter(model)
            if not request.stream:
                reply = await self._post_with_reload(path, body, model)
                status = reply.status_code
                if status != 200:
                    return _engine_error(status, reply.content)
                self._count_usage(label, reply.content)
                return Response(reply.content, media_type=reply.content_type)

            upstream = await self._open_with_reload(path, body, model)
            status = upstream.status_code
            if status != 200:
                content = await upstream.aread()
                await upstream.aclose()
                return _engine_error(status, content)
            handed_to_stream = True
            events = self._relay_events(upstream, route, label, model, started, client_wants_usage)
            return StreamingResponse(events, media_type="text/event-stream", headers=_SSE_HEADERS)
        except GatewayError as exc:
            status = exc.status_code
            raise
        finally:
            if not handed_to_stream:
                self._finish(route, label, model, status, started)

    async def _ensure_adapter(self, model: ResolvedModel) -> None:
        if model.adapter:
            await self._loras.ensure_loaded(model.engine_name, model.adapter.path)

    async def _post_with_reload(self, path: str, body: bytes, model: ResolvedModel) -> EngineReply:
        reply = await self._engine.post(path, body)
        if reply.status_code == 404 and model.adapter:
            # The engine restarted and lost its runtime-loaded adapters: load again, once.
            self._loras.forget(model.engine_name)
            await self._ensure_adapter(model)
            reply = await self._engine.post(path, body)
        return reply

    async def _open_with_reload(
        self, path: str, body: bytes, model: ResolvedModel
    ) -> httpx.Response:
        upstream = await self._engine.open_stream(path, body)
        if upstream.status_code == 404 and model.adapter:
            await upstream.aclose()
            self._loras.forget(model.engine_name)
            await self._ensure_adapter(model)
            upstream = await self._engine.open_stream(path, body)
        return upstream

    async def _relay_events(
        self,
        upstream: httpx.Response,
        route: str,
        label: str,
        model: ResolvedModel,
        started: float,
        client_wants_usage: bool,
    ) -> AsyncIterator[bytes]:
        first = True
        try:
            async for chunk in self._engine.relay(upstream):
                if first:
                    self._metrics.ttft.labels(label).observe(time.perf_counter() - started)
                    first = False
                if _USAGE_MARK in chunk and _FINAL_CHUNK_MARK in chunk:
                    chunk = self._take_usage(label, chunk, keep=client_wants_usage)
                    if not chunk:
                        continue
                yield chunk
        except EngineUnavailableError as exc:
            yield sse_error_event(exc)
        finally:
            self._finish(route, label, model, 200, started)

    def _take_usage(self, label: str, chunk: bytes, *, keep: bool) -> bytes:
        """Count the usage event's tokens; drop the event unless the client asked for usage."""
        events = chunk.split(b"\n\n")
        for i, event in enumerate(events):
            if _FINAL_CHUNK_MARK in event and event.startswith(b"data: "):
                try:
                    usage = json.loads(event[6:])["usage"]
                except (ValueError, KeyError):
                    return chunk  # split across reads: relay as is, skip the count
                self._record_usage(label, usage)
                if not keep:
                    del events[i]
                break
        return b"\n\n".join(events)

    def _count_usage(self, label: str, content: bytes) -> None:
        try:
            usage = json.loads(content).get("usage")
        except ValueError:
            return
        if isinstance(usage, dict):
            self._record_usage(label, usage)

    def _record_usage(self, label: str, usage: dict[str, Any]) -> None:
        self._metrics.prompt_tokens.labels(label).inc(usage.get("prompt_tokens") or 0)
        self._metrics.completion_tokens.labels(label).inc(usage.get("completion_tokens") or 0)

    def _finish(
        self, route: str, label: str, model: ResolvedModel, status: int, started: float
    ) -> None:
        self._metrics.requests.labels(route, label, str(status)).inc()
        self._metrics.latency.labels(route, label).observe(time.perf_counter() - started)
        self._metrics.in_flight.labels(route, label).dec()
        if model.adapter:
            self._loras.release(label)


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
