"""Grounding rates and the CRAG-style score, on a hand-built set of outcomes."""

from __future__ import annotations

import pytest

from eval.metrics.grounding import GroundingOutcome, grounding_metrics, per_example_scores
from eval.stats import mean_of

# 4 answerable: 2 correct, 1 wrong, 1 abstained. 2 unanswerable: 1 abstained, 1 answered.
OUTCOMES = [
    GroundingOutcome(answerable=True, abstained=False, correct=True),
    GroundingOutcome(answerable=True, abstained=False, correct=True),
    GroundingOutcome(answerable=True, abstained=False, correct=False),
    GroundingOutcome(answerable=True, abstained=True, correct=False),
    GroundingOutcome(answerable=False, abstained=True, correct=False),
    GroundingOutcome(answerable=False, abstained=False, correct=False),
]


def test_rates_by_hand() -> None:
    m = grounding_metrics(OUTCOMES)
    assert m["answered_correct"] == pytest.approx(2 / 4)
    assert m["false_abstention"] == pytest.approx(1 / 4)
    assert m["abstained_correct"] == pytest.approx(1 / 2)
    assert m["hallucination"] == pytest.approx(1 / 2)
    # +1 +1 -1 0 0 -1 over 6 questions
    assert m["crag_score"] == pytest.approx(0.0)


def test_always_abstaining_scores_zero_and_never_hallucinates() -> None:
    outcomes = [GroundingOutcome(a, True, False) for a in (True, True, False)]
    m = grounding_metrics(outcomes)
    assert (m["crag_score"], m["hallucination"], m["false_abstention"]) == (0.0, 0.0, 1.0)


def test_per_example_values_average_to_the_rates() -> None:
    rates, values = grounding_metrics(OUTCOMES), per_example_scores(OUTCOMES)
    everyone = range(len(OUTCOMES))
    for metric, column in values.items():
        assert mean_of(column, everyone) == pytest.approx(rates[metric]), metric
