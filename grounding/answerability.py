"""Should a grounded answer be given at all? Signals, a calibrated score, and a support check.

Pure functions shared by the gateway (which decides per request) and the eval suite (which fits
the calibration on a validation split and reports how well each signal separates answerable from
unanswerable questions). Three signals are known when the model's first token is:
  * `abstain_logit`: log-odds of the abstention's first token at the first position of the reply
    (from the engine's top logprobs): the adapter's own judgement, graded instead of argmaxed;
  * `question_coverage`: the share of the question's content words present in the best-covering
    source; a question about something no source mentions tends to have no answer there;
  * `top_score`: the best source's dense similarity (retrieval's own confidence).
A logistic combination of them (weights fitted per adapter on its validation split) gives the
probability that the question is answerable; the gateway answers when it is at least the
calibrated threshold and abstains otherwise, whatever the first token was. Everything a streaming
reply needs is therefore decided before its first token is sent.

The support check runs on the finished answer: its content words must be found in the sources it
cites (SQuAD-like answers are spans, so a supported answer is nearly always verbatim there).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ragdock.contracts.adapter_manifest import AdapterManifest, CalibrationBlock, CalibrationFit

FEATURES = ("abstain_logit", "question_coverage", "top_score")
# Probabilities are clipped before the log-odds so a token outside the top logprobs is finite.
_P_FLOOR = 1e-6
_WORDS = re.compile(r"[^\W_]+", re.UNICODE)
_CITATION = re.compile(r"\[\d{1,3}\]")
# Function words carry no content: a question's coverage is judged on the rest. English only; a
# corpus in another language simply counts every word (coverage stays meaningful, just noisier).
STOPWORDS = frozenset(
    """a an the of in on at to for from by with and or but not no nor is are was were be been
    being am do does did done has have had having what which who whom whose when where why how
    that this these those it its it's as than then there their they them he she his her him i me
    my we our you your us into onto over under about after before during between through against
    s t can could would should will shall may might must also only just very much many more most
    some any each other such own same so too if else while until up down out off again further
    once here all both few one""".split()  # noqa: SIM905 - a word list reads better as text
)


def content_words(text: str) -> list[str]:
    """Lower-cased words of `text` minus function words and single characters."""
    return [w for w in _WORDS.findall(text.lower()) if len(w) > 1 and w not in STOPWORDS]


def question_coverage(question: str, sources: Sequence[str]) -> float:
    """The largest share of the question's content words that any one source contains (1.0 when
    the question has no content word to check)."""
    wanted = set(content_words(question))
    if not wanted:
        return 1.0
    best = 0.0
    for source in sources:
        have = set(content_words(source))
        best = max(best, len(wanted & have) / len(wanted))
    return best


def abstention_probability(
    top_logprobs: Iterable[Mapping[str, Any]], abstention_message: str
) -> float:
    """Probability mass the model puts on starting the abstention message at the first position.

    `top_logprobs` is the engine's list for the reply's first token (OpenAI shape: `token`,
    `logprob`). A candidate counts when its text, without leading whitespace, is a non-empty
    prefix of the abstention message: tokenizers split the message differently, and the first
    piece is what decides it.
    """
    message = abstention_message.strip()
    mass = 0.0
    for entry in top_logprobs:
        token = str(entry.get("token", "")).lstrip(" \u2581\t\n")
        logprob = entry.get("logprob")
        if token and logprob is not None and message.startswith(token):
            mass += math.exp(float(logprob))
    return min(1.0, mass)


def logit(p: float) -> float:
    p = min(max(p, _P_FLOOR), 1.0 - _P_FLOOR)
    return math.log(p / (1.0 - p))


@dataclass(frozen=True)
class AnswerabilitySignals:
    """What is known about a grounded request once the reply's first token is."""

    p_abstain: float
    question_coverage: float
    top_score: float | None

    def features(self) -> dict[str, float]:
        return {
            "abstain_logit": logit(self.p_abstain),
            "question_coverage": self.question_coverage,
            # A missing retrieval score (sparse-only search) reads as no evidence either way.
            "top_score": 0.0 if self.top_score is None else self.top_score,
        }


@dataclass(frozen=True)
class Calibration:
    """A per-adapter answerability model: logistic weights over `features` and the threshold on
    its probability, fitted on the adapter's validation split for `target_hallucination`.

    `enforced`: whether the gateway decides by it. A calibration whose threshold would refuse
    more answerable validation questions than its fitter allowed is kept (the score is still
    reported, and a request or collection threshold can still apply it) but not enforced: an
    adapter silently turned into one that refuses most questions helps nobody.
    """

    features: tuple[str, ...]
    weights: tuple[float, ...]
    bias: float
    threshold: float
    target_hallucination: float
    validation: dict[str, Any] = field(default_factory=dict)
    enforced: bool = True

    def score(self, signals: AnswerabilitySignals) -> float:
        """The calibrated probability that the question is answerable from the sources."""
        values = signals.features()
        pairs = zip(self.features, self.weights, strict=True)
        z = self.bias + sum(weight * values[name] for name, weight in pairs)
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))

    def to_manifest(self, fitted: CalibrationFit | None = None) -> CalibrationBlock:
        return CalibrationBlock.model_validate({**asdict(self), "fitted": fitted})

    @classmethod
    def from_manifest(cls, manifest: AdapterManifest | None) -> Calibration | None:
        """The manifest's `calibration` block, or None when it has none (or one over signals this
        gateway does not compute: then the adapter is served uncalibrated, not with wrong
        weights)."""
        block = manifest.calibration if manifest is not None else None
        if block is None:
            return None
        if len(block.features) != len(block.weights) or not set(block.features) <= set(FEATURES):
            return None
        fields = block.model_dump(exclude={"fitted"})
        return cls(**fields | {"features": tuple(block.features), "weights": tuple(block.weights)})


@dataclass(frozen=True)
class Support:
    """How much of an answer the sources it cites contain."""

    verbatim: bool
    overlap: float
    checked_sources: tuple[int, ...]


def answer_support(answer: str, sources: Sequence[str], citations: Sequence[int]) -> Support:
    """Check an answer against the sources it cites (all sources when it cites none validly).

    `verbatim`: the answer, citations removed and normalised, occurs in one of those sources.
    `overlap`: the share of the answer's content words found in their union; an answer of
    function words only counts 1.0 when found verbatim, and one of citations only counts 0.0.
    """
    valid = [n for n in citations if 1 <= n <= len(sources)]
    checked = valid or list(range(1, len(sources) + 1))
    texts = [sources[n - 1] for n in checked]
    claim = _CITATION.sub(" ", answer)
    normal = " ".join(_WORDS.findall(claim.lower()))
    verbatim = bool(normal) and any(
        normal in " ".join(_WORDS.findall(text.lower())) for text in texts
    )
    words = content_words(claim)
    if not normal:  # nothing but citations (or nothing at all) claims nothing: no support
        overlap = 0.0
    elif not words:
        overlap = 1.0 if verbatim else 0.0
    else:
        have = set().union(*(set(_WORDS.findall(t.lower())) for t in texts)) if texts else set()
        overlap = sum(1 for w in words if w in have) / len(words)
    return Support(verbatim=verbatim, overlap=overlap, checked_sources=tuple(checked))
