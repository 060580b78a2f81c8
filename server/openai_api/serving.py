"""Chat and text completions as a pipeline: guard the prompt's size, ground a chat in retrieved
sources (or abstain at once), resolve the model, lease its adapter, relay the engine's answer.

Each step is a module of its own: `guard`, `server.rag.step`, `server.model_catalog`,
`server.lora_manager` and `server.relay`. Non-streaming answers are returned as the engine's bytes
(grounded ones with their sources and verdict); streams are relayed as they arrive, never buffered.
"""

from __future__ import annotations

import json
import time
from contextlib import AsyncExitStack

from fastapi import Response

from server.auth import Principal, viewer_of
from server.engine_client import EngineClient, EngineReply
from server.errors import GatewayError
from server.lora_manager import LoraManager
from server.metrics import GatewayMetrics, RequestMeter
from server.model_catalog import ModelCatalog, ResolvedModel
from server.openai_api.guard import PromptGuard
from server.openai_api.protocol import ChatCompletionRequest, CompletionRequest
from server.quotas import RateBudget, completion_cost
from server.rag.step import GroundedChat, GroundingStep
from server.relay.engine_call import EngineCall, engine_error_response
from server.relay.stream import client_stream_response

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"


class CompletionService:
    def __init__(
        self,
        engine: EngineClient,
        catalog: ModelCatalog,
        loras: LoraManager,
        metrics: GatewayMetrics,
        grounding: GroundingStep,
        *,
        max_prompt_chars: int | None = None,
        budget: RateBudget | None = None,
        max_model_len: int = 2048,
    ) -> None:
        """
        Args:
            engine: the engine client.
            catalog: resolves request model names.
            loras: leases adapters to requests.
            metrics: the gateway's metrics.
            grounding: the RAG step of chat requests.
            max_prompt_chars: the most prompt characters a request may carry (None: no limit).
            budget: the per-key and per-tenant rate budgets each request is charged to.
            max_model_len: the engine's context: a completion without max_tokens may fill it.
        """
        self._engine = engine
        self._catalog = catalog
        self._loras = loras
        self._metrics = metrics
        self._grounding = grounding
        self._guard = PromptGuard(max_prompt_chars, metrics)
        self._budget = budget
        self._max_model_len = max_model_len

    async def _admit(
        self, request: ChatCompletionRequest | CompletionRequest, principal: Principal
    ) -> None:
        """Guard the prompt's size, then charge the request's worst-case tokens (429 past a
        budget), before any retrieval or engine work."""
        self._guard.check(request, principal)
        if self._budget is not None:
            cost = completion_cost(request, self._max_model_len)
            await self._budget.acharge(principal, tokens=cost)

    async def chat(self, request: ChatCompletionRequest, principal: Principal) -> Response:
        await self._admit(request, principal)
        started = time.perf_counter()
        grounded = await self._grounding.prepare(request, principal)
        if isinstance(grounded, Response):
            # The abstention: retrieval found nothing to answer from; no engine call to meter.
            elapsed = time.perf_counter() - started
            self._metrics.request_without_engine(
                "chat", "_abstained", 200, principal.tenant, elapsed
            )
            return grounded
        return await self._forward("chat", CHAT_PATH, request, principal, grounded)

    async def complete(self, request: CompletionRequest, principal: Principal) -> Response:
        await self._admit(request, principal)
        return await self._forward("completions", COMPLETIONS_PATH, request, principal, None)

    async def _forward(
        self,
        route: str,
        path: str,
        request: ChatCompletionRequest | CompletionRequest,
        principal: Principal,
        grounded: GroundedChat | None,
    ) -> Response:
        started = time.perf_counter()
        model = await self._resolve(route, request.model, principal, started)
        # The meter and the lease are held until the answer is out: for a stream, they are
        # handed to it and released when it ends.
        async with AsyncExitStack() as held:
            meter = held.enter_context(
                RequestMeter(
                    self._metrics, route, model.engine_name, started, tenant=principal.tenant
                )
            )
            lease = await held.enter_async_context(self._loras.lease(model))
            keep_usage = request.client_wants_usage
            call = EngineCall(
                self._engine, path, meter=meter, reload=lease.reload, keep_usage=keep_usage
            )
            payload = request.to_engine_payload(model.engine_name)
            if grounded is not None:
                payload = grounded.engine_payload(payload)
            body = json.dumps(payload).encode()
            if not request.stream:
                reply = await call.post(body)
                meter.status = reply.status_code
                if reply.status_code != 200:
                    return engine_error_response(reply)
                if grounded is not None:
                    return await grounded.reply(reply.content, payload, model, call)
                return Response(reply.content, media_type=reply.content_type)

            opened = await call.open(body)
            if isinstance(opened, EngineReply):
                meter.status = opened.status_code
                return engine_error_response(opened)
            meter.status = 200
            held.push_async_callback(opened.aclose)  # however the client leaves
            if grounded is not None:
                events = grounded.stream(opened, payload, model, call, keep_usage=keep_usage)
            else:
                events = opened.blocks()
            return client_stream_response(events, held.pop_all())

    async def _resolve(
        self, route: str, name: str, principal: Principal, started: float
    ) -> ResolvedModel:
        try:
            return await self._catalog.resolve(name, self._engine, viewer=viewer_of(principal))
        except GatewayError as exc:
            elapsed = time.perf_counter() - started
            self._metrics.request_without_engine(
                route, "_unknown", exc.status_code, principal.tenant, elapsed
            )
            raise
