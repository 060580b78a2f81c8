"""Calibrating the reader's answer/abstain decision on held-out articles, as the gateway sees them.

For each question of the calibration articles the article's paragraphs are the collection: the
embedder the gateway uses retrieves the top k by cosine similarity, the reader reads them, and
the policy's signals (`grounding.policy.signals`) are recorded with whether the sources hold the
answer (SQuAD says answerable and its paragraph is among those retrieved). A sign-constrained
logistic combination of the signals and the threshold that holds hallucination (unanswerable
questions answered) to a target rate are fitted and written into the reader's manifest, where
the gateway reads them.

Retrieval here is dense only over whole SQuAD paragraphs (the gateway fuses dense and sparse over
its own chunks); the recorded `retrieval` field says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eval.answerability import auroc, fit_monotone_logistic, rates_at, threshold_for_rate
from grounding.answerability import question_coverage
from grounding.policy import FEATURES, best_evidence, signals
from grounding.reader.reader import Reader
from ragdock.contracts.reader import ReaderDecision, SignalAuroc, read_reader_manifest
from retrieval.dense import Embedder
from training.reader.squad import Article

RETRIEVAL = "dense cosine (all-MiniLM-L6-v2) over the article's paragraphs"


def reading_rows(
    reader: Reader,
    embedder: Embedder,
    articles: Sequence[Article],
    *,
    top_k: int,
    advance: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per question: the policy's signals, whether the sources hold the answer, and the
    reader's best span with its source."""
    rows = []
    for article in articles:
        vectors = np.asarray(embedder.embed_documents(list(article.paragraphs)))
        for question in article.questions:
            query = np.asarray(embedder.embed_query(question.text)).reshape(-1)
            similarity = vectors @ query
            order = [int(i) for i in np.argsort(-similarity)[:top_k]]
            sources = [article.paragraphs[i] for i in order]
            evidence = best_evidence(reader.evidence(question.text, sources))
            row: dict[str, Any] = signals(
                evidence,
                top_similarity=float(similarity[order[0]]),
                question_coverage=question_coverage(question.text, sources),
            )
            row.update(
                question=question.text,
                article=article.title,
                answerable=question.answerable and question.paragraph in order,
                squad_answerable=question.answerable,
                span=evidence.text if evidence else "",
                span_source=evidence.source if evidence else None,
                gold=[text for text, _ in question.answers],
            )
            rows.append(row)
            if advance is not None:
                advance()
    return rows


def fit_decision(
    rows: Sequence[dict[str, Any]],
    *,
    target_hallucination: float,
    articles: Sequence[str],
    top_k: int,
    features: Sequence[str] = FEATURES,
) -> ReaderDecision:
    """The decision for `rows`: weights, bias and the threshold for the target rate.

    Raises:
        ValueError: fewer than 10 questions of either class.
    """
    labels = np.array([bool(r["answerable"]) for r in rows])
    if labels.sum() < 10 or (~labels).sum() < 10:
        raise ValueError(
            f"the decision needs at least 10 questions the sources answer and 10 they do not, got "
            f"{int(labels.sum())} and {int((~labels).sum())}"
        )
    matrix = np.array([[float(r[f]) for f in features] for r in rows])
    weights, bias = fit_monotone_logistic(matrix, labels, features)
    scores = list(1.0 / (1.0 + np.exp(-np.clip(matrix @ weights + bias, -60, 60))))
    unanswerable = [s for s, y in zip(scores, labels, strict=True) if not y]
    threshold = threshold_for_rate(unanswerable, target_hallucination)
    rates = rates_at(list(labels), scores, threshold)
    aurocs = [SignalAuroc(signal=f, auroc=auroc(list(labels), list(matrix[:, i])))
              for i, f in enumerate(features)]  # fmt: skip
    aurocs.append(SignalAuroc(signal="combined", auroc=auroc(list(labels), scores)))
    return ReaderDecision(
        features=list(features),
        weights=[float(w) for w in weights],
        bias=float(bias),
        threshold=float(threshold),
        target_hallucination=target_hallucination,
        split="calibration",
        articles=list(articles),
        questions=len(rows),
        answerable=int(labels.sum()),
        top_k=top_k,
        retrieval=RETRIEVAL,
        hallucination=rates["hallucination"],
        false_abstention=rates["false_abstention"],
        auroc=aurocs,
    )


def calibrate_reader(
    reader_dir: Path,
    embedder: Embedder,
    articles: Sequence[Article],
    *,
    target_hallucination: float,
    top_k: int,
    advance: Callable[[], None] | None = None,
    reader: Reader | None = None,
) -> tuple[ReaderDecision, list[dict[str, Any]]]:
    """Fit the decision on `articles` and write it into the reader's manifest.

    Returns:
        The decision and the rows it was fitted on.
    """
    reader = reader or Reader.load(reader_dir)
    rows = reading_rows(reader, embedder, articles, top_k=top_k, advance=advance)
    decision = fit_decision(
        rows,
        target_hallucination=target_hallucination,
        articles=[a.title for a in articles],
        top_k=top_k,
    )
    manifest = read_reader_manifest(reader_dir).model_copy(update={"decision": decision})
    manifest.write(reader_dir)
    write_decision_card(reader_dir / "README.md", decision)
    return decision, rows


DECISION_HEADING = "## Answer / abstain decision"


def write_decision_card(card: Path, decision: ReaderDecision) -> None:
    """The decision's section of the model card (replacing an earlier one); no card, nothing."""
    if not card.is_file():
        return
    text = card.read_text(encoding="utf-8").split(DECISION_HEADING)[0].rstrip()
    weights = ", ".join(f"{f} {w:+.3f}" for f, w in zip(decision.features, decision.weights,
                                                         strict=True))  # fmt: skip
    aurocs = " | ".join(f"{a.auroc:.3f}" if a.auroc is not None else "n/a" for a in decision.auroc)
    section = [
        DECISION_HEADING,
        "",
        f"Fitted by `ragdock eval calibrate-reader` on {', '.join(decision.articles)} "
        f"({decision.questions} questions, {decision.answerable} answerable by their top "
        f"{decision.top_k} sources; {decision.retrieval}).",
        "",
        f"- logistic weights: {weights}; bias {decision.bias:+.3f}",
        f"- threshold {decision.threshold:.3f} for hallucination <= "
        f"{decision.target_hallucination}: achieved {decision.hallucination:.3f}, false "
        f"abstention {decision.false_abstention:.3f}",
        "",
        "| " + " | ".join(a.signal for a in decision.auroc) + " |",
        "|" + "---|" * len(decision.auroc),
        f"| {aurocs} |",
        "",
        "(AUROC: questions the sources answer vs questions they do not.)",
    ]
    card.write_text(text + "\n\n" + "\n".join(section) + "\n", encoding="utf-8")
