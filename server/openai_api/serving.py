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
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi import Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from retrieval.answerability import Calibration
from server.auth import Principal, viewer_of
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
    DECISION_TOP_LOGPROBS,
    AnswerDecision,
    abstention_completion,
    abstention_events,
    abstention_grounding,
    decide_answer,
    first_token,
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
    """A chat request being answered over retrieved sources.

    `min_answerability`: the request's or collection's threshold on the calibrated score (None:
    the adapter's own calibrated threshold). `min_support`: see `post_check`.
    """

    collection: str
    outcome: RetrievalOutcome
    messages: list[dict[str, Any]]
    question: str
    min_answerability: float | None
    min_support: float
    client_logprobs: bool


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
        self._abstention_ids: dict[str, list[int]] = {}

    async def chat(self, request: ChatCompletionRequest, principal: Principal) -> Response:
        self._check_prompt_size(request, principal)
        options = self._rag_options(request)
        if options is None:
            return await self._forward("chat", CHAT_PATH, request, viewer=viewer_of(principal))
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
        context = GroundingContext(
            collection=options.collection,
            outcome=outcome,
            messages=conversation,
            question=question_of(messages),
            min_answerability=self._rag.min_answerability(
                options.collection, options.min_answerability
            ),
            min_support=self._rag.min_support(options.collection, options.min_support),
            client_logprobs=bool(request.logprobs),
        )
        return await self._forward(
            "chat", CHAT_PATH, request, grounding=context, viewer=viewer_of(principal)
        )

    def _abstain(
        self, request: ChatCompletionRequest, collection: str, outcome: RetrievalOutcome
    ) -> Response:
        grounding = Grounding(
            status="abstained",
            reason="retrieval_gate",
            top_score=outcome.top_score,
            threshold=outcome.threshold,
            support=None,
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
        return await self._forward(
            "completions", COMPLETIONS_PATH, request, viewer=viewer_of(principal)
        )

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
            self._metrics.rejections.labels(
                "prompt_too_long", self._metrics.key_label(principal.name)
            ).inc()
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
        viewer: str | None,
    ) -> Response:
        started = time.perf_counter()
        try:
            model = await self._catalog.resolve(request.model, self._engine, viewer=viewer)
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
                # The answer-or-abstain decision reads the first token's alternatives.
                payload["logprobs"] = True
                asked = payload.get("top_logprobs") or 0
                payload["top_logprobs"] = max(asked, DECISION_TOP_LOGPROBS)
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
                    answer = await self._ground_answer(reply.content, payload, grounding, model)
                    return JSONResponse(answer)
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
                    upstream, route, label, model, started, client_wants_usage, grounding, payload
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
        payload: dict[str, Any],
    ) -> AsyncIterator[bytes]:
        """Relay a grounded stream: sources first; nothing of the answer until its first token
        has been judged (relay it, abstain in its place, or ask again without the abstention);
        then the answer as it comes, and the grounding verdict (which needs the whole answer)
        just before [DONE]. A support failure can only be flagged here: the text is already out."""
        sources = [s.model_dump() for s in grounding.outcome.sources]
        yield sse(
            {"object": "chat.completion.chunk", "model": label, "choices": [], "sources": sources}
        )
        answer: list[str] = []
        held: list[bytes] = []
        decision: AnswerDecision | None = None
        events = _sse_events(self._engine.relay(upstream))
        first = True
        try:
            async for event in events:
                if first:
                    self._metrics.ttft.labels(label).observe(time.perf_counter() - started)
                    first = False
                if decision is None:
                    token = _event_first_token(event)
                    if token is None:
                        held.append(event)
                        continue
                    decision = await self._decide(token, grounding, model)
                    if decision.action == "abstain":
                        await events.aclose()
                        for out in self._abstention_stream(
                            label, decision, grounding, client_wants_usage
                        ):
                            yield out
                        return
                    if decision.action == "reask":
                        await events.aclose()
                        retry = await self._open_with_reload(
                            CHAT_PATH, await self._reask_body(payload, label), model
                        )
                        if retry.status_code != 200:
                            content = await retry.aread()
                            await retry.aclose()
                            message = f"engine error {retry.status_code}: {content[:200]!r}"
                            yield sse_error_event(EngineUnavailableError(message, retry_after_s=1))
                            return
                        events = _sse_events(self._engine.relay(retry))
                        held = []
                        break
                for pending in [*held, event]:
                    out = self._grounded_event(
                        pending, label, answer, grounding, client_wants_usage, decision
                    )
                    if out:
                        yield out
                held = []
            else:
                # The stream ended before any token (e.g. max_tokens 0): pass on what it held.
                for pending in held:
                    out = self._grounded_event(
                        pending, label, answer, grounding, client_wants_usage, decision
                    )
                    if out:
                        yield out
                return
            # Asked again: relay the second answer whole (it is never judged twice).
            async for event in events:
                out = self._grounded_event(
                    event, label, answer, grounding, client_wants_usage, decision
                )
                if out:
                    yield out
        except EngineUnavailableError as exc:
            yield sse_error_event(exc)
        finally:
            await events.aclose()
            self._finish(route, label, model, 200, started)

    def _abstention_stream(
        self,
        label: str,
        decision: AnswerDecision,
        grounding: GroundingContext,
        client_wants_usage: bool,
    ) -> list[bytes]:
        outcome = grounding.outcome
        verdict = abstention_grounding(decision.info, outcome.top_score, outcome.threshold)
        self._count_verdict(grounding, verdict)
        return abstention_events(
            label, self._abstention, verdict, client_wants_usage, sources_sent=True
        )

    def _grounded_event(
        self,
        event: bytes,
        label: str,
        answer: list[str],
        grounding: GroundingContext,
        client_wants_usage: bool,
        decision: AnswerDecision | None,
    ) -> bytes:
        if not event.startswith(b"data: "):
            return event + b"\n\n" if event else b""
        if event == b"data: [DONE]":
            verdict = self._verdict("".join(answer), grounding, decision, enforce_support=False)
            return sse({"object": "chat.completion.chunk", "model": label, "choices": [],
                        "grounding": verdict.model_dump()}) + event + b"\n\n"  # fmt: skip
        data = json.loads(event[6:])
        for choice in data.get("choices") or []:
            answer.append((choice.get("delta") or {}).get("content") or "")
            if not grounding.client_logprobs:
                choice["logprobs"] = None
        if data.get("usage") and not data.get("choices"):
            self._record_usage(label, data["usage"])
            if not client_wants_usage:
                return b""
        return sse(data) if not grounding.client_logprobs else event + b"\n\n"

    async def _ground_answer(
        self,
        content: bytes,
        payload: dict[str, Any],
        grounding: GroundingContext,
        model: ResolvedModel,
    ) -> dict[str, Any]:
        """Judge a whole grounded reply: the first-token decision (which may ask the engine once
        more), then the post-check, whose unsupported verdict replaces the answer."""
        body: dict[str, Any] = json.loads(content)
        label = model.engine_name
        choice = (body.get("choices") or [{}])[0]
        token = first_token(choice.get("logprobs"))
        decision = await self._decide(token or ("", []), grounding, model)
        outcome = grounding.outcome
        if decision.action == "abstain":
            verdict = abstention_grounding(decision.info, outcome.top_score, outcome.threshold)
            self._count_verdict(grounding, verdict)
            reply = abstention_completion(label, self._abstention, verdict)
            reply["usage"] = body.get("usage") or reply["usage"]
            reply["sources"] = [s.model_dump() for s in outcome.sources]
            return reply
        if decision.action == "reask":
            retry = await self._post_with_reload(
                CHAT_PATH, await self._reask_body(payload, label), model
            )
            if retry.status_code == 200:
                self._count_usage(label, retry.content)
                body = json.loads(retry.content)
        choices = body.get("choices") or [{}]
        message = choices[0].get("message") or {}
        verdict = self._verdict(message.get("content") or "", grounding, decision)
        if verdict.status == "abstained" and verdict.reason == "unsupported":
            message["content"] = self._abstention
        if not grounding.client_logprobs:
            for item in choices:
                item["logprobs"] = None
        body["sources"] = [s.model_dump() for s in outcome.sources]
        body["grounding"] = verdict.model_dump()
        return body

    async def _decide(
        self, token: tuple[str, list[dict[str, Any]]], grounding: GroundingContext,
        model: ResolvedModel,
    ) -> AnswerDecision:  # fmt: skip
        calibration: Calibration | None = await run_in_threadpool(self._catalog.calibration, model)
        threshold = grounding.min_answerability
        if threshold is None and calibration is not None and calibration.enforced:
            threshold = calibration.threshold
        decision = decide_answer(
            token[0],
            token[1],
            question=grounding.question,
            sources=grounding.outcome.sources,
            top_score=grounding.outcome.top_score,
            calibration=calibration,
            threshold=threshold,
            abstention_message=self._abstention,
        )
        if decision.info.score is not None:
            self._metrics.answerability_score.labels(
                grounding.collection, model.engine_name
            ).observe(decision.info.score)
        if decision.action == "reask":
            info = decision.info.model_copy(update={"reasked": True})
            decision = AnswerDecision(decision.action, info)
        return decision

    async def _reask_body(self, payload: dict[str, Any], label: str) -> bytes:
        """The same request with the abstention's first token banned, so the model answers."""
        bias = dict(payload.get("logit_bias") or {})
        for token_id in await self._abstention_token_ids(label):
            bias[str(token_id)] = -100
        return json.dumps({**payload, "logit_bias": bias}).encode()

    async def _abstention_token_ids(self, label: str) -> list[int]:
        """The ids the abstention message can begin with (with and without a leading space),
        from the engine's own tokenizer; asked once per engine model name."""
        cached = self._abstention_ids.get(label)
        if cached is not None:
            return cached
        ids: set[int] = set()
        for text in (self._abstention, " " + self._abstention):
            request = {"model": label, "prompt": text, "add_special_tokens": False}
            reply = await self._engine.post("/tokenize", json.dumps(request).encode())
            if reply.status_code == 200:
                tokens = json.loads(reply.content).get("tokens") or []
                if tokens:
                    ids.add(int(tokens[0]))
        if ids:
            self._abstention_ids[label] = sorted(ids)
        return sorted(ids)

    def _verdict(
        self,
        answer: str,
        grounding: GroundingContext,
        decision: AnswerDecision | None,
        *,
        enforce_support: bool = True,
    ) -> Grounding:
        outcome = grounding.outcome
        verdict = post_check(
            answer,
            outcome.sources,
            self._abstention,
            outcome.top_score,
            outcome.threshold,
            min_support=grounding.min_support,
            enforce_support=enforce_support,
            answerability=decision.info if decision is not None else None,
        )
        self._count_verdict(grounding, verdict)
        return verdict

    def _count_verdict(self, grounding: GroundingContext, verdict: Grounding) -> None:
        self._metrics.rag_answers.labels(grounding.collection, verdict.status, verdict.reason).inc()

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


async def _sse_events(chunks: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    """Whole server-sent events (without their blank-line separator) from raw body chunks.
    Closing this closes `chunks`, and with it the engine connection."""
    pending = b""
    try:
        async for chunk in chunks:
            pending += chunk
            *events, pending = pending.split(b"\n\n")
            for event in events:
                yield event
        if pending.strip():
            yield pending
    finally:
        await chunks.aclose()


def _event_first_token(event: bytes) -> tuple[str, list[dict[str, Any]]] | None:
    """The first token of a stream event that carries one (role-only chunks carry none)."""
    if not event.startswith(b"data: ") or event == b"data: [DONE]":
        return None
    try:
        data = json.loads(event[6:])
    except ValueError:
        return None
    for choice in data.get("choices") or []:
        found = first_token(choice.get("logprobs"))
        if found is not None:
            return found
    return None


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
