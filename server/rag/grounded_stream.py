"""A grounded answer streamed to the client: its sources first; nothing of the answer until its
first token has been judged (relay it, abstain in its place, or ask again without the abstention);
then the answer as it comes, and the grounding verdict (which needs the whole answer) just before
[DONE]. A support failure can only be flagged here: the text is already out."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from server.errors import EngineUnavailableError, sse_error_event
from server.model_catalog import ResolvedModel
from server.rag.grounding import AnswerDecision, abstention_events, first_token
from server.rag.judge import AnswerJudge, FirstToken
from server.rag.turn import GroundedTurn
from server.relay.engine_call import EngineCall
from server.relay.framing import DATA_PREFIX, DONE, SEPARATOR, event_data, sse_event
from server.relay.stream import EngineStream


async def grounded_stream(
    judge: AnswerJudge,
    turn: GroundedTurn,
    stream: EngineStream,
    *,
    payload: dict[str, Any],
    model: ResolvedModel,
    call: EngineCall,
    keep_usage: bool,
) -> AsyncGenerator[bytes, None]:
    """The client's events for a grounded stream the engine has opened.

    Args:
        judge: decides at the first token and gives the verdict at the end.
        turn: the grounded turn.
        stream: the engine's stream (its usage chunk already counted, and gone unless kept).
        payload: the request as the engine got it (asked again with a ban, if need be).
        model: the model answering.
        call: the request's way to the engine, to ask again.
        keep_usage: the client asked for the usage chunk (the abstention then carries one).

    Raises:
        EngineUnavailableError: the engine dropped the stream, or was down when asked again.
    """
    label = model.engine_name
    yield sse_event({"object": "chat.completion.chunk", "model": label, "choices": [],
                     "sources": turn.sources()})  # fmt: skip
    relay = _AnswerRelay(judge, turn, label)
    held: list[bytes] = []  # events before the first token (the role chunk), until the decision
    events = stream.events()
    try:
        async for event in events:
            if relay.decision is None:
                token = _event_first_token(event)
                if token is None:
                    held.append(event)
                    continue
                relay.decision = decision = await judge.decide(turn, token, model)
                if decision.action == "abstain":
                    await events.aclose()
                    verdict = judge.abstention_verdict(turn, decision)
                    message = judge.abstention_message
                    for out in abstention_events(
                        label, message, verdict, keep_usage, sources_sent=True
                    ):
                        yield out
                    return
                if decision.action == "reask":
                    await events.aclose()
                    retry = await call.open(await judge.reask_body(payload, label))
                    if not isinstance(retry, EngineStream):
                        text = f"engine error {retry.status_code}: {retry.content[:200]!r}"
                        yield sse_error_event(EngineUnavailableError(text, retry_after_s=1))
                        return
                    events = retry.events()
                    break
            for pending in [*held, event]:
                if out := relay.event(pending):
                    yield out
            held = []
        else:
            # The stream ended before any token (e.g. max_tokens 0): pass on what it held.
            for pending in held:
                if out := relay.event(pending):
                    yield out
            return
        # Asked again: relay the second answer whole (it is never judged twice).
        async for event in events:
            if out := relay.event(event):
                yield out
    finally:
        await events.aclose()


class _AnswerRelay:
    """Passes the answer's events on, gathering its text for the verdict that precedes [DONE]."""

    def __init__(self, judge: AnswerJudge, turn: GroundedTurn, label: str) -> None:
        self.decision: AnswerDecision | None = None
        self._judge = judge
        self._turn = turn
        self._label = label
        self._answer: list[str] = []

    def event(self, event: bytes) -> bytes:
        """The event as the client gets it (empty: nothing to send)."""
        if not event.startswith(DATA_PREFIX):
            return event + SEPARATOR if event else b""
        if event == DONE:
            verdict = self._judge.verdict(
                self._turn, "".join(self._answer), self.decision, enforce_support=False
            )
            grounding = {"object": "chat.completion.chunk", "model": self._label, "choices": [],
                         "grounding": verdict.model_dump()}  # fmt: skip
            return sse_event(grounding) + event + SEPARATOR
        data = event_data(event)
        if not isinstance(data, dict):  # not JSON: nothing to gather or to strip
            return event + SEPARATOR
        for choice in data.get("choices") or []:
            self._answer.append((choice.get("delta") or {}).get("content") or "")
            if not self._turn.client_logprobs:
                choice["logprobs"] = None
        # The gateway asked for logprobs for its own decision: a client that did not gets none.
        return event + SEPARATOR if self._turn.client_logprobs else sse_event(data)


def _event_first_token(event: bytes) -> FirstToken | None:
    """The first token of a stream event that carries one (role-only chunks carry none)."""
    data = event_data(event)
    if not isinstance(data, dict):
        return None
    for choice in data.get("choices") or []:
        found = first_token(choice.get("logprobs"))
        if found is not None:
            return found
    return None
