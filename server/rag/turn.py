"""A chat turn being answered over retrieved sources: what was found, the conversation the model
sees, and the thresholds its answer is judged by."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from server.rag.grounding import DECISION_TOP_LOGPROBS
from server.rag.service import RetrievalOutcome

if TYPE_CHECKING:
    from server.rag.reading import Reading


@dataclass(frozen=True)
class GroundedTurn:
    """`min_answerability`: the request's or collection's threshold on the calibrated score
    (None: the adapter's own calibrated threshold). `min_support`: see `post_check`.
    `client_logprobs`: the client asked for logprobs (the gateway asks for them regardless).
    `tenant`: the caller's, whose recent activity the verdict counts in. `reading`: the
    reader at work on the sources (None without a reader: the first token decides)."""

    tenant: str
    collection: str
    outcome: RetrievalOutcome
    messages: list[dict[str, Any]]
    question: str
    min_answerability: float | None
    min_support: float
    client_logprobs: bool
    reading: asyncio.Future[Reading] | None = None

    def engine_payload(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The client's request as the engine gets it: the grounded conversation, and the
        first token's alternatives, which the answer-or-abstain decision reads (not with a
        reader, which decides instead)."""
        if self.reading is not None:
            return {**payload, "messages": self.messages}
        asked = payload.get("top_logprobs") or 0
        return {
            **payload,
            "messages": self.messages,
            "logprobs": True,
            "top_logprobs": max(asked, DECISION_TOP_LOGPROBS),
        }

    def sources(self) -> list[dict[str, Any]]:
        """The numbered sources as clients see them in `sources`."""
        return [source.model_dump() for source in self.outcome.sources]
