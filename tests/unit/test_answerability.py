"""The answer-or-abstain policy: its signals, the calibrated score, the first-token decision and
the support check on hand-made supported, unsupported and partial answers."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from grounding.answerability import (
    AnswerabilitySignals,
    Calibration,
    abstention_probability,
    answer_support,
    question_coverage,
)
from server.rag.grounding import AnswerDecision, decide_answer, post_check
from server.rag.protocol import Source
from tests import contract_samples as samples

ABSTAIN = "I don't know based on the provided sources."
SOURCES_TEXT = [
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
    "Gustave Eiffel's company designed and built the tower over two years.",
]


def _sources() -> list[Source]:
    return [
        Source(index=i, chunk_id=f"c{i}", doc_id=f"d{i}", title="Tower", uri="", score=0.8,
               text=text, updated_at="2026-01-01T00:00:00Z")
        for i, text in enumerate(SOURCES_TEXT, start=1)
    ]  # fmt: skip


def _calibration(threshold: float = 0.5) -> Calibration:
    # Answerable when the model does not want to abstain: score = sigmoid(-abstain_logit).
    return Calibration(
        features=("abstain_logit",),
        weights=(-1.0,),
        bias=0.0,
        threshold=threshold,
        target_hallucination=0.1,
    )


def test_question_coverage_is_the_best_single_source() -> None:
    assert question_coverage("When was the Eiffel Tower completed?", SOURCES_TEXT) == 1.0
    # Content words eiffel, bridge, seine, completed: "bridge" and "Seine" appear nowhere.
    question = "When was the Eiffel bridge over the Seine completed?"
    partial = question_coverage(question, SOURCES_TEXT)
    assert math.isclose(partial, 2 / 4)
    assert question_coverage("What is it?", SOURCES_TEXT) == 1.0  # nothing to check


def test_abstention_probability_counts_every_spelling_of_the_first_piece() -> None:
    top = [
        {"token": "I", "logprob": math.log(0.5)},
        {"token": "\u2581I", "logprob": math.log(0.1)},
        {"token": "1", "logprob": math.log(0.3)},
        {"token": "In", "logprob": math.log(0.05)},  # not a prefix of the message
    ]
    assert math.isclose(abstention_probability(top, ABSTAIN), 0.6)
    assert abstention_probability([], ABSTAIN) == 0.0


def test_calibration_round_trips_through_the_manifest_and_rejects_what_it_cannot_use() -> None:
    calibration = _calibration(0.42)

    def with_block(**changes: Any) -> Calibration | None:
        block = calibration.to_manifest().model_copy(update=changes)
        return Calibration.from_manifest(samples.adapter_manifest(calibration=block))

    assert with_block() == calibration
    assert Calibration.from_manifest(samples.adapter_manifest()) is None
    assert Calibration.from_manifest(None) is None
    assert with_block(features=["shoe_size"]) is None
    assert with_block(weights=[1.0, 2.0]) is None
    restored = with_block(enforced=False)
    assert restored is not None and restored.enforced is False


def test_score_is_a_probability_that_follows_the_weights() -> None:
    calibration = _calibration()
    sure = AnswerabilitySignals(p_abstain=0.01, question_coverage=1.0, top_score=0.7)
    unsure = AnswerabilitySignals(p_abstain=0.99, question_coverage=1.0, top_score=0.7)
    assert calibration.score(sure) > 0.95 > 0.05 > calibration.score(unsure)


def _decide(first: str, p_abstain: float, calibration: Calibration | None) -> str:
    return _decision(first, p_abstain, calibration).action


def _decision(first: str, p_abstain: float, calibration: Calibration | None) -> AnswerDecision:
    top = [{"token": "I", "logprob": math.log(p_abstain)}, {"token": "1889", "logprob": -3.0}]
    enforced = calibration is not None and calibration.enforced
    return decide_answer(
        first,
        top,
        question="When was the Eiffel Tower completed?",
        sources=_sources(),
        top_score=0.7,
        calibration=calibration,
        threshold=calibration.threshold if enforced and calibration else None,
        abstention_message=ABSTAIN,
    )


def test_the_score_decides_in_both_directions() -> None:
    calibration = _calibration(0.5)
    # Began to answer, score agrees: relay. Began to answer, score says no: abstain instead.
    assert _decide("1889", 0.2, calibration) == "relay"
    assert _decide("1889", 0.7, calibration) == "abstain"
    # Began to abstain, score agrees: relay the abstention. Score says answer: ask again.
    assert _decide("I", 0.7, calibration) == "relay"
    assert _decide("I", 0.45, calibration) == "reask"
    # No calibration: the model's own choice stands, whatever the signals say.
    assert _decide("1889", 0.9, None) == "relay"
    assert _decide("I", 0.1, None) == "relay"
    # A calibration kept but not enforced: the score is reported, the model still decides.
    kept = dataclasses.replace(calibration, enforced=False)
    decision = _decision("1889", 0.9, kept)
    assert decision.action == "relay" and decision.info.decision == "model"
    assert decision.info.score is not None and decision.info.score < 0.5


def test_support_check_on_supported_unsupported_and_partial_answers() -> None:
    supported = answer_support("1889 [1]", SOURCES_TEXT, [1])
    assert supported.verbatim and supported.overlap == 1.0
    # Right fact, wrong citation: checked against the cited source only.
    miscited = answer_support("1889 [2]", SOURCES_TEXT, [2])
    assert not miscited.verbatim and miscited.overlap == 0.0
    invented = answer_support("Napoleon built it in 1920 [1]", SOURCES_TEXT, [1])
    assert invented.overlap == 0.0
    partial = answer_support("Gustave Eiffel and Napoleon [2]", SOURCES_TEXT, [2])
    assert math.isclose(partial.overlap, 2 / 3) and not partial.verbatim
    uncited = answer_support("two years", SOURCES_TEXT, [])
    assert uncited.verbatim and uncited.checked_sources == (1, 2)
    # A citation with nothing to cite it for is not an answer.
    assert answer_support("[1]", SOURCES_TEXT, [1]).overlap == 0.0
    assert answer_support("", SOURCES_TEXT, []).overlap == 0.0


def test_post_check_withdraws_unsupported_answers_or_flags_them_in_streams() -> None:
    sources = _sources()
    kept = post_check("1889 [1]", sources, ABSTAIN, 0.7, 0.35, min_support=0.5)
    assert kept.status == "answered" and kept.reason == "cited"
    assert kept.support is not None and kept.support.supported

    withdrawn = post_check("Napoleon in 1920 [1]", sources, ABSTAIN, 0.7, 0.35, min_support=0.5)
    assert withdrawn.status == "abstained" and withdrawn.reason == "unsupported"

    flagged = post_check(
        "Napoleon in 1920 [1]", sources, ABSTAIN, 0.7, 0.35, min_support=0.5, enforce_support=False
    )
    assert flagged.status == "answered" and flagged.support is not None
    assert not flagged.support.supported

    partial = "Gustave Eiffel and Napoleon [2]"  # 2 of 3 content words in source 2
    assert post_check(partial, sources, ABSTAIN, 0.7, 0.35, min_support=0.5).status == "answered"
    assert post_check(partial, sources, ABSTAIN, 0.7, 0.35, min_support=0.8).status == "abstained"
    off = post_check("Napoleon in 1920 [1]", sources, ABSTAIN, 0.7, 0.35, min_support=0.0)
    assert off.status == "answered"

    abstained = post_check(ABSTAIN, sources, ABSTAIN, 0.7, 0.35, min_support=0.5)
    assert abstained.status == "abstained" and abstained.reason == "model_abstained"
