"""Calibrating when a grounded adapter answers: how well each signal separates answerable from
unanswerable questions (AUROC), a logistic combination of the signals the gateway knows at the
reply's first token, and the threshold on it that holds hallucination to a target rate.

Rows are what the gateway reported for each validation question (`grounding.answerability`,
`grounding.top_score`, the answer and its support) plus whether SQuAD says it is answerable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from grounding.answerability import FEATURES, AnswerabilitySignals, Calibration

# The direction each feature may push the score: answerability must not rise with the model's
# wish to abstain, nor fall as the question is better covered or the best source more similar.
# Fitting free weights on one dataset can learn the opposite (SQuAD 2.0's impossible questions
# are written with the paragraph's own words, so coverage there separates the classes backwards);
# such a weight would not carry over to a new corpus, so it is held at 0 instead.
MONOTONE_SIGNS = {
    "abstain_logit": -1.0,
    "question_coverage": 1.0,
    "top_score": 1.0,
    # The reader's decision (`eval.reader_decision`): more belief in a span, more answerable.
    "reader_margin": 1.0,
    "span_score": 1.0,
    "top_similarity": 1.0,
}

# Signals reported per question beside the fitted score; the first three are the score's inputs.
# `answer_logprob` and `support_overlap` exist only once an answer is written (not for
# abstentions, nor before a stream's first token), so they are reported, not combined.
SIGNALS = ("p_answer", "question_coverage", "top_score", "answer_logprob", "support_overlap")


def signals_of(row: dict[str, Any]) -> AnswerabilitySignals:
    return AnswerabilitySignals(
        p_abstain=float(row["p_abstain"]),
        question_coverage=float(row["question_coverage"]),
        top_score=row.get("top_score"),
    )


def auroc(labels: Sequence[bool], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve (answerable = positive); None without both classes."""
    if len(set(labels)) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(list(labels), list(scores)))


def signal_aurocs(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | int | None]]:
    """AUROC of each raw signal (higher = more likely answerable), over the rows that have it."""
    out: dict[str, dict[str, float | int | None]] = {}
    for name in SIGNALS:
        have = [r for r in rows if _signal(r, name) is not None]
        labels = [bool(r["answerable"]) for r in have]
        value = auroc(labels, [float(_signal(r, name)) for r in have])  # type: ignore[arg-type]
        out[name] = {"auroc": value, "n": len(have)}
    return out


def _signal(row: dict[str, Any], name: str) -> float | None:
    if name == "p_answer":
        return 1.0 - float(row["p_abstain"])
    value = row.get(name)
    return None if value is None else float(value)


def threshold_for_rate(unanswerable_scores: Sequence[float], target: float) -> float:
    """The lowest threshold at which at most `target` of the unanswerable questions score at or
    above it (and so would be answered). 0.0 when even answering all of them meets the target."""
    if not unanswerable_scores:
        return 0.0
    ranked = sorted(unanswerable_scores, reverse=True)
    allowed = math.floor(target * len(ranked) + 1e-9)
    if allowed >= len(ranked):
        return 0.0
    # Strictly above the first score that must be refused: ties with it are refused as well.
    return math.nextafter(ranked[allowed], math.inf)


def tradeoff_curve(
    labels: Sequence[bool], scores: Sequence[float], points: int = 101
) -> list[dict[str, float]]:
    """Hallucination (unanswerable answered) and false abstention (answerable refused) as the
    threshold moves from 0 to 1."""
    answerable = [s for s, y in zip(scores, labels, strict=True) if y]
    unanswerable = [s for s, y in zip(scores, labels, strict=True) if not y]
    curve = []
    for step in range(points):
        t = step / (points - 1)
        curve.append(
            {
                "threshold": t,
                "hallucination": _share(unanswerable, lambda s, t=t: s >= t),
                "false_abstention": _share(answerable, lambda s, t=t: s < t),
            }
        )
    return curve


def _share(values: Sequence[float], keep: Any) -> float:
    return sum(1 for v in values if keep(v)) / len(values) if values else 0.0


def rates_at(labels: Sequence[bool], scores: Sequence[float], threshold: float) -> dict[str, float]:
    answerable = [s for s, y in zip(scores, labels, strict=True) if y]
    unanswerable = [s for s, y in zip(scores, labels, strict=True) if not y]
    return {
        "hallucination": _share(unanswerable, lambda s: s >= threshold),
        "false_abstention": _share(answerable, lambda s: s < threshold),
    }


def fit_calibration(
    rows: Sequence[dict[str, Any]],
    target_hallucination: float,
    *,
    max_false_abstention: float = 1.0,
    features: Sequence[str] = FEATURES,
    folds: int = 5,
    seed: int = 0,
) -> Calibration:
    """Fit the logistic combination and pick its threshold for `target_hallucination`.

    The weights are sign-constrained (`MONOTONE_SIGNS`). The reported AUROC of the combination
    is cross-validated (each row scored by a fit that did not see it); the weights and threshold
    are then fitted on all rows. The calibration is `enforced` only if, at that threshold, at
    most `max_false_abstention` of the answerable validation questions would be refused.

    Raises:
        ValueError: fewer than 10 rows of each class (no threshold would mean anything).
    """
    from sklearn.model_selection import StratifiedKFold

    labels = np.array([bool(r["answerable"]) for r in rows])
    if labels.sum() < 10 or (~labels).sum() < 10:
        raise ValueError(
            f"calibration needs at least 10 answerable and 10 unanswerable questions, got "
            f"{int(labels.sum())} and {int((~labels).sum())}"
        )
    matrix = np.array([[signals_of(r).features()[f] for f in features] for r in rows])
    held_out = np.zeros(len(rows))
    splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splits.split(matrix, labels):
        weights, bias = fit_monotone_logistic(matrix[train], labels[train], features)
        held_out[test] = 1.0 / (1.0 + np.exp(-(matrix[test] @ weights + bias)))
    weights, bias = fit_monotone_logistic(matrix, labels, features)
    calibration = Calibration(
        features=tuple(features),
        weights=tuple(float(w) for w in weights),
        bias=float(bias),
        threshold=0.0,
        target_hallucination=target_hallucination,
    )
    scores = [calibration.score(signals_of(r)) for r in rows]
    unanswerable = [s for s, y in zip(scores, labels, strict=True) if not y]
    threshold = threshold_for_rate(unanswerable, target_hallucination)
    at_threshold = rates_at(list(labels), scores, threshold)
    validation: dict[str, Any] = {
        "questions": len(rows),
        "answerable": int(labels.sum()),
        "unanswerable": int((~labels).sum()),
        "signals": signal_aurocs(rows),
        "combined_auroc_cv": auroc(list(labels), list(held_out)),
        "combined_auroc_fit": auroc(list(labels), scores),
        "at_threshold": at_threshold,
        "model_alone": _model_alone(rows),
        "curve": tradeoff_curve(list(labels), scores),
    }
    return Calibration(
        features=calibration.features,
        weights=calibration.weights,
        bias=calibration.bias,
        threshold=threshold,
        target_hallucination=target_hallucination,
        validation={**validation, "max_false_abstention": max_false_abstention},
        enforced=at_threshold["false_abstention"] <= max_false_abstention,
    )


def fit_monotone_logistic(
    matrix: np.ndarray, labels: np.ndarray, features: Sequence[str], c: float = 1.0
) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression (sklearn's default objective, C=`c`) whose weights keep
    the sign `MONOTONE_SIGNS` allows them (0 when the data would want the other one)."""
    from scipy.optimize import minimize

    y = labels.astype(float)
    width = matrix.shape[1]

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:width], theta[width]
        z = matrix @ w + b
        # log(1 + e^z) - y z, stably; its gradient is (sigmoid(z) - y).
        loss = float(np.sum(np.logaddexp(0.0, z) - y * z))
        residual = 1.0 / (1.0 + np.exp(-z)) - y
        grad = np.concatenate([w + c * (matrix.T @ residual), [c * residual.sum()]])
        return 0.5 * float(w @ w) + c * loss, grad

    bounds = [
        (0.0, None) if MONOTONE_SIGNS.get(f, 0.0) > 0 else (None, 0.0)
        if MONOTONE_SIGNS.get(f, 0.0) < 0 else (None, None)
        for f in features
    ] + [(None, None)]  # fmt: skip
    result = minimize(objective, np.zeros(width + 1), jac=True, method="L-BFGS-B", bounds=bounds)
    return result.x[:width], float(result.x[width])


def _model_alone(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The rates when the model's own first token decides (what an uncalibrated adapter does)."""
    labels = [bool(r["answerable"]) for r in rows]
    answered = [0.0 if r["model_abstained"] else 1.0 for r in rows]
    return rates_at(labels, answered, 0.5)


def plot_tradeoff(
    curves: dict[str, list[dict[str, float]]],
    chosen: dict[str, dict[str, float]],
    path: Path,
    title: str,
) -> Path:
    """Hallucination against false abstention as the threshold moves, one line per curve, with
    each curve's operating point marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    for label, curve in curves.items():
        line = ax.plot(
            [p["false_abstention"] for p in curve],
            [p["hallucination"] for p in curve],
            label=label,
        )
        point = chosen.get(label)
        if point:
            ax.plot(
                point["false_abstention"],
                point["hallucination"],
                "o",
                color=line[0].get_color(),
                markersize=9,
            )
            ax.annotate(
                f"t={point['threshold']:.2f}",
                (point["false_abstention"], point["hallucination"]),
                textcoords="offset points",
                xytext=(8, 6),
            )
    ax.set_xlabel("false abstention (answerable questions refused)")
    ax.set_ylabel("hallucination (unanswerable questions answered)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
