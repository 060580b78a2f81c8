"""The grounding step of a chat request: retrieve, then either abstain at once (nothing supports an
answer, and the engine is never asked) or hand the pipeline the grounded conversation to forward
and what to do with the reply (judge it, attach the sources and the verdict)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from fastapi import Response
from fastapi.responses import JSONResponse

from server.auth import Principal
from server.errors import InvalidRequestError
from server.metrics import GatewayMetrics
from server.model_catalog import ResolvedModel
from server.openai_api.protocol import ChatCompletionRequest
from server.rag.grounded_stream import grounded_stream
from server.rag.grounding import (
    abstention_completion,
    abstention_events,
    grounded_conversation,
    question_of,
)
from server.rag.judge import AnswerJudge
from server.rag.protocol import Grounding
from server.rag.reader_reply import ReaderReplies
from server.rag.reading import SourceReader
from server.rag.service import RagService, RetrievalOutcome
from server.rag.turn import GroundedTurn
from server.relay.engine_call import EngineCall
from server.relay.stream import EngineStream, event_stream_response


@dataclass(frozen=True)
class GroundedChat:
    """A chat request to forward over its sources, and what to do with the engine's reply."""

    turn: GroundedTurn
    judge: AnswerJudge
    replies: ReaderReplies

    def engine_payload(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The request as the engine gets it (see `GroundedTurn.engine_payload`)."""
        return self.turn.engine_payload(payload)

    async def reply(
        self, content: bytes, payload: dict[str, Any], model: ResolvedModel, call: EngineCall
    ) -> Response:
        """The client's answer from the engine's whole 200 reply (see `judge_reply`)."""
        if self.turn.reading is not None:
            return JSONResponse(await self.replies.whole(self.turn, content, payload))
        return JSONResponse(await self.judge.judge_reply(self.turn, content, payload, model, call))

    def stream(
        self,
        stream: EngineStream,
        payload: dict[str, Any],
        model: ResolvedModel,
        call: EngineCall,
        *,
        keep_usage: bool,
    ) -> AsyncGenerator[bytes, None]:
        """The client's events from the engine's open stream (see `grounded_stream`)."""
        if self.turn.reading is not None:
            return self.replies.stream(
                self.turn, stream, payload=payload, label=model.engine_name, keep_usage=keep_usage
            )
        return grounded_stream(
            self.judge, self.turn, stream, payload=payload, model=model, call=call,
            keep_usage=keep_usage,
        )  # fmt: skip


class GroundingStep:
    def __init__(
        self,
        rag: RagService | None,
        judge: AnswerJudge,
        metrics: GatewayMetrics,
        reader: SourceReader | None = None,
    ) -> None:
        """
        Args:
            rag: retrieval, or None on a gateway without it (a request asking for it is refused).
            judge: judges grounded replies; its abstention message is the one sent in their place.
            metrics: where retrieval scores and gate abstentions are counted.
            reader: the grounding reader (None: the generator's first token decides).
        """
        self._rag = rag
        self._judge = judge
        self._metrics = metrics
        self._reader = reader
        self._replies = ReaderReplies(metrics, judge.abstention_message)

    async def prepare(
        self, request: ChatCompletionRequest, principal: Principal
    ) -> GroundedChat | Response | None:
        """Ground a chat request in the caller's collection.

        Returns:
            None when the request is not grounded (no `rag` field, and no RAG defaults for its
            model); the abstention to send when retrieval found nothing above the gate;
            otherwise the grounded chat to forward.

        Raises:
            InvalidRequestError: `rag` is malformed, retrieval is off on this gateway, or there
                is no user message to search for.
            NotFoundError: the collection does not exist.
            RetrievalUnavailableError: the vector store failed.
        """
        if self._rag is None:
            if request.rag is not None:
                raise InvalidRequestError("Retrieval is not enabled on this gateway", param="rag")
            return None
        options = self._rag.options_for(request.model, request.rag)
        if options is None:
            return None
        messages = [m.model_dump(exclude_none=True) for m in request.messages]
        question = question_of(messages)
        mode = self._rag.answer_mode(options.collection, options.answer_mode)
        if self._reader is None and options.answer_mode == "extract":
            raise InvalidRequestError(
                "rag.answer_mode 'extract' needs the gateway's reader, and none is loaded "
                "(RAGDOCK_READER)", param="rag.answer_mode",
            )  # fmt: skip
        outcome = await self._rag.retrieve(
            principal.tenant,
            options.collection,
            question,
            top_k=options.top_k,
            mode=options.mode,
            filter=options.filter,
            min_score=options.min_score,
            with_reader=self._reader is not None,
        )
        if outcome.top_score is not None:
            self._metrics.retrieval_top_score.labels(options.collection).observe(outcome.top_score)
        if not outcome.passed_gate:
            # Nothing supports an answer: say so without spending the engine's time.
            return self._abstain(request, principal.tenant, options.collection, outcome)
        reading = None
        if self._reader is not None:
            # Read the sources while the engine prefills the grounded prompt.
            reading = self._reader.start(
                question,
                outcome.sources,
                mode=mode,
                top_similarity=outcome.top_score,
                threshold=self._rag.min_answerability(
                    options.collection, options.min_answerability
                ),
            )
        abstention = self._judge.abstention_message
        turn = GroundedTurn(
            tenant=principal.tenant,
            collection=options.collection,
            outcome=outcome,
            messages=grounded_conversation(messages, outcome.sources, abstention),
            question=question,
            min_answerability=self._rag.min_answerability(
                options.collection, options.min_answerability
            ),
            min_support=self._rag.min_support(options.collection, options.min_support),
            client_logprobs=bool(request.logprobs),
            reading=reading,
        )
        if reading is not None and mode == "extract":
            return await self._extract(request, turn)
        return GroundedChat(turn, self._judge, self._replies)

    async def _extract(self, request: ChatCompletionRequest, turn: GroundedTurn) -> Response:
        """`answer_mode: extract`: the reader's span or the abstention; the engine is not asked."""
        assert turn.reading is not None
        reading = await turn.reading
        if request.stream:
            usage = bool(request.stream_options and request.stream_options.include_usage)
            events = self._replies.extracted_events(
                turn, reading, model=request.model, with_usage=usage
            )
            return event_stream_response(_iterate(events))
        return JSONResponse(self._replies.extracted(turn, reading, model=request.model))

    def _abstain(
        self,
        request: ChatCompletionRequest,
        tenant: str,
        collection: str,
        outcome: RetrievalOutcome,
    ) -> Response:
        grounding = Grounding(
            status="abstained",
            reason="retrieval_gate",
            top_score=outcome.top_score,
            threshold=outcome.threshold,
            support=None,
        )
        self._metrics.grounded_outcome(collection, tenant, "abstained", "retrieval_gate")
        message = self._judge.abstention_message
        if request.stream:
            usage = bool(request.stream_options and request.stream_options.include_usage)
            return event_stream_response(
                _iterate(abstention_events(request.model, message, grounding, usage))
            )
        return JSONResponse(abstention_completion(request.model, message, grounding))


async def _iterate(items: list[bytes]) -> AsyncGenerator[bytes, None]:
    for item in items:
        yield item
