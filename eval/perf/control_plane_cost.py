"""What the shared control plane costs a search: the snapshot lookup, side by side in one run.

One embedded Qdrant collection of synthetic points (query vectors precomputed, so the model's
time does not drown the difference) is searched through four retrievers that share the store
and differ only in where a read's snapshot (generation, watermark, hidden revisions) comes from:

- in process: a fixed snapshot held in memory, no lookup (what the per-process catalog cost);
- SQLite, every query: the embedded control plane, read on each search;
- PostgreSQL, every query: a local PostgreSQL server, read on each search;
- PostgreSQL, cached: the default, a snapshot reused for 0.2 s.

Queries rotate over the four so all see the same machine load. `--hidden` revisions are staged
first, so the lookup returns a realistic hidden set, which every variant then filters out.

Run: python -m eval.perf.control_plane_cost [--points 5000] [--queries 300] [--hidden 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from eval.perf.bench import nearest_rank, print_results, results_table, timed
from eval.perf.synthetic import COLLECTION, TENANT, fill, fixed_encoders
from ragdock.controlplane import ControlPlane, open_control_plane
from ragdock.controlplane.throwaway import throwaway_database
from retrieval.catalog import Catalog, Snapshot
from retrieval.freshness import Snapshots
from retrieval.service import Retriever
from retrieval.store import EdgeStore


class _InProcess(Snapshots):
    """`Snapshots` with the same snapshot every time from memory: no lookup."""

    def __init__(self, inner: Snapshots, snapshot: Snapshot) -> None:
        super().__init__(inner._catalog, ttl_s=0.0, read_budget_s=inner._budget)
        self._fixed = snapshot

    def get(self, name: str) -> tuple[float, Snapshot | None]:
        return time.monotonic(), self._fixed


def main(argv: Sequence[str] | None = None) -> None:
    """Print the table and the ratios to the in-process baseline."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=5000)
    parser.add_argument("--queries", type=int, default=300, help="per variant")
    parser.add_argument("--hidden", type=int, default=20, help="staged revisions to hide")
    args = parser.parse_args(argv)
    dense, sparse = fixed_encoders()
    with tempfile.TemporaryDirectory(prefix="ragdock-cp-") as work, throwaway_database() as url:
        store = EdgeStore(Path(work) / "edge")
        fill(store, args.points)
        planes: dict[str, ControlPlane] = {
            "sqlite": open_control_plane(None, Path(work)),
            "postgres": open_control_plane(url, Path(work)),
        }

        staged: set[str] = set()

        def retriever(plane: str, ttl: float) -> Retriever:
            made = Retriever(
                store, dense, sparse, Path(work) / "catalog", control=planes[plane],
                snapshot_ttl_s=ttl,
            )  # fmt: skip
            generation = made.catalog.ensure(COLLECTION)
            if plane not in staged:
                staged.add(plane)
                hidden = [f"d{i}" for i in range(args.hidden)]
                made.catalog.stage(COLLECTION, generation, TENANT, hidden)
            return made

        variants = {
            "SQLite, every query": retriever("sqlite", 0.0),
            "PostgreSQL, every query": retriever("postgres", 0.0),
            "PostgreSQL, cached 0.2 s (default)": retriever("postgres", 0.2),
        }
        baseline = retriever("sqlite", 0.0)
        snapshot = baseline.catalog.snapshot(COLLECTION)
        assert snapshot is not None and len(snapshot.hidden) == args.hidden
        baseline.snapshots = _InProcess(baseline.snapshots, snapshot)
        variants = {"in process (no lookup)": baseline, **variants}
        for made in variants.values():  # warm every path once
            made.search(COLLECTION, TENANT, "warm-up")
        timings: dict[str, list[float]] = {name: [] for name in variants}
        for i in range(args.queries):
            for name, made in variants.items():
                timings[name].append(
                    1000 * timed(partial(made.search, COLLECTION, TENANT, f"q{i}"))
                )
        lookups: dict[str, list[float]] = {}
        for plane in planes:
            lookup = partial(variants_catalog(variants, plane).snapshot, COLLECTION)
            lookups[plane] = [1000 * timed(lookup) for _ in range(args.queries)]
        for opened in planes.values():
            opened.close()
        store.close()
    print_table(timings, lookups, args)


def variants_catalog(variants: dict[str, Retriever], plane: str) -> Catalog:
    name = "SQLite, every query" if plane == "sqlite" else "PostgreSQL, every query"
    return variants[name].catalog


def print_table(
    timings: dict[str, list[float]], lookups: dict[str, list[float]], args: argparse.Namespace
) -> None:
    from rich.console import Console

    table = results_table(
        f"Search with the snapshot lookup: {args.points:,} points, "
        f"{args.hidden} hidden revisions, {args.queries} queries per variant (ms)",
        ("snapshot from", "p50", "p95", "p50 / in process"),
    )
    base = statistics.median(timings["in process (no lookup)"])
    for name, values in timings.items():
        median = statistics.median(values)
        table.add_row(
            name, f"{median:.3f}", f"{nearest_rank(values, 0.95):.3f}", f"{median / base:.3f}"
        )
    alone = [
        f"the lookup alone ({plane}): p50 {statistics.median(values):.3f} ms, "
        f"p95 {nearest_rank(values, 0.95):.3f} ms"
        for plane, values in lookups.items()
    ]
    notes = ["query vectors precomputed: no model, no dtype"]
    print_results(Console(), table, notes=notes, summary=alone)


if __name__ == "__main__":
    main()
