"""The grounding decision in one place: answer (the generator's words, supported by a source it
cites), extract (the reader's span from a source, cited), or abstain.

The reader reads every retrieved source and gives its best span with a score and a no-answer
score; those, the retrieval scores and the generator's own signals feed one calibrated
probability that the sources answer the question. Then, by `answer_mode`:

- `auto` (default): below the threshold, abstain. Above it, the generated answer is served when a
  source holds it (its citations repaired to that source); when none does, or the generator
  abstained, the reader's span is served with its source's number.
- `generate`: the generated answer only: served when a source holds it, else abstain.
- `extract`: the reader's span only (the engine is not asked): served above the threshold.

Pure functions over plain values: no HTTP, no model, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from grounding.citations import CitedAnswer, check_and_repair, with_citation, without_citations

AnswerMode = Literal["auto", "generate", "extract"]
ANSWER_MODES: tuple[AnswerMode, ...] = ("auto", "generate", "extract")
FEATURES = ("reader_margin", "span_score", "top_similarity", "question_coverage")


@dataclass(frozen=True)
class Evidence:
    """The reader's best span in one source (1-based `source`); `text` is empty when the best
    choice of that source is no answer."""

    source: int
    text: str
    start: int | None
    end: int | None
    span_score: float
    null_score: float

    @property
    def margin(self) -> float:
        """How much more the reader believes the span than no answer (its log-odds, roughly)."""
        return self.span_score - self.null_score


def best_evidence(readings: Sequence[Evidence]) -> Evidence | None:
    """The source whose span the reader believes most (a span, not an empty choice)."""
    spans = [r for r in readings if without_citations(r.text)]
    return max(spans, key=lambda r: r.margin) if spans else None


class SourceReaderModel(Protocol):
    """What the gateway needs of a reader (`grounding.reader.reader.Reader` is the real one).

    Contract: `evidence` gives one `Evidence` per chunk, in order, numbered from 1; a span's
    text is its chunk's characters [start, end); no chunks, no evidence.
    """

    def evidence(self, question: str, chunks: Sequence[str]) -> list[Evidence]: ...

    def decision_model(self) -> DecisionModel | None: ...


@dataclass(frozen=True)
class DecisionModel:
    """Logistic weights over named signals and a threshold on the probability, fitted on held-out
    articles for a target hallucination rate (stored in the reader's manifest)."""

    features: tuple[str, ...]
    weights: tuple[float, ...]
    bias: float
    threshold: float

    def probability(self, signals: Mapping[str, float]) -> float:
        z = self.bias + sum(
            w * signals[f] for f, w in zip(self.features, self.weights, strict=True)
        )
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))


def signals(
    evidence: Evidence | None, *, top_similarity: float | None, question_coverage: float
) -> dict[str, float]:
    """The decision's inputs (a missing span reads as the reader's strongest no)."""
    return {
        "reader_margin": evidence.margin if evidence else -30.0,
        "span_score": evidence.span_score if evidence else -30.0,
        "top_similarity": top_similarity if top_similarity is not None else 0.0,
        "question_coverage": question_coverage,
    }


@dataclass(frozen=True)
class Plan:
    """What was decided before the generator's first token."""

    mode: AnswerMode
    answerable: bool
    probability: float
    threshold: float
    evidence: Evidence | None

    @property
    def needs_generator(self) -> bool:
        return self.answerable and self.mode != "extract"


def plan(
    mode: AnswerMode,
    readings: Sequence[Evidence],
    model: DecisionModel,
    *,
    top_similarity: float | None,
    question_coverage: float,
    threshold: float | None = None,
) -> Plan:
    """Decide whether the sources answer the question (threshold: the request's or collection's
    override, else the model's own)."""
    evidence = best_evidence(readings)
    probability = model.probability(
        signals(evidence, top_similarity=top_similarity, question_coverage=question_coverage)
    )
    limit = model.threshold if threshold is None else threshold
    return Plan(mode, probability >= limit and evidence is not None, probability, limit, evidence)


Outcome = Literal["answer", "extract", "abstain"]


@dataclass(frozen=True)
class Settled:
    """The reply the client gets, and why.

    Attributes:
        outcome: `answer` (the generator's words), `extract` (the reader's span) or `abstain`.
        text: the reply's text (None for an abstention: the caller's abstention message).
        citations: the sources it cites.
        why: one reason, e.g. `supported`, `citation_repaired`, `generated_unsupported`,
            `generator_abstained`, `not_answerable`, `no_span`.
        checked: the generated answer's check (None when nothing was generated).
    """

    outcome: Outcome
    text: str | None
    citations: list[int]
    why: str
    checked: CitedAnswer | None = None


def settle(
    decided: Plan,
    generated: str | None,
    sources: Sequence[str],
    *,
    generator_abstained: bool,
    min_support: float,
) -> Settled:
    """The reply from the plan and the generated answer (None when the engine was not asked)."""
    if not decided.answerable:
        return Settled("abstain", None, [], "not_answerable")
    checked = None
    if decided.mode != "extract" and generated is not None and not generator_abstained:
        checked = check_and_repair(generated, sources, min_support=min_support)
        if checked.supported:
            why = "citation_repaired" if checked.repaired else "supported"
            return Settled("answer", checked.text, checked.citations, why, checked)
    if decided.mode == "generate":
        why = "generator_abstained" if generator_abstained else "generated_unsupported"
        return Settled("abstain", None, [], why, checked)
    evidence = decided.evidence
    if evidence is None:
        return Settled("abstain", None, [], "no_span", checked)
    if decided.mode == "extract":
        why = "extracted"
    elif generator_abstained:
        why = "generator_abstained"
    else:
        why = "generated_unsupported"
    text = with_citation(evidence.text, evidence.source)
    return Settled("extract", text, [evidence.source], why, checked)
