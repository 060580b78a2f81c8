"""Ingestion throughput end to end (extract, chunk, embed, BM25, upsert, catalog commit)
divided by the embedder's raw encode throughput on the same chunk texts.

Raw and pipeline runs alternate (raw, pipeline, raw, pipeline, ...) so both see the same
machine load; the table reports medians and their ratio. The target is >= 0.9: the model is
the bottleneck and everything else should hide in its shadow.

The catalog commits go to the control plane: `--control sqlite` (embedded, the default),
`postgres` (a throwaway local PostgreSQL server) or both, alternating within each rep.

Run: python -m eval.perf.ingest_throughput --beir DIR [--docs 400] [--reps 3]
         [--control sqlite,postgres]
Without --beir, synthetic prose paragraphs are used.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ragdock.controlplane import open_control_plane
from ragdock.controlplane.throwaway import throwaway_database
from retrieval.chunking import chunk_document
from retrieval.dense import MiniLMEmbedder
from retrieval.extract import extract_text
from retrieval.service import Retriever
from retrieval.sparse import EdgeBm25Encoder
from retrieval.store import EdgeStore
from retrieval.types import Document

_WORDS = (
    "cell",
    "protein",
    "expression",
    "tumour",
    "patients",
    "study",
    "increased",
    "levels",
    "mice",
    "gene",
    "analysis",
)


def corpus(beir: Path | None, count: int) -> list[Document]:
    """The first `count` BEIR documents (title + text), or synthetic prose."""
    if beir is not None:
        from eval.beir import load_beir

        docs = load_beir(beir).corpus[:count]
        return [Document(d.doc_id, d.text, title=d.title, content_type="text/plain") for d in docs]
    rng = np.random.default_rng(0)
    return [
        Document(
            f"d{i}",
            " ".join(rng.choice(_WORDS, size=int(rng.integers(80, 260)))) + ".",
            title=f"Synthetic {i}",
            content_type="text/plain",
        )
        for i in range(count)
    ]


def chunk_texts(docs: Sequence[Document], embedder: MiniLMEmbedder) -> list[str]:
    """The texts the pipeline will embed (the chunks' index texts)."""
    now = datetime.now(UTC)
    texts: list[str] = []
    for doc in docs:
        body, markdown = extract_text(doc.text, doc.content_type)
        chunks = chunk_document(
            doc, body, embedder.count_tokens, version="v", now=now, markdown=markdown
        )
        texts += [c.index_text for c in chunks]
    return texts


def main(argv: Sequence[str] | None = None) -> None:
    """Print the throughput table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--beir", type=Path, default=None)
    parser.add_argument("--docs", type=int, default=400)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--control", default="sqlite", help="sqlite, postgres or both (a,b)")
    args = parser.parse_args(argv)
    controls = args.control.split(",")
    embedder = MiniLMEmbedder()
    docs = corpus(args.beir, args.docs)
    texts = chunk_texts(docs, embedder)
    embedder.embed_documents(texts[:64])  # load and warm the model outside the timings
    raw: list[float] = []
    pipeline: dict[str, list[float]] = {control: [] for control in controls}
    with ExitStack() as servers:
        urls = {
            c: servers.enter_context(throwaway_database()) if c == "postgres" else None
            for c in controls
        }
        for rep in range(args.reps):
            started = time.perf_counter()
            embedder.embed_documents(texts)
            raw.append(len(texts) / (time.perf_counter() - started))
            for control in controls:
                with _retriever(embedder, urls[control]) as retriever:
                    retriever.create_collection("bench")
                    started = time.perf_counter()
                    report = retriever.ingest("bench", f"t{rep}", docs)
                    pipeline[control].append(report.chunks / (time.perf_counter() - started))
                assert report.chunks == len(texts)

    from rich.console import Console

    from eval.perf.bench import print_results, results_table

    table = results_table(
        f"Ingestion throughput: {len(docs)} docs, {len(texts)} chunks, "
        f"{args.reps} alternating reps",
        ("run", "chunks/s (median)", "all reps"),
    )
    table.add_row("raw encode", f"{statistics.median(raw):.1f}", ", ".join(f"{v:.1f}" for v in raw))
    for control, values in pipeline.items():
        table.add_row(
            f"pipeline ({control})",
            f"{statistics.median(values):.1f}",
            ", ".join(f"{v:.1f}" for v in values),
        )
        ratio = statistics.median(values) / statistics.median(raw)
        table.add_row(
            f"ratio ({control} / raw)",
            f"{ratio:.3f}",
            ", ".join(f"{p / r:.3f}" for p, r in zip(values, raw, strict=True)),
        )
    print_results(Console(), table)


@contextmanager
def _retriever(embedder: MiniLMEmbedder, database_url: str | None) -> Iterator[Retriever]:
    """A fresh store and catalog (a fresh database schema on PostgreSQL: a new tenant and
    collection name per rep would do, but a clean one keeps the reps alike)."""
    with tempfile.TemporaryDirectory(prefix="ragdock-ingest-") as work:
        control = open_control_plane(database_url, Path(work))
        retriever = Retriever(
            EdgeStore(Path(work) / "qdrant"),
            embedder,
            EdgeBm25Encoder(),
            Path(work) / "catalog",
            control=control,
            owns_control=True,
        )
        try:
            yield retriever
        finally:
            if database_url:
                retriever.catalog.drop("bench")
            retriever.close()


if __name__ == "__main__":
    main()
