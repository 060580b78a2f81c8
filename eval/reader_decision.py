"""Calibrating the reader's answer/abstain decision on held-out articles, as the gateway sees them.

For each question of the calibration articles the articles' paragraphs are the collection, the
sources are retrieved, the reader reads them, and the policy's signals
(`grounding.policy.signals`) are recorded with whether the sources hold the answer (SQuAD says
answerable and a gold answer is in a retrieved source). A sign-constrained logistic combination
of the signals and the threshold that holds hallucination (unanswerable questions answered) to a
target rate are fitted and written into the reader's manifest, where the gateway reads them.

Retrieval is the gateway's own by default (`GatewaySearch`): the paragraphs are ingested into a
throwaway embedded Qdrant through `Retriever`, chunked as the gateway chunks them, and searched
hybrid (dense + BM25, fused), the top similarity being the best chunk's cosine, as
`server/rag/service.py` computes it. A threshold fitted on another retrieval does not hold its
rate behind the gateway: stop 30's was fitted on dense search over whole paragraphs, reached
0.097 there and let 0.25 of the holdout's unanswerable questions through. `ParagraphSearch`
(dense over whole paragraphs) stays for comparison.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from eval.answerability import auroc, fit_monotone_logistic, rates_at, threshold_for_rate
from grounding.answerability import question_coverage
from grounding.policy import FEATURES, best_evidence, signals
from grounding.reader.reader import Reader
from ragdock.contracts.reader import ReaderDecision, SignalAuroc, read_reader_manifest
from retrieval.dense import Embedder
from training.reader.squad import Article

TENANT = "calibration"
COLLECTION = "calibration"


class SourceSearch(Protocol):
    """Retrieval for calibration: a question's source texts, best first, and the top cosine."""

    description: str

    def __call__(self, article: Article, question: str) -> tuple[list[str], float | None]: ...


class ParagraphSearch:
    """Dense cosine over one article's whole paragraphs (not what the gateway does)."""

    description = "dense cosine (all-MiniLM-L6-v2) over the article's paragraphs"

    def __init__(self, embedder: Embedder, *, top_k: int) -> None:
        self.embedder = embedder
        self.top_k = top_k
        self._vectors: dict[str, np.ndarray] = {}

    def __call__(self, article: Article, question: str) -> tuple[list[str], float | None]:
        if article.title not in self._vectors:
            embedded = self.embedder.embed_documents(list(article.paragraphs))
            self._vectors[article.title] = np.asarray(embedded)
        query = np.asarray(self.embedder.embed_query(question)).reshape(-1)
        similarity = self._vectors[article.title] @ query
        order = [int(i) for i in np.argsort(-similarity)[: self.top_k]]
        return [article.paragraphs[i] for i in order], float(similarity[order[0]])


class GatewaySearch:
    """The gateway's retrieval over every calibration article's paragraphs in one collection:
    the real `Retriever` on a throwaway embedded Qdrant, hybrid search over chunks.

    Use as a context manager (the store lives in a temporary directory).
    """

    description = (
        "the gateway's: hybrid (dense all-MiniLM-L6-v2 + BM25, fused) over chunks of every "
        "calibration article's paragraphs, ingested through Retriever into embedded Qdrant"
    )

    def __init__(self, embedder: Embedder, articles: Sequence[Article], *, top_k: int) -> None:
        from retrieval.factory import open_retriever
        from retrieval.types import Document

        self.top_k = top_k
        self._dir = tempfile.TemporaryDirectory(prefix="ragdock-calibrate-")
        self.retriever = open_retriever(Path(self._dir.name), embedder=embedder)
        self.retriever.create_collection(COLLECTION, tenant=TENANT)
        documents = [
            Document(
                doc_id=f"{article.title}#{number}",
                text=paragraph,
                title=article.title,
                content_type="text/plain",
            )
            for article in articles
            for number, paragraph in enumerate(article.paragraphs)
        ]
        self.retriever.ingest(COLLECTION, TENANT, documents)

    def __call__(self, article: Article, question: str) -> tuple[list[str], float | None]:
        chunks = self.retriever.search(COLLECTION, TENANT, question, top_k=self.top_k)
        similarities = [c.similarity for c in chunks if c.similarity is not None]
        return [c.text for c in chunks], (max(similarities) if similarities else None)

    def __enter__(self) -> GatewaySearch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.retriever.close()
        self._dir.cleanup()


def holds_answer(answers: Sequence[str], sources: Sequence[str]) -> bool:
    """Whether a gold answer's text appears in a source (case and spacing aside)."""
    texts = [" ".join(s.lower().split()) for s in sources]
    wanted = [" ".join(a.lower().split()) for a in answers if a.strip()]
    return any(answer in text for answer in wanted for text in texts)


def reading_rows(
    reader: Reader,
    search: SourceSearch,
    articles: Sequence[Article],
    *,
    advance: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per question: the policy's signals, whether the sources hold the answer, and the
    reader's best span with its source."""
    rows = []
    for article in articles:
        for question in article.questions:
            sources, top_similarity = search(article, question.text)
            evidence = best_evidence(reader.evidence(question.text, sources))
            row: dict[str, Any] = signals(
                evidence,
                top_similarity=top_similarity,
                question_coverage=question_coverage(question.text, sources),
            )
            gold = [text for text, _ in question.answers]
            row.update(
                question=question.text,
                article=article.title,
                answerable=question.answerable and holds_answer(gold, sources),
                squad_answerable=question.answerable,
                span=evidence.text if evidence else "",
                span_source=evidence.source if evidence else None,
                gold=gold,
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
    retrieval: str,
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
        retrieval=retrieval,
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
    retrieval: str = "gateway",
) -> tuple[ReaderDecision, list[dict[str, Any]]]:
    """Fit the decision on `articles` and write it into the reader's manifest.

    Args:
        retrieval: `gateway` (hybrid over chunks, as served) or `paragraphs` (dense over whole
            paragraphs).

    Returns:
        The decision and the rows it was fitted on.
    """
    reader = reader or Reader.load(reader_dir)
    if retrieval == "paragraphs":
        search: SourceSearch = ParagraphSearch(embedder, top_k=top_k)
        rows = reading_rows(reader, search, articles, advance=advance)
    elif retrieval == "gateway":
        with GatewaySearch(embedder, articles, top_k=top_k) as search:
            rows = reading_rows(reader, search, articles, advance=advance)
    else:
        raise ValueError(f"retrieval must be gateway or paragraphs, not {retrieval!r}")
    decision = fit_decision(
        rows,
        target_hallucination=target_hallucination,
        articles=[a.title for a in articles],
        top_k=top_k,
        retrieval=search.description,
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
