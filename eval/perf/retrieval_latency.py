"""Hybrid query latency, EdgeStore vs qdrant-client local mode, side by side in one run.

For each size (SciFact-like ~5k chunks, and 100k), both stores get the same synthetic points;
queries alternate between the stores so both see the same machine load. "excl. embedding"
times `Retriever.search` with the query vectors precomputed (tenant filter, freshness filter,
sparse encoding, fusion in the engine, payload decoding all included); "incl. embedding" adds
the real MiniLM query encoding. qdrant-client local mode is slow at 100k (~1 s/query), so its
query count is bounded separately.

Run: python -m eval.perf.retrieval_latency [--sizes 5000,100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np

from eval.perf.synthetic import query_vector, synthetic_points, unit_vectors
from retrieval.dense import FloatMatrix, MiniLMEmbedder
from retrieval.service import Retriever
from retrieval.sparse import SparseVec
from retrieval.store import EdgeStore, QdrantClientStore, VectorStore

C = "bench"
TENANT = "t1"
QUERY_TEXTS = [
    "how do statins affect cardiovascular risk",
    "role of p53 in tumour suppression",
    "vitamin D deficiency and bone density",
    "microRNA regulation of gene expression",
    "effects of exercise on insulin sensitivity",
    "antibiotic resistance in hospital infections",
]


class _FixedDense:
    """Precomputed query vectors: `search` then costs everything but the model."""

    dim = 384

    def __init__(self, vectors: FloatMatrix) -> None:
        self.vectors = vectors

    def embed_documents(self, texts: Sequence[str]) -> FloatMatrix:
        return np.stack([self.embed_query(t) for t in texts])

    def embed_query(self, text: str) -> FloatMatrix:
        vector: FloatMatrix = self.vectors[zlib.crc32(text.encode()) % len(self.vectors)]
        return vector

    def count_tokens(self, text: str) -> int:
        return len(text.split())


class _FixedSparse:
    """Synthetic-vocabulary query vectors (real words would match no synthetic posting)."""

    def __init__(self, vectors: list[SparseVec]) -> None:
        self.vectors = vectors

    def embed_document(self, text: str) -> SparseVec:
        return self.embed_query(text)

    def embed_query(self, text: str) -> SparseVec:
        return self.vectors[zlib.crc32(text.encode()) % len(self.vectors)]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def fill(store: VectorStore, size: int) -> float:
    """Create the collection and upsert `size` synthetic points; returns seconds taken."""
    store.create_collection(C, 384)
    started = time.perf_counter()
    for batch in synthetic_points(size, TENANT):
        store.upsert(C, batch)
    return time.perf_counter() - started


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def main(argv: Sequence[str] | None = None) -> None:
    """Print the latency table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="5000,100000")
    parser.add_argument("--queries", type=int, default=200, help="edge queries per size")
    parser.add_argument(
        "--client-queries", type=int, default=200, help="qdrant-client queries at <= 10k points"
    )
    parser.add_argument(
        "--client-queries-large",
        type=int,
        default=8,
        help="qdrant-client queries above 10k points (about 1 s each)",
    )
    args = parser.parse_args(argv)
    rng = np.random.default_rng(1)
    dense = _FixedDense(unit_vectors(rng, 64, 384))
    sparse = _FixedSparse([query_vector(rng) for _ in range(64)])
    model = MiniLMEmbedder()
    model.embed_query("warm up")
    rows: list[tuple[str, int, str, int, float, float, float]] = []
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="ragdock-lat-") as work:
            stores: dict[str, VectorStore] = {
                "edge": EdgeStore(Path(work) / "edge"),
                # In memory: local mode persists every upsert to SQLite otherwise, minutes at 100k.
                "qdrant-client local": QdrantClientStore.connect(":memory:"),
            }
            fills = {name: fill(store, size) for name, store in stores.items()}
            # Same stores, two query paths: precomputed vectors, or the real MiniLM model.
            fast = {
                n: Retriever(s, dense, sparse, Path(work) / f"cat-{n[:4]}")
                for n, s in stores.items()
            }
            real = {
                n: Retriever(s, model, sparse, Path(work) / f"cat-{n[:4]}")
                for n, s in stores.items()
            }
            budget = {
                "edge": args.queries,
                "qdrant-client local": args.client_queries
                if size <= 10_000
                else args.client_queries_large,
            }
            excl: dict[str, list[float]] = {n: [] for n in stores}
            incl: dict[str, list[float]] = {n: [] for n in stores}
            for i in range(max(budget.values())):
                for name in stores:  # alternate: both stores see the same load
                    if i >= budget[name]:
                        continue
                    text = f"q{i}"
                    question = QUERY_TEXTS[i % len(QUERY_TEXTS)]
                    excl[name].append(timed(partial(fast[name].search, C, TENANT, text)))
                    incl[name].append(timed(partial(real[name].search, C, TENANT, question)))
            for name in stores:
                for label, values in (
                    ("excl. embedding", excl[name]),
                    ("incl. embedding", incl[name]),
                ):
                    rows.append(
                        (
                            name,
                            size,
                            label,
                            len(values),
                            statistics.median(values),
                            percentile(values, 95),
                            fills[name],
                        )
                    )
            for store in stores.values():
                store.close()
    print_table(rows)


def print_table(rows: list[tuple[str, int, str, int, float, float, float]]) -> None:
    """Print rows with the edge/client p50 ratio per size."""
    from rich.console import Console
    from rich.table import Table

    from eval.perf.machine import machine_line

    table = Table(title="Hybrid query latency (default fusion, top 5, tenant filter), side by side")
    for column in ("store", "chunks", "query", "n", "p50 ms", "p95 ms", "upsert s"):
        table.add_column(column, justify="right")
    for name, size, label, n, p50, p95, fill_s in rows:
        table.add_row(name, f"{size:,}", label, str(n), f"{p50:.2f}", f"{p95:.2f}", f"{fill_s:.1f}")
    console = Console()
    console.print(machine_line())
    console.print(table)
    for size in sorted({r[1] for r in rows}):
        medians = {(r[0], r[2]): r[4] for r in rows if r[1] == size}
        edge = medians[("edge", "excl. embedding")]
        ratio = medians[("qdrant-client local", "excl. embedding")] / edge
        console.print(f"{size:,} chunks: qdrant-client local p50 / edge p50 = {ratio:.1f}x")


if __name__ == "__main__":
    main()
