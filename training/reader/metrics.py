"""Reader metrics: AUROC of an answerability score, SQuAD exact match and F1, best threshold.

Pure functions; SQuAD's own normalisation (lower case, no punctuation, no articles, single
spaces) so the figures compare with published SQuAD 2.0 numbers.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float | None:
    """Area under the ROC curve: the chance a random positive outscores a random negative.

    Ties count one half (Mann-Whitney U with mid-ranks).

    Returns:
        The AUROC, or None when either class is empty.

    Raises:
        ValueError: the sequences differ in length.
    """
    if len(scores) != len(positive):
        raise ValueError(f"{len(scores)} scores but {len(positive)} labels")
    n_pos = sum(1 for p in positive if p)
    n_neg = len(positive) - n_pos
    if not n_pos or not n_neg:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, p in zip(ranks, positive, strict=True) if p)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: Sequence[str]) -> float:
    """1.0 when the prediction equals any gold answer after normalisation (no gold: empty)."""
    targets = [normalize_answer(g) for g in gold] or [""]
    return float(normalize_answer(prediction) in targets)


def _f1(prediction: str, target: str) -> float:
    pred, gold = normalize_answer(prediction).split(), normalize_answer(target).split()
    if not pred or not gold:
        return float(pred == gold)
    common = sum((Counter(pred) & Counter(gold)).values())
    if not common:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, gold: Sequence[str]) -> float:
    """Token F1 against the best-matching gold answer (no gold: the empty answer)."""
    return max(_f1(prediction, g) for g in (list(gold) or [""]))


def best_threshold(
    margins: Sequence[float], answer_f1: Sequence[float], answerable: Sequence[bool]
) -> tuple[float, float]:
    """The margin threshold that maximises SQuAD 2.0 F1 (answer when margin > threshold).

    A question answered gets its span's F1 (0 when it had no answer); one abstained on gets 1
    when it had no answer, else 0.

    Args:
        margins: per question, best span score - null score.
        answer_f1: per question, the F1 of its best span (ignored for unanswerable ones).
        answerable: per question, whether it has an answer.

    Returns:
        (threshold, mean F1 at that threshold); threshold -inf answers everything.
    """
    count = len(margins)
    if not count:
        return 0.0, 0.0
    # Start by abstaining on everything, then answer questions in decreasing margin order.
    score = float(sum(1 for a in answerable if not a))
    best, best_threshold_value = score, float("inf")
    order = sorted(range(count), key=lambda i: -margins[i])
    for rank, i in enumerate(order):
        score += answer_f1[i] if answerable[i] else -1.0
        next_margin = margins[order[rank + 1]] if rank + 1 < count else float("-inf")
        if next_margin == margins[i]:
            continue  # a threshold cannot separate equal margins
        if score > best:
            best, best_threshold_value = score, next_margin
    return best_threshold_value, best / count
