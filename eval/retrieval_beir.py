"""Retrieval-only evaluation on a BEIR dataset: ingest the corpus into a temporary store
through the real `Retriever`, search every judged query, score dense, sparse and hybrid.

A document is `title` + `text` (the chunk's index text carries the title); documents longer
than one chunk are split, and a document ranks at its best chunk.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eval.beir import BeirDataset, load_beir
from eval.embed_cache import CachedEmbedder
from eval.metrics.retrieval import dedupe, evaluate_run
from retrieval.chunking import ChunkingConfig
from retrieval.dense import MiniLMEmbedder
from retrieval.ranking import FusionConfig
from retrieval.service import DEFAULT_FUSION, Retriever
from retrieval.sparse import Bm25Encoder, EdgeBm25Encoder, SparseEncoder
from retrieval.store import EdgeStore
from retrieval.types import Document, SearchMode

COLLECTION = "beir"
TENANT = "eval"
DEPTH = 100  # documents ranked per query (recall@100)


@dataclass
class BeirReport:
    """Metrics per configuration label, plus what produced them."""

    dataset: str
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "dataset": self.dataset,
            "metrics": self.metrics,
            "settings": self.settings,
            "timings_s": self.timings,
        }


def sparse_encoder(name: str, avg_len: float, k1: float = 1.2, b: float = 0.75) -> SparseEncoder:
    """`edge` (qdrant-edge's Bm25, Snowball stemmer), `ours` (light stemmer), `ours-nostem`.

    Raises:
        ValueError: for another name.
    """
    if name == "ours":
        return Bm25Encoder(avg_len=avg_len, k1=k1, b=b)
    if name == "ours-nostem":
        return Bm25Encoder(avg_len=avg_len, k1=k1, b=b, stem=False)
    if name == "edge":
        return EdgeBm25Encoder(avg_len=avg_len, k1=k1, b=b)
    raise ValueError(f"unknown sparse encoder {name!r}: use ours, ours-nostem or edge")


def rank_documents(
    retriever: Retriever, queries: dict[str, str], mode: SearchMode, fusion: FusionConfig | None
) -> dict[str, list[str]]:
    """Doc-level rankings for every query (chunks folded to their document's best rank)."""
    run: dict[str, list[str]] = {}
    for qid, text in queries.items():
        hits = retriever.search(COLLECTION, TENANT, text, top_k=DEPTH * 2, mode=mode, fusion=fusion)
        run[qid] = dedupe([hit.doc_id for hit in hits])[:DEPTH]
    return run


def reference_fusions() -> list[tuple[str, FusionConfig]]:
    """The default fusion and two RRF references, scored in every normal run."""
    return [
        ("hybrid (default: dbsf)", DEFAULT_FUSION),
        ("hybrid rrf k=10 w=1/1", FusionConfig("rrf", 10, 1.0, 1.0, 100)),
        ("hybrid rrf k=60 w=1/1", FusionConfig("rrf", 60, 1.0, 1.0, 100)),
    ]


def default_sweep() -> list[tuple[str, FusionConfig]]:
    """The fusion settings compared when choosing the default."""
    grid: list[tuple[str, FusionConfig]] = [("dbsf", FusionConfig(method="dbsf", prefetch=100))]
    for k in (2, 10, 30, 60):
        for dense_w, sparse_w in ((1.0, 1.0), (1.0, 1.5), (1.5, 1.0)):
            for prefetch in (50, 100):
                label = f"rrf k={k} w={dense_w:g}/{sparse_w:g} p={prefetch}"
                grid.append((label, FusionConfig("rrf", k, dense_w, sparse_w, prefetch)))
    return grid


def evaluate_beir(
    beir_dir: Path,
    *,
    split: str = "test",
    sparse: str = "edge",
    avg_len: float = 100.0,
    k1: float = 1.2,
    b: float = 0.75,
    chunking: ChunkingConfig = ChunkingConfig(),
    fusions: Sequence[tuple[str, FusionConfig]] = (("hybrid", DEFAULT_FUSION),),
    cache_dir: Path | None = None,
    max_queries: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> BeirReport:
    """Ingest a BEIR corpus into a temporary embedded store and score every mode.

    Args:
        beir_dir: the dataset folder (read in place).
        split: qrels split.
        sparse: sparse encoder name (see `sparse_encoder`).
        avg_len: BM25's assumed average document length.
        k1: BM25 term-frequency saturation.
        b: BM25 length normalization.
        chunking: chunk budget and overlap.
        fusions: labelled hybrid settings to score (dense and sparse are scored once).
        cache_dir: embedding cache directory (outside the repository), or None.
        max_queries: score only the first N judged queries (quick runs).
        progress: called with (chunks written, documents total) during ingestion.

    Returns:
        The report.
    """
    data: BeirDataset = load_beir(beir_dir, split)
    queries = dict(list(data.queries.items())[:max_queries]) if max_queries else data.queries
    qrels = {qid: data.qrels[qid] for qid in queries}
    embedder = CachedEmbedder(MiniLMEmbedder(), cache_dir)
    report = BeirReport(dataset=str(beir_dir))
    report.settings = {
        "split": split,
        "sparse": sparse,
        "avg_len": avg_len,
        "k1": k1,
        "b": b,
        "queries": len(queries),
        "documents": len(data.corpus),
        "max_tokens": chunking.max_tokens,
        "overlap_tokens": chunking.overlap_tokens,
    }
    with tempfile.TemporaryDirectory(prefix="ragdock-beir-") as work:
        retriever = Retriever(
            EdgeStore(Path(work) / "qdrant"),
            embedder,
            sparse_encoder(sparse, avg_len, k1, b),
            Path(work) / "catalog",
            chunking=chunking,
        )
        try:
            retriever.create_collection(COLLECTION)
            docs = (
                Document(d.doc_id, d.text, title=d.title, content_type="text/plain")
                for d in data.corpus
            )
            started = time.perf_counter()
            ingest = retriever.ingest(
                COLLECTION,
                TENANT,
                docs,
                progress=((lambda n: progress(n, len(data.corpus))) if progress else None),
            )
            report.timings["ingest"] = time.perf_counter() - started
            report.settings["chunks"] = ingest.chunks
            embedder.save()
            for mode in (SearchMode.DENSE, SearchMode.SPARSE):
                started = time.perf_counter()
                run = rank_documents(retriever, queries, mode, None)
                report.timings[mode.value] = time.perf_counter() - started
                report.metrics[mode.value] = evaluate_run(run, qrels)
            for label, fusion in fusions:
                started = time.perf_counter()
                run = rank_documents(retriever, queries, SearchMode.HYBRID, fusion)
                report.timings[label] = time.perf_counter() - started
                report.metrics[label] = evaluate_run(run, qrels)
            embedder.save()
        finally:
            retriever.close()
    return report


def render_table(report: BeirReport) -> Any:
    """The report as a rich Table (one row per configuration)."""
    from rich.table import Table

    columns = ["ndcg@10", "mrr@10", "recall@1", "recall@5", "recall@10", "recall@100"]
    table = Table(title=f"Retrieval on {report.dataset} ({report.settings.get('queries')} queries)")
    table.add_column("config")
    for column in columns:
        table.add_column(column, justify="right")
    for label, metrics in report.metrics.items():
        table.add_row(label, *(f"{metrics.get(c, 0.0):.4f}" for c in columns))
    return table
