"""Atomic document replacement: simulated crashes between steps, and a reader that queries
during many swaps and must always see exactly one whole version. (Across several replicas:
`test_replicas.py`.)"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any, cast

import pytest

from retrieval.dense import MiniLMEmbedder
from retrieval.freshness import SnapshotTooOldError
from retrieval.service import Retriever
from retrieval.sparse import Bm25Encoder
from retrieval.store import EdgeStore, Hit, QdrantClientStore, Scope, StoreQuery, VectorStore
from retrieval.types import Document, SearchFilter, SearchMode

C = "kb"
T = "tenant"
_GEN = re.compile(r"generation (\d+)")
# Short enough for a test to wait them out; the defaults are 60 s and 30 s.
LEASE_S, GRACE_S = 0.6, 0.4


class Crash(BaseException):
    """A simulated crash: not an `Exception`, so no cleanup handler runs, as in a real one."""


def versioned(generation: int) -> Document:
    """A document of three sections (three chunks), each stamped with its generation."""
    body = "\n\n".join(
        f"# Part {part}\nThe warehouse inventory report, part {part}, generation {generation}."
        for part in ("one", "two", "three")
    )
    return Document("report", body, title="Inventory")


def make_store(kind: str, root: Path) -> VectorStore:
    return (
        EdgeStore(root / "edge") if kind == "edge" else QdrantClientStore.connect(str(root / "qc"))
    )


class SlowQueries:
    """Delegates to a store, but each query starts late: a reader then holds its visibility
    snapshot across the writer's steps, the case the grace period exists for."""

    def __init__(self, inner: VectorStore, delay: float) -> None:
        self._inner, self._delay = inner, delay

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def query(self, name: str, request: StoreQuery) -> list[Hit]:
        time.sleep(self._delay)
        return self._inner.query(name, request)


def open_retriever(
    kind: str, root: Path, embedder: MiniLMEmbedder, query_delay: float = 0.0, **options: Any
) -> Retriever:
    store = make_store(kind, root)
    if query_delay:
        store = cast(VectorStore, SlowQueries(store, query_delay))
    r = Retriever(store, embedder, Bm25Encoder(), root / "catalog", **options)
    r.create_collection(C)
    return r


def settle(r: Retriever) -> None:
    """Wait out a dead writer's lease and then the grace, collecting after each."""
    time.sleep(LEASE_S)
    r.collect(C)
    time.sleep(GRACE_S)
    r.collect(C)


def generations(r: Retriever, mode: SearchMode = SearchMode.HYBRID) -> list[int]:
    hits = r.search(
        C,
        T,
        "warehouse inventory report generation",
        mode=mode,
        top_k=10,
        filter=SearchFilter(doc_ids=("report",)),
    )
    return [int(_GEN.findall(h.text)[0]) for h in hits]


def test_a_read_that_outlives_its_budget_is_retried_on_a_fresh_snapshot(
    tmp_path: Path, embedder: MiniLMEmbedder
) -> None:
    # Budget = grace / 2 = 0.05 s; each query takes 0.2 s, so no read can be trusted.
    r = open_retriever("edge", tmp_path, embedder, query_delay=0.2, grace_s=0.1)
    r.ingest(C, T, [versioned(1)])
    with pytest.raises(SnapshotTooOldError, match="read budget"):
        generations(r)
    r.close()


@pytest.mark.parametrize("kind", ["edge", "client"])
@pytest.mark.parametrize("step", ["staged", "written", "committed"])
def test_crash_between_steps(
    kind: str, step: str, tmp_path: Path, embedder: MiniLMEmbedder
) -> None:
    r = open_retriever(kind, tmp_path, embedder, lease_s=LEASE_S, grace_s=GRACE_S)
    r.ingest(C, T, [versioned(1)])
    assert generations(r) == [1, 1, 1]

    def crash(at: str) -> None:
        if at == step:
            raise Crash(f"simulated crash after {at}")

    r.fault = crash
    with pytest.raises(Crash):
        r.ingest(C, T, [versioned(2)])
    # Still in the crashed process: readers see one whole version, never a mix.
    assert generations(r) == ([2, 2, 2] if step == "committed" else [1, 1, 1])
    r.close()

    reopened = open_retriever(kind, tmp_path, embedder, lease_s=LEASE_S, grace_s=GRACE_S)
    expected = 2 if step == "committed" else 1
    for mode in SearchMode:
        assert generations(reopened, mode) == [expected] * 3
    settle(reopened)
    assert reopened.store.count(C, Scope(tenant=T)) == 3  # the other version's points are gone
    info = reopened.get_document(C, T, "report")
    assert info is not None and [_GEN.findall(c.text)[0] for c in info[1]] == [str(expected)] * 3
    assert [d.chunk_count for d in reopened.list_documents(C, T).documents] == [3]
    # And the collection keeps working: the interrupted version can be ingested again.
    reopened.ingest(C, T, [versioned(3)])
    assert generations(reopened) == [3, 3, 3]
    reopened.close()


@pytest.mark.parametrize("kind", ["edge", "client"])
def test_reader_never_sees_a_mix_or_nothing_during_swaps(
    kind: str, tmp_path: Path, embedder: MiniLMEmbedder
) -> None:
    r = open_retriever(kind, tmp_path, embedder, query_delay=0.02, grace_s=1.0)
    r.ingest(C, T, [versioned(0)])
    swaps = 15
    done = threading.Event()
    seen: list[list[int]] = []
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not done.is_set():
                seen.append(generations(r))
        except BaseException as exc:  # surfaced below, not swallowed
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for generation in range(1, swaps + 1):
            r.ingest(C, T, [versioned(generation)])
            time.sleep(0.01)  # let the reader interleave between swaps too
    finally:
        done.set()
        thread.join(30)
    assert not errors
    bad = [gens for gens in seen if len(gens) != 3 or len(set(gens)) != 1]
    assert bad == [], f"{len(bad)} of {len(seen)} reads saw a mix or nothing: {bad[:3]}"
    assert len(seen) >= swaps  # the reader really ran during the swaps
    assert len({gens[0] for gens in seen}) > 2  # and saw several versions go by
    assert generations(r) == [swaps] * 3
    time.sleep(1.0)
    r.collect(C)
    assert r.store.count(C, Scope(tenant=T)) == 3
    r.close()
