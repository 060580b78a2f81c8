"""Answer-quality metrics over one prediction and its reference(s): pure functions, no I/O.

Exact match and token F1 follow the SQuAD evaluation (lower case, drop punctuation and the
articles a/an/the, collapse spaces) so figures compare with published ones; a prediction scores
against its best-matching reference. Citation markers like [2] are removed first: a grounded
answer cites its sources, and a citation is not part of the answer's wording.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_CITATION = re.compile(r"\[\d{1,3}\]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation + "\u2018\u2019\u201c\u201d")


def normalize_answer(text: str) -> str:
    """SQuAD normalisation, after stripping citation markers."""
    text = _CITATION.sub(" ", text).lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, references: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised reference."""
    got = normalize_answer(prediction)
    return float(any(got == normalize_answer(ref) for ref in references))


def token_f1(prediction: str, references: Sequence[str]) -> float:
    """Best bag-of-tokens F1 against the references (SQuAD's definition)."""
    return max(
        (
            _f1(normalize_answer(prediction).split(), normalize_answer(r).split())
            for r in references
        ),
        default=0.0,
    )


def _f1(got: list[str], want: list[str]) -> float:
    if not got or not want:
        return float(got == want)
    common = sum((Counter(got) & Counter(want)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)


def contains_answer(prediction: str, references: Sequence[str]) -> float:
    """1.0 when a normalised reference appears, as whole words, inside the normalised prediction.

    A grounded model answers in a sentence ("It was built in 1712 [1].") where SQuAD's reference
    is a span ("1712"): containment credits that without the length penalty F1 applies.
    """
    got = f" {normalize_answer(prediction)} "
    return float(any(f" {normalize_answer(r)} " in got for r in references if normalize_answer(r)))


def rouge_l(prediction: str, references: Sequence[str], beta: float = 1.2) -> float:
    """Best ROUGE-L F-measure (longest common subsequence of tokens) against the references.

    beta weights recall over precision; 1.2 is the value of the original ROUGE package.
    """
    best = 0.0
    got = normalize_answer(prediction).split()
    for ref in references:
        want = normalize_answer(ref).split()
        lcs = _lcs_length(got, want)
        if lcs == 0:
            continue
        precision, recall = lcs / len(got), lcs / len(want)
        best = max(best, (1 + beta**2) * precision * recall / (recall + beta**2 * precision))
    return best


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if token == other else max(previous[j], current[-1]))
        previous = current
    return previous[-1]


def chrf(prediction: str, references: Sequence[str], order: int = 6, beta: float = 2.0) -> float:
    """Best chrF against the references: character n-gram F-beta averaged over n = 1..order.

    As in Popovic (2015) and sacreBLEU's default: spaces are removed, precision and recall are
    averaged over the n-gram orders, then combined with beta = 2 (recall counts twice).
    Returns a value in [0, 1] (sacreBLEU prints it x100).
    """
    return max((_chrf_one(prediction, ref, order, beta) for ref in references), default=0.0)


def _chrf_one(prediction: str, reference: str, order: int, beta: float) -> float:
    got, want = "".join(prediction.split()), "".join(reference.split())
    precisions, recalls = [], []
    for n in range(1, order + 1):
        got_grams = Counter(got[i : i + n] for i in range(len(got) - n + 1))
        want_grams = Counter(want[i : i + n] for i in range(len(want) - n + 1))
        if not got_grams or not want_grams:
            continue  # strings shorter than n have no n-grams of that order
        common = sum((got_grams & want_grams).values())
        precisions.append(common / sum(got_grams.values()))
        recalls.append(common / sum(want_grams.values()))
    if not precisions:
        return 0.0
    precision, recall = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    if precision == 0 and recall == 0:
        return 0.0
    return (1 + beta**2) * precision * recall / (beta**2 * precision + recall)
