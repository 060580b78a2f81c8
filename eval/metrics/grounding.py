"""Grounded-answering outcomes: did the model answer correctly, abstain correctly, or invent?

Each question is answerable (its sources hold the answer) or not. The model either answers or
abstains (the gateway's retrieval gate abstaining counts as the model abstaining: the user sees the
same reply). Four rates follow, each over the questions where it means something:

- answered_correct: answerable questions answered correctly / answerable questions;
- false_abstention: answerable questions abstained on / answerable questions;
- abstained_correct: unanswerable questions abstained on / unanswerable questions;
- hallucination: unanswerable questions answered anyway / unanswerable questions.

The CRAG-style score (Yang et al., 2024) is the mean over all questions of +1 for a correct answer,
-1 for a wrong one (a wrong answer to an answerable question, or any answer to an unanswerable one)
and 0 for an abstention: accuracy minus the rate of invented answers. Always abstaining scores 0;
answering everything badly scores below 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class GroundingOutcome:
    answerable: bool
    abstained: bool
    correct: bool  # the answer matches a reference (False when abstained or unanswerable)

    @property
    def crag(self) -> float:
        """+1 correct answer, -1 invented or wrong answer, 0 abstention."""
        if self.abstained:
            return 0.0
        return 1.0 if (self.answerable and self.correct) else -1.0


def grounding_metrics(outcomes: Sequence[GroundingOutcome]) -> dict[str, float]:
    """The four rates, the CRAG-style score and the counts behind them."""
    answerable = [o for o in outcomes if o.answerable]
    unanswerable = [o for o in outcomes if not o.answerable]

    def rate(hits: int, total: int) -> float:
        return hits / total if total else 0.0

    return {
        "answered_correct": rate(
            sum(o.correct and not o.abstained for o in answerable), len(answerable)
        ),
        "false_abstention": rate(sum(o.abstained for o in answerable), len(answerable)),
        "abstained_correct": rate(sum(o.abstained for o in unanswerable), len(unanswerable)),
        "hallucination": rate(sum(not o.abstained for o in unanswerable), len(unanswerable)),
        "crag_score": sum(o.crag for o in outcomes) / len(outcomes) if outcomes else 0.0,
        "answerable": float(len(answerable)),
        "unanswerable": float(len(unanswerable)),
    }


def per_example_scores(outcomes: Sequence[GroundingOutcome]) -> dict[str, list[float | None]]:
    """Per-question values whose means are the rates above, for paired bootstrap intervals.

    None marks a question a rate does not count (e.g. hallucination on an answerable question).
    """
    return {
        "answered_correct": [
            float(o.correct and not o.abstained) if o.answerable else None for o in outcomes
        ],
        "false_abstention": [float(o.abstained) if o.answerable else None for o in outcomes],
        "abstained_correct": [float(o.abstained) if not o.answerable else None for o in outcomes],
        "hallucination": [float(not o.abstained) if not o.answerable else None for o in outcomes],
        "crag_score": [o.crag for o in outcomes],
    }
