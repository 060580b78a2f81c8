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
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from eval.perf.bench import nearest_rank, print_results, results_table, timed
from eval.perf.synthetic import COLLECTION, TENANT, fill, fixed_encoders
from retrieval.dense import MiniLMEmbedder
from retrieval.service import Retriever
from retrieval.store import EdgeStore, QdrantClientStore, VectorStore

QUERY_TEXTS = [
    "how do statins affect cardiovascular risk",
    "role of p53 in tumour suppression",
    "vitamin D deficiency and bone density",
    "microRNA regulation of gene expression",
    "effects of exercise on insulin sensitivity",
    "antibiotic resistance in hospital infections",
]


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
    dense, sparse = fixed_encoders()
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
            where = (COLLECTION, TENANT)
            excl: dict[str, list[float]] = {n: [] for n in stores}
            incl: dict[str, list[float]] = {n: [] for n in stores}
            for i in range(max(budget.values())):
                for name in stores:  # alternate: both stores see the same load
                    if i >= budget[name]:
                        continue
                    text = f"q{i}"
                    question = QUERY_TEXTS[i % len(QUERY_TEXTS)]
                    excl[name].append(1000 * timed(partial(fast[name].search, *where, text)))
                    incl[name].append(1000 * timed(partial(real[name].search, *where, question)))
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
                            nearest_rank(values, 0.95),
                            fills[name],
                        )
                    )
            for store in stores.values():
                store.close()
    print_table(rows)


def print_table(rows: list[tuple[str, int, str, int, float, float, float]]) -> None:
    """Print rows with the edge/client p50 ratio per size."""
    from rich.console import Console

    table = results_table(
        "Hybrid query latency (default fusion, top 5, tenant filter), side by side",
        ("store", "chunks", "query", "n", "p50 ms", "p95 ms", "upsert s"),
    )
    for name, size, label, n, p50, p95, fill_s in rows:
        table.add_row(name, f"{size:,}", label, str(n), f"{p50:.2f}", f"{p95:.2f}", f"{fill_s:.1f}")
    ratios = []
    for size in sorted({r[1] for r in rows}):
        medians = {(r[0], r[2]): r[4] for r in rows if r[1] == size}
        edge = medians[("edge", "excl. embedding")]
        ratio = medians[("qdrant-client local", "excl. embedding")] / edge
        ratios.append(f"{size:,} chunks: qdrant-client local p50 / edge p50 = {ratio:.1f}x")
    print_results(Console(), table, summary=ratios)


if __name__ == "__main__":
    main()
