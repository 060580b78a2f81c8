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
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import Response
from fastapi.responses import JSONResponse, StreamingResponse

from server.auth import Principal
from server.engine_client import EngineClient, EngineReply
from server.errors import (
    EngineUnavailableError,
    GatewayError,
    InvalidRequestError,
    error_body,
    sse_error_event,
)
from server.lora_manager import LoraManager
from server.metrics import GatewayMetrics
from server.model_catalog import ModelCatalog, ResolvedModel
from server.openai_api.protocol import ChatCompletionRequest, CompletionRequest
from server.rag.grounding import (
    abstention_completion,
    abstention_events,
    grounded_conversation,
    post_check,
    question_of,
    sse,
)
from server.rag.protocol import Grounding, RagOptions
from server.rag.service import RagService, RetrievalOutcome

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_USAGE_MARK = b'"usage":{'
_FINAL_CHUNK_MARK = b'"choices":[]'  # the usage-only chunk; others may carry running usage


@dataclass(frozen=True)
class GroundingContext:
    """A chat request being answered over retrieved sources."""

    collection: str
    outcome: RetrievalOutcome
    messages: list[dict[str, Any]]


class CompletionService:
    def __init__(
        self,
        engine: EngineClient,
        catalog: ModelCatalog,
        loras: LoraManager,
        metrics: GatewayMetrics,
        rag: RagService | None = None,
        abstention_message: str = "",
        *,
        max_prompt_chars: int | None = None,
    ) -> None:
        self._engine = engine
        self._catalog = catalog
        self._loras = loras
        self._metrics = metrics
        self._rag = rag
        self._abstention = abstention_message
        self._max_prompt_chars = max_prompt_chars

    async def chat(self, request: ChatCompletionRequest, principal: Principal) -> Response:
        self._check_prompt_size(request, principal)
        options = self._rag_options(request)
        if options is None:
            return await self._forward("chat", CHAT_PATH, request)
        return await self._grounded_chat(request, options, principal)

    def _rag_options(self, request: ChatCompletionRequest) -> RagOptions | None:
        if self._rag is None:
            if request.rag is not None:
                raise InvalidRequestError("Retrieval is not enabled on this gateway", param="rag")
            return None
        return self._rag.options_for(request.model, request.rag)

    async def _grounded_chat(
        self, request: ChatCompletionRequest, options: RagOptions, principal: Principal
    ) -> Response:
        assert self._rag is not None
        messages = [m.model_dump(exclude_none=True) for m in request.messages]
        outcome = await self._rag.retrieve(
            principal.tenant,
            options.collection,
            question_of(messages),
            top_k=options.top_k,
            mode=options.mode,
            filter=options.filter,
            min_score=options.min_score,
        )
        if outcome.top_score is not None:
            self._metrics.retrieval_top_score.labels(options.collection).observe(outcome.top_score)
        if not outcome.passed_gate:
            # Nothing supports an answer: say so without spending the engine's time.
            return self._abstain(request, options.collection, outcome)
        conversation = grounded_conversation(messages, outcome.sources, self._abstention)
        context = GroundingContext(options.collection, outcome, conversation)
        return await self._forward("chat", CHAT_PATH, request, grounding=context)

    def _abstain(
        self, request: ChatCompletionRequest, collection: str, outcome: RetrievalOutcome
    ) -> Response:
        grounding = Grounding(
            status="abstained",
            reason="retrieval_gate",
            top_score=outcome.top_score,
            threshold=outcome.threshold,
        )
        self._metrics.rag_answers.labels(collection, "abstained", "retrieval_gate").inc()
        self._metrics.requests.labels("chat", "_abstained", "200").inc()
        if request.stream:
            usage = bool(request.stream_options and request.stream_options.include_usage)
            events = abstention_events(request.model, self._abstention, grounding, usage)
            return StreamingResponse(
                _iterate(events), media_type="text/event-stream", headers=_SSE_HEADERS
            )
        return JSONResponse(abstention_completion(request.model, self._abstention, grounding))

    async def complete(self, request: CompletionRequest, principal: Principal) -> Response:
        self._check_prompt_size(request, principal)
        return await self._forward("completions", COMPLETIONS_PATH, request)

    def _check_prompt_size(
        self, request: ChatCompletionRequest | CompletionRequest, principal: Principal
    ) -> None:
        """Refuse an overlong prompt before any retrieval or engine work: its cost (tokenizing,
        prefill) grows with its length, and the engine would refuse it past its context anyway.

        Raises:
            InvalidRequestError: the prompt's text is over `max_prompt_chars`.
        """
        limit = self._max_prompt_chars
        if limit is None:
            return
        size, param = prompt_chars(request)
        if size > limit:
            self._metrics.rejections.labels("prompt_too_long", principal.name).inc()
            raise InvalidRequestError(
                f"The prompt has {size} characters, over this gateway's limit of {limit}",
                param=param,
                code="prompt_too_long",
            )

    async def _forward(
        self,
        route: str,
        path: str,
        request: ChatCompletionRequest | CompletionRequest,
        *,
        grounding: GroundingContext | None = None,
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
            payload.pop("rag", None)  # the gateway's own field: the engine must not see it
            payload["model"] = label
            if grounding is not None:
                payload["messages"] = grounding.messages
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
                if grounding is not None:
                    return JSONResponse(self._ground_answer(reply.content, grounding))
                return Response(reply.content, media_type=reply.content_type)

            upstream = await self._open_with_reload(path, body, model)
            status = upstream.status_code
            if status != 200:
                content = await upstream.aread()
                await upstream.aclose()
                return _engine_error(status, content)
            handed_to_stream = True
            if grounding is not None:
                events = self._relay_grounded(
                    upstream, route, label, model, started, client_wants_usage, grounding
                )
            else:
                events = self._relay_events(
                    upstream, route, label, model, started, client_wants_usage
                )
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

    async def _relay_grounded(
        self,
        upstream: httpx.Response,
        route: str,
        label: str,
        model: ResolvedModel,
        started: float,
        client_wants_usage: bool,
        grounding: GroundingContext,
    ) -> AsyncIterator[bytes]:
        """Relay a grounded stream event by event: sources first, the answer as it comes, then
        the grounding verdict (which needs the whole answer) just before [DONE]."""
        sources = [s.model_dump() for s in grounding.outcome.sources]
        yield sse(
            {"object": "chat.completion.chunk", "model": label, "choices": [], "sources": sources}
        )
        answer: list[str] = []
        pending = b""
        first = True
        try:
            async for chunk in self._engine.relay(upstream):
                if first:
                    self._metrics.ttft.labels(label).observe(time.perf_counter() - started)
                    first = False
                pending += chunk
                *events, pending = pending.split(b"\n\n")
                for event in events:
                    out = self._grounded_event(event, label, answer, grounding, client_wants_usage)
                    if out:
                        yield out
        except EngineUnavailableError as exc:
            yield sse_error_event(exc)
        finally:
            self._finish(route, label, model, 200, started)

    def _grounded_event(
        self,
        event: bytes,
        label: str,
        answer: list[str],
        grounding: GroundingContext,
        client_wants_usage: bool,
    ) -> bytes:
        if not event.startswith(b"data: "):
            return event + b"\n\n" if event else b""
        if event == b"data: [DONE]":
            verdict = self._verdict("".join(answer), grounding)
            return sse({"object": "chat.completion.chunk", "model": label, "choices": [],
                        "grounding": verdict.model_dump()}) + event + b"\n\n"  # fmt: skip
        data = json.loads(event[6:])
        for choice in data.get("choices") or []:
            answer.append((choice.get("delta") or {}).get("content") or "")
        if data.get("usage") and not data.get("choices"):
            self._record_usage(label, data["usage"])
            if not client_wants_usage:
                return b""
        return event + b"\n\n"

    def _ground_answer(self, content: bytes, grounding: GroundingContext) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(content)
        choices = body.get("choices") or [{}]
        answer = (choices[0].get("message") or {}).get("content") or ""
        body["sources"] = [s.model_dump() for s in grounding.outcome.sources]
        body["grounding"] = self._verdict(answer, grounding).model_dump()
        return body

    def _verdict(self, answer: str, grounding: GroundingContext) -> Grounding:
        outcome = grounding.outcome
        verdict = post_check(
            answer, len(outcome.sources), self._abstention, outcome.top_score, outcome.threshold
        )
        self._metrics.rag_answers.labels(grounding.collection, verdict.status, verdict.reason).inc()
        return verdict

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


def prompt_chars(request: ChatCompletionRequest | CompletionRequest) -> tuple[int, str]:
    """The characters of prompt text a request carries, and the field that carries them.

    Token-id prompts count as nothing here: their size is the engine's context check to make.
    """
    if isinstance(request, ChatCompletionRequest):
        size = 0
        for message in request.messages:
            if isinstance(message.content, str):
                size += len(message.content)
            elif message.content:
                size += sum(len(str(part.get("text") or "")) for part in message.content)
        return size, "messages"
    prompt = request.prompt
    if isinstance(prompt, str):
        return len(prompt), "prompt"
    return sum(len(p) for p in prompt if isinstance(p, str)), "prompt"


async def _iterate(items: list[bytes]) -> AsyncIterator[bytes]:
    for item in items:
        yield item


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
