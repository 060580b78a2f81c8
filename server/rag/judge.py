"""Judging a grounded reply: answer or abstain at its first token by the calibrated score (asking
the engine once more, with the abstention banned, when the model began to abstain but the score
says the sources answer), then the post-check of the finished answer, counted by verdict."""

from __future__ import annotations

import json
from typing import Any

from fastapi.concurrency import run_in_threadpool

from grounding.answerability import Calibration
from server.engine_client import EngineClient
from server.metrics import GatewayMetrics
from server.model_catalog import ModelCatalog, ResolvedModel
from server.rag.grounding import (
    AnswerDecision,
    abstention_completion,
    abstention_grounding,
    decide_answer,
    first_token,
    is_structured,
    post_check,
)
from server.rag.protocol import Grounding
from server.rag.turn import GroundedTurn
from server.relay.engine_call import EngineCall

FirstToken = tuple[str, list[dict[str, Any]]]  # the token and its top logprobs


class AnswerJudge:
    def __init__(
        self,
        engine: EngineClient,
        catalog: ModelCatalog,
        metrics: GatewayMetrics,
        abstention_message: str,
    ) -> None:
        """
        Args:
            engine: the engine client (its tokenizer, for the token to ban when asking again).
            catalog: where an adapter version's answerability calibration is read.
            metrics: where answerability scores and verdicts are counted.
            abstention_message: the exact reply that means "the sources do not say".
        """
        self.abstention_message = abstention_message
        self._engine = engine
        self._catalog = catalog
        self._metrics = metrics
        self._abstention_ids: dict[str, list[int]] = {}

    async def decide(
        self, turn: GroundedTurn, token: FirstToken, model: ResolvedModel
    ) -> AnswerDecision:
        """Relay, abstain or ask again, by the model's calibration and the turn's threshold."""
        calibration: Calibration | None = await run_in_threadpool(self._catalog.calibration, model)
        threshold = turn.min_answerability
        if threshold is None and calibration is not None and calibration.enforced:
            threshold = calibration.threshold
        decision = decide_answer(
            token[0],
            token[1],
            question=turn.question,
            sources=turn.outcome.sources,
            top_score=turn.outcome.top_score,
            calibration=calibration,
            threshold=threshold,
            abstention_message=self.abstention_message,
        )
        if decision.info.score is not None:
            self._metrics.answerability_score.labels(turn.collection, model.engine_name).observe(
                decision.info.score
            )
        if decision.action == "reask":
            info = decision.info.model_copy(update={"reasked": True})
            decision = AnswerDecision(decision.action, info)
        return decision

    def verdict(
        self,
        turn: GroundedTurn,
        answer: str,
        decision: AnswerDecision | None,
        *,
        enforce_support: bool = True,
    ) -> Grounding:
        """The post-check of a finished answer (counted)."""
        outcome = turn.outcome
        verdict = post_check(
            answer,
            outcome.sources,
            self.abstention_message,
            outcome.top_score,
            outcome.threshold,
            min_support=turn.min_support,
            enforce_support=enforce_support,
            answerability=decision.info if decision is not None else None,
        )
        self._count(turn, verdict)
        return verdict

    def abstention_verdict(self, turn: GroundedTurn, decision: AnswerDecision) -> Grounding:
        """The verdict when the score, not the model, decided to abstain (counted)."""
        outcome = turn.outcome
        verdict = abstention_grounding(decision.info, outcome.top_score, outcome.threshold)
        self._count(turn, verdict)
        return verdict

    async def reask_body(self, payload: dict[str, Any], label: str) -> bytes:
        """The same request with the abstention's first token banned, so the model answers."""
        bias = dict(payload.get("logit_bias") or {})
        for token_id in await self._abstention_token_ids(label):
            bias[str(token_id)] = -100
        return json.dumps({**payload, "logit_bias": bias}).encode()

    async def judge_reply(
        self,
        turn: GroundedTurn,
        content: bytes,
        payload: dict[str, Any],
        model: ResolvedModel,
        call: EngineCall,
    ) -> dict[str, Any]:
        """Judge a whole grounded reply: the first-token decision (which may ask the engine once
        more), then the post-check, whose unsupported verdict replaces the answer (a reply
        calling tools is only flagged).

        Args:
            turn: the grounded turn.
            content: the engine's 200 reply.
            payload: the request as the engine got it (asked again with a ban, if need be).
            model: the model that answered.
            call: the request's way to the engine.

        Returns:
            The chat.completion the client receives, with `sources` and `grounding`.

        Raises:
            EngineUnavailableError: asking again found the engine down.
        """
        body: dict[str, Any] = json.loads(content)
        label = model.engine_name
        choice = (body.get("choices") or [{}])[0]
        token = first_token(choice.get("logprobs"))
        decision = await self.decide(turn, token or ("", []), model)
        if decision.action == "abstain":
            verdict = self.abstention_verdict(turn, decision)
            reply = abstention_completion(label, self.abstention_message, verdict)
            reply["usage"] = body.get("usage") or reply["usage"]
            reply["sources"] = turn.sources()
            return reply
        if decision.action == "reask":
            retry = await call.post(await self.reask_body(payload, label))
            if retry.status_code == 200:
                body = json.loads(retry.content)
        choices = body.get("choices") or [{}]
        message = choices[0].get("message") or {}
        # A reply that calls tools is not the answer yet: its text (usually none) is flagged
        # by the support check, never replaced, so the calls reach the client intact. A reply
        # held to a JSON format is flagged too: replaced by the abstention's prose, it would
        # no longer parse as what the client asked for.
        calls_tools = bool(message.get("tool_calls"))
        structured = is_structured(payload)
        text = message.get("content") or ""
        verdict = self.verdict(
            turn, text, decision, enforce_support=not (calls_tools or structured)
        )
        if verdict.status == "abstained" and verdict.reason == "unsupported":
            message["content"] = self.abstention_message
        if not turn.client_logprobs:
            for item in choices:
                item["logprobs"] = None
        body["sources"] = turn.sources()
        body["grounding"] = verdict.model_dump()
        return body

    async def _abstention_token_ids(self, label: str) -> list[int]:
        """The ids the abstention message can begin with (with and without a leading space),
        from the engine's own tokenizer; asked once per engine model name."""
        cached = self._abstention_ids.get(label)
        if cached is not None:
            return cached
        ids: set[int] = set()
        for text in (self.abstention_message, " " + self.abstention_message):
            request = {"model": label, "prompt": text, "add_special_tokens": False}
            reply = await self._engine.post("/tokenize", json.dumps(request).encode())
            if reply.status_code == 200:
                tokens = json.loads(reply.content).get("tokens") or []
                if tokens:
                    ids.add(int(tokens[0]))
        if ids:
            self._abstention_ids[label] = sorted(ids)
        return sorted(ids)

    def _count(self, turn: GroundedTurn, verdict: Grounding) -> None:
        self._metrics.grounded_outcome(turn.collection, turn.tenant, verdict.status, verdict.reason)
