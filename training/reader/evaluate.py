"""Validation of a reader on whole articles it was not trained on.

Per question two readings: its own paragraph (`gold`, SQuAD 2.0's setting) and a hard negative
(another paragraph of the article without the answer: what retrieval hands the gateway when it
misses). The margin (best span - null) is the answerability score:
  * `auroc_gold`: answerable vs unanswerable questions on their own paragraph (SQuAD 2.0);
  * `auroc_hard_negatives`: answerable questions on their paragraph vs questions on a hard negative;
  * `auroc_all`: answerable-on-gold vs every negative (impossible questions and hard negatives);
  * `forced_em` / `forced_f1`: the best span of answerable questions' own paragraph;
  * `has_answer_f1_at_0`: the same when a margin <= 0 counts as abstaining (F1 0);
  * `squad2_em_at_0` / `squad2_f1_at_0`: SQuAD 2.0 EM/F1 on gold pairs at threshold 0;
  * `best_f1` (`best_f1_threshold`): SQuAD 2.0 F1 on gold pairs at its best threshold, and
    `best_f1_with_negatives` on gold pairs plus hard negatives (the gateway's view).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from grounding.reader.predict import SpanReading, readings, window_choices
from grounding.reader.windows import Window, WindowSettings, make_windows
from training.reader.metrics import auroc, best_threshold, exact_match, f1_score
from training.reader.squad import Article
from training.reader.windows import Pair, build_pairs


@dataclass(frozen=True)
class EvalSet:
    """A split's questions with their gold and hard-negative pairs, tokenized."""

    name: str
    articles: list[str]
    pairs: list[Pair]
    windows: list[Window]


def prepare_eval_set(
    name: str,
    articles: Sequence[Article],
    tokenizer: Any,
    settings: WindowSettings,
    *,
    hard_negatives: int,
    max_questions: int | None,
    seed: int,
) -> EvalSet:
    """Pairs and windows of a split (a seeded subset of its questions when capped)."""
    pairs = build_pairs(
        articles,
        hard_negatives_per_question=hard_negatives,
        max_questions=max_questions,
        seed=seed,
    )
    return EvalSet(
        name, [a.title for a in articles], pairs, make_windows(tokenizer, pairs, settings)
    )


def predict(
    model: nn.Module, eval_set: EvalSet, *, pad_id: int, batch_size: int, max_answer_tokens: int
) -> list[SpanReading]:
    """The model's reading of every pair of the set."""
    choices = window_choices(
        model,
        eval_set.windows,
        pad_id=pad_id,
        batch_size=batch_size,
        max_answer_tokens=max_answer_tokens,
    )
    return readings([p.context for p in eval_set.pairs], eval_set.windows, choices)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _finite(value: float) -> float | None:
    # An infinite threshold means "answer everything" or "nothing": JSON has no infinity.
    return value if math.isfinite(value) else None


def score(pairs: Sequence[Pair], read: Sequence[SpanReading]) -> dict[str, float | None]:
    """The metrics above from pairs and their readings (pure).

    Raises:
        ValueError: the sequences differ in length.
    """
    if len(pairs) != len(read):
        raise ValueError(f"{len(pairs)} pairs but {len(read)} readings")
    gold = [(p, r) for p, r in zip(pairs, read, strict=True) if p.kind == "gold"]
    negatives = [r.margin for p, r in zip(pairs, read, strict=True) if p.kind == "hard_negative"]
    answerable = [(p, r) for p, r in gold if p.question.answerable]
    impossible = [r.margin for p, r in gold if not p.question.answerable]
    positive = [r.margin for _, r in answerable]

    def separation(neg: list[float]) -> float | None:
        return auroc(positive + neg, [True] * len(positive) + [False] * len(neg))

    forced_f1 = [f1_score(r.text, p.question.answer_texts) for p, r in answerable]
    squad_em = [
        exact_match(r.text if r.margin > 0 else "", p.question.answer_texts) for p, r in gold
    ]
    squad_f1 = [f1_score(r.text if r.margin > 0 else "", p.question.answer_texts) for p, r in gold]
    span_f1 = [f1_score(r.text, p.question.answer_texts) for p, r in gold]
    has_answer = [p.question.answerable for p, _ in gold]
    threshold, best = best_threshold([r.margin for _, r in gold], span_f1, has_answer)
    threshold_all, best_all = best_threshold(
        [r.margin for _, r in gold] + negatives,
        span_f1 + [0.0] * len(negatives),
        has_answer + [False] * len(negatives),
    )
    auroc_all = separation(impossible + negatives)
    forced = _mean(forced_f1)
    return {
        "questions": float(len(gold)),
        "answerable": float(len(answerable)),
        "hard_negatives": float(len(negatives)),
        "auroc_gold": separation(impossible),
        "auroc_hard_negatives": separation(negatives),
        "auroc_all": auroc_all,
        "forced_em": _mean([exact_match(r.text, p.question.answer_texts) for p, r in answerable]),
        "forced_f1": forced,
        "has_answer_f1_at_0": _mean(
            [f if r.margin > 0 else 0.0 for f, (_, r) in zip(forced_f1, answerable, strict=True)]
        ),
        "squad2_em_at_0": _mean(squad_em),
        "squad2_f1_at_0": _mean(squad_f1),
        "best_f1": best if gold else None,
        "best_f1_threshold": _finite(threshold) if gold else None,
        "best_f1_with_negatives": best_all if gold else None,
        "best_f1_with_negatives_threshold": _finite(threshold_all) if gold else None,
        "auroc_all_plus_f1": (
            (auroc_all + forced) / 2 if auroc_all is not None and forced is not None else None
        ),
    }


def evaluate(
    model: nn.Module, eval_set: EvalSet, *, pad_id: int, batch_size: int, max_answer_tokens: int
) -> dict[str, float | None]:
    """`score` of the model's readings of a set."""
    read = predict(
        model, eval_set, pad_id=pad_id, batch_size=batch_size, max_answer_tokens=max_answer_tokens
    )
    return score(eval_set.pairs, read)
