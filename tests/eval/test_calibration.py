"""Answerability calibration: the threshold picked from the scores reproduces the target
hallucination rate on the split it was fitted on, the combination beats a useless signal, and the
questions come from every validation article."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from eval.answerability import (
    auroc,
    fit_calibration,
    plot_tradeoff,
    rates_at,
    signals_of,
    threshold_for_rate,
    tradeoff_curve,
)
from eval.calibrate import validation_questions


def _rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Questions whose abstention probability separates the classes imperfectly, and whose
    coverage is pure noise."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        answerable = i % 2 == 0
        centre = 0.3 if answerable else 0.7
        p = min(0.99, max(0.01, rng.gauss(centre, 0.15)))
        rows.append(
            {
                "answerable": answerable,
                "p_abstain": p,
                "question_coverage": rng.random(),
                "top_score": 0.5 + rng.random() * 0.1,
                "model_abstained": p > 0.5,
            }
        )
    return rows


@pytest.mark.parametrize("target", [0.0, 0.05, 0.1, 0.25, 1.0])
def test_threshold_reproduces_the_target_rate_exactly_on_distinct_scores(target: float) -> None:
    scores = [i / 200 for i in range(200)]
    threshold = threshold_for_rate(scores, target)
    answered = sum(1 for s in scores if s >= threshold)
    assert answered == math.floor(target * len(scores))
    # The lowest such threshold: one score lower would answer one more unanswerable question.
    if 0 < answered < len(scores):
        below = sorted(scores, reverse=True)[answered]
        assert sum(1 for s in scores if s >= below) == answered + 1


def test_ties_at_the_threshold_are_refused_together() -> None:
    threshold = threshold_for_rate([0.9, 0.5, 0.5, 0.5, 0.1], 0.4)
    assert sum(1 for s in [0.9, 0.5, 0.5, 0.5, 0.1] if s >= threshold) == 1  # never 4 of 5


def test_fitted_calibration_holds_its_target_on_the_validation_split() -> None:
    rows = _rows(400)
    calibration = fit_calibration(rows, target_hallucination=0.1)
    labels = [r["answerable"] for r in rows]
    scores = [calibration.score(signals_of(r)) for r in rows]
    rates = rates_at(labels, scores, calibration.threshold)
    unanswerable = labels.count(False)
    assert rates["hallucination"] == math.floor(0.1 * unanswerable) / unanswerable
    assert calibration.validation["at_threshold"] == pytest.approx(rates)
    # The abstention signal carries the information; the fit leans on it, not on the noise.
    weights = dict(zip(calibration.features, calibration.weights, strict=True))
    assert weights["abstain_logit"] < 0
    assert abs(weights["question_coverage"]) < abs(weights["abstain_logit"]) * 5
    validation = calibration.validation
    assert validation["signals"]["p_answer"]["auroc"] > 0.9
    assert 0.4 < validation["signals"]["question_coverage"]["auroc"] < 0.6
    assert validation["combined_auroc_cv"] > 0.9
    # The model's own first token (threshold 0.5 on p_abstain) for comparison.
    assert set(validation["model_alone"]) == {"hallucination", "false_abstention"}


def test_a_threshold_that_refuses_too_much_is_kept_but_not_enforced() -> None:
    rows = _rows(400)
    strict = fit_calibration(rows, target_hallucination=0.0, max_false_abstention=0.2)
    assert strict.validation["at_threshold"]["false_abstention"] > 0.2
    assert strict.enforced is False and strict.to_manifest().enforced is False
    loose = fit_calibration(rows, target_hallucination=0.1, max_false_abstention=0.9)
    assert loose.enforced is True


def test_calibration_refuses_a_split_without_both_classes() -> None:
    rows = [r for r in _rows(100) if r["answerable"]]
    with pytest.raises(ValueError, match="at least 10"):
        fit_calibration(rows, target_hallucination=0.1)


def test_curve_moves_one_rate_against_the_other_and_is_drawn(tmp_path: Path) -> None:
    rows = _rows(200)
    labels = [r["answerable"] for r in rows]
    scores = [1 - r["p_abstain"] for r in rows]
    curve = tradeoff_curve(labels, scores)
    assert curve[0]["hallucination"] == 1.0 and curve[0]["false_abstention"] == 0.0
    halluc = [p["hallucination"] for p in curve]
    refused = [p["false_abstention"] for p in curve]
    assert halluc == sorted(halluc, reverse=True) and refused == sorted(refused)
    assert auroc(labels, scores) == pytest.approx(auroc(labels, [s * 2 for s in scores]))
    assert auroc([True, True], [0.1, 0.2]) is None
    path = plot_tradeoff({"validation": curve}, {"validation": {"threshold": 0.5, **rates_at(
        labels, scores, 0.5)}}, tmp_path / "curve.png", "test")  # fmt: skip
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_validation_questions_are_every_question_of_the_validation_articles(
    tmp_path: Path,
) -> None:
    squad = {
        "data": [
            {
                "title": title,
                "paragraphs": [
                    {
                        "context": "Text.",
                        "qas": [
                            {
                                "id": f"{title}-a",
                                "question": "Q?",
                                "is_impossible": False,
                                "answers": [{"text": "Text", "answer_start": 0}],
                            },
                            {"id": f"{title}-u", "question": "U?", "is_impossible": True},
                        ],
                    }
                ],
            }
            for title in ("Alpha", "Beta", "Gamma")
        ]
    }
    corpus = tmp_path / "squad.json"
    corpus.write_text(json.dumps(squad))
    raft = tmp_path / "raft"
    raft.mkdir()
    (raft / "raft_build.json").write_text(
        json.dumps({"articles": {"train": ["Alpha"], "validation": ["Beta"], "holdout": ["Gamma"]}})
    )
    questions, articles = validation_questions(raft, corpus)
    assert articles == {"Beta"}
    assert [(q["id"], q["answers"]) for q in questions] == [("Beta-a", ["Text"]), ("Beta-u", [])]


def test_weights_keep_their_sign_and_match_plain_logistic_regression_when_free() -> None:
    from sklearn.linear_model import LogisticRegression

    rows = _rows(400, seed=1)
    for row in rows:  # coverage that separates the classes backwards, as on SQuAD 2.0
        row["question_coverage"] = 0.3 if row["answerable"] else 0.9
    calibration = fit_calibration(rows, target_hallucination=0.1)
    weights = dict(zip(calibration.features, calibration.weights, strict=True))
    assert weights["question_coverage"] == 0.0  # held at 0, not fitted negative
    assert weights["abstain_logit"] < 0

    # Where every free weight already has the allowed sign, the fit is sklearn's own.
    plain = _rows(400, seed=2)
    features = ("abstain_logit",)
    fitted = fit_calibration(plain, target_hallucination=0.1, features=features)
    matrix = [[signals_of(r).features()["abstain_logit"]] for r in plain]
    reference = LogisticRegression(C=1.0).fit(matrix, [r["answerable"] for r in plain])
    assert fitted.weights[0] == pytest.approx(reference.coef_[0][0], rel=1e-3)
    assert fitted.bias == pytest.approx(reference.intercept_[0], rel=1e-3, abs=1e-3)
