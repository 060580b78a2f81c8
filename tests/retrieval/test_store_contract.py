"""One contract for both stores (embedded edge, qdrant-client): the same behaviour, and the
same ranked results on the same data (congruence), through the real `Retriever`, the real
MiniLM embedder and the real BM25 encoder."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ragdock.controlplane import open_control_plane
from retrieval.dense import MiniLMEmbedder
from retrieval.ranking import FusionConfig, RecencyDecay
from retrieval.service import Retriever
from retrieval.sparse import Bm25Encoder, EdgeBm25Encoder
from retrieval.store import EdgeStore, QdrantClientStore, Scope, VectorStore
from retrieval.types import Document, ScoredChunk, SearchFilter, SearchMode

C = "kb"
DOCS_T1 = [
    Document(
        "photo",
        "Photosynthesis converts light energy into chemical energy in plant chloroplasts.",
        title="Photosynthesis",
        metadata={"lang": "en", "topic": "bio"},
        updated_at=datetime(2024, 1, 10, tzinfo=UTC),
    ),
    Document(
        "volcano",
        "A volcano erupts when magma rises through the crust and escapes.",
        title="Volcanoes",
        metadata={"lang": "en", "topic": "geo"},
        updated_at=datetime(2024, 3, 5, tzinfo=UTC),
    ),
    Document(
        "asyncio",
        "Python asyncio runs coroutines on an event loop with await.",
        title="Asyncio",
        metadata={"lang": "en", "topic": "code"},
        updated_at=datetime(2024, 6, 1, tzinfo=UTC),
    ),
    Document(
        "cuisine",
        "La cuisine française utilise du beurre et des herbes fraîches.",
        title="Cuisine",
        metadata={"lang": "fr", "topic": "food"},
        updated_at=datetime(2023, 11, 20, tzinfo=UTC),
    ),
    Document(
        "part",
        "The replacement part number XJ9000 fits the rear axle assembly.",
        title="Parts",
        metadata={"lang": "en", "topic": "parts"},
        updated_at=datetime(2024, 2, 1, tzinfo=UTC),
    ),
    Document(
        "manual",
        "# Manual\n\n## Specs\n\n| part | torque |\n|---|---|\n| bolt | 40 Nm |"
        "\n\n## Care\n\nClean the chain weekly with a dry cloth.",
        title="Bike manual",
        metadata={"lang": "en", "topic": "bike"},
        updated_at=datetime(2024, 4, 1, tzinfo=UTC),
    ),
]
DOCS_T2 = [
    Document(
        "photo",
        "Tenant two notes: photosynthesis happens in chloroplasts of algae too.",
        title="Algae",
        updated_at=datetime(2024, 1, 1, tzinfo=UTC),
    ),
    Document("secret", "Tenant two secret: the vault code is 4417.", title="Vault"),
]
QUERIES = [
    "how do plants turn light into energy",
    "XJ9000",
    "volcano magma eruption",
    "event loop coroutines",
    "bolt torque",
    "chloroplasts",
]


GRACE_S = 0.2  # retired points are collected this long after their commit


def make_store(kind: str, root: Path) -> VectorStore:
    if kind == "edge":
        return EdgeStore(root / "edge")
    return QdrantClientStore.connect(str(root / "client"))


@pytest.fixture(params=["edge", "client"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def retriever(
    kind: str, control_plane_url: str, tmp_path: Path, embedder: MiniLMEmbedder
) -> Iterator[Retriever]:
    """Each store (embedded engine, qdrant-client) over each control plane (SQLite, PostgreSQL)."""
    control = open_control_plane(control_plane_url, tmp_path)
    r = Retriever(
        make_store(kind, tmp_path),
        embedder,
        Bm25Encoder(),
        tmp_path / "catalog",
        control=control,
        grace_s=GRACE_S,
    )
    r.create_collection(C)
    r.ingest(C, "t1", DOCS_T1)
    r.ingest(C, "t2", DOCS_T2)
    yield r
    r.close()
    control.close()


def collect_now(r: Retriever) -> None:
    """Wait out the grace period and collect retired points."""
    time.sleep(r.grace_s)
    r.collect(C)


def ids(hits: list[ScoredChunk]) -> list[str]:
    return [h.doc_id for h in hits]


def test_collections_lifecycle(retriever: Retriever) -> None:
    retriever.create_collection("other")
    retriever.create_collection("other")  # idempotent
    assert retriever.list_collections() == ["kb", "other"]
    retriever.delete_collection("other")
    assert retriever.list_collections() == ["kb"]
    with pytest.raises(KeyError):
        retriever.search("other", "t1", "x")
    with pytest.raises(ValueError, match="collection name"):
        retriever.create_collection("../escape")


@pytest.mark.parametrize("mode", list(SearchMode))
def test_each_mode_finds_the_obvious_document(retriever: Retriever, mode: SearchMode) -> None:
    assert ids(retriever.search(C, "t1", "volcano magma eruption", mode=mode))[0] == "volcano"
    hit = retriever.search(C, "t1", "volcano magma eruption", mode=mode, top_k=1)[0]
    assert hit.title == "Volcanoes" and "magma" in hit.text
    assert hit.updated_at == "2024-03-05T00:00:00.000000Z"


@pytest.mark.parametrize("mode", [SearchMode.HYBRID, SearchMode.SPARSE])
def test_every_hit_carries_its_dense_similarity_from_the_same_query(
    retriever: Retriever, mode: SearchMode
) -> None:
    query = "volcano magma eruption"
    dense = {h.chunk_id: h.score for h in retriever.search(C, "t1", query, mode=SearchMode.DENSE)}
    hits = retriever.search(C, "t1", query, mode=mode)
    assert hits and all(h.similarity is not None for h in hits)
    for hit in hits:  # the cosine a dense search scores the same chunk with
        if hit.chunk_id in dense:
            assert hit.similarity == pytest.approx(dense[hit.chunk_id], abs=1e-4)


def test_sparse_matches_exact_rare_terms(retriever: Retriever) -> None:
    assert ids(retriever.search(C, "t1", "XJ9000", mode=SearchMode.SPARSE)) == ["part"]
    # Stopword-only queries have no sparse terms: nothing to match, and no error.
    assert retriever.search(C, "t1", "the of and", mode=SearchMode.SPARSE) == []


def test_sparse_scores_are_bm25_with_qdrant_idf(retriever: Retriever) -> None:
    # "xj9000" occurs in 1 of t1's 7 chunks; IDF is computed over the tenant's corpus only.
    [hit] = retriever.search(C, "t1", "XJ9000", mode=SearchMode.SPARSE)
    encoder = Bm25Encoder()
    doc = encoder.embed_document(
        "Parts\nThe replacement part number XJ9000 fits the rear axle assembly."
    )
    tf = dict(zip(doc.indices, doc.values, strict=True))[encoder.embed_query("XJ9000").indices[0]]
    chunks = retriever.store.count(C, Scope(tenant="t1"))
    idf = math.log(1 + (chunks - 1 + 0.5) / (1 + 0.5))
    assert hit.score == pytest.approx(idf * tf, rel=1e-4)


def test_tenant_isolation(retriever: Retriever) -> None:
    for mode in SearchMode:
        t1 = retriever.search(
            C, "t1", "photosynthesis chloroplasts vault code", mode=mode, top_k=20
        )
        assert "secret" not in ids(t1) and all("Tenant two" not in h.text for h in t1)
        t2 = retriever.search(C, "t2", "photosynthesis", mode=mode, top_k=20)
        assert set(ids(t2)) <= {"photo", "secret"} and all(
            h.title in ("Algae", "Vault") for h in t2
        )
        assert retriever.search(C, "nobody", "photosynthesis", mode=mode) == []
    assert [d.doc_id for d in retriever.list_documents(C, "t2").documents] == ["photo", "secret"]
    assert retriever.get_document(C, "t2", "volcano") is None
    with pytest.raises(ValueError, match="tenant"):
        retriever.search(C, "", "photosynthesis")


def test_metadata_doc_and_date_filters(retriever: Retriever) -> None:
    fr = retriever.search(C, "t1", "food", filter=SearchFilter(metadata={"lang": "fr"}))
    assert ids(fr) == ["cuisine"]
    only = retriever.search(
        C, "t1", "energy", top_k=10, filter=SearchFilter(doc_ids=("volcano", "asyncio"))
    )
    assert set(ids(only)) == {"volcano", "asyncio"}
    window = SearchFilter(
        updated_from=datetime(2024, 2, 1, tzinfo=UTC),
        updated_before=datetime(2024, 4, 1, tzinfo=UTC),
    )
    dated = retriever.search(C, "t1", "anything at all", top_k=10, filter=window)
    assert set(ids(dated)) == {"part", "volcano"}  # from is inclusive, before is exclusive


def test_min_score_and_recency(retriever: Retriever) -> None:
    hits = retriever.search(C, "t1", "volcano magma eruption", mode=SearchMode.DENSE, top_k=6)
    cut = retriever.search(
        C, "t1", "volcano magma eruption", mode=SearchMode.DENSE, top_k=6, min_score=hits[1].score
    )
    assert ids(cut) == ids(hits[:2])
    decayed = retriever.search(
        C,
        "t1",
        "volcano magma eruption",
        mode=SearchMode.DENSE,
        top_k=6,
        recency=RecencyDecay(half_life_days=1, floor=0.0),
    )
    assert all(h.score < 1e-6 for h in decayed)  # every doc here is months old


def test_delete_document(retriever: Retriever) -> None:
    assert retriever.delete_document(C, "t1", "volcano")
    assert not retriever.delete_document(C, "t1", "volcano")
    assert "volcano" not in ids(retriever.search(C, "t1", "volcano magma", top_k=10))
    collect_now(retriever)
    assert retriever.store.count(C, Scope(tenant="t1", doc_ids=("volcano",))) == 0
    assert retriever.get_document(C, "t2", "photo") is not None  # other tenant's same id kept
    assert "volcano" not in [d.doc_id for d in retriever.list_documents(C, "t1").documents]


def test_reingest_is_idempotent_and_replaces_changed_content(retriever: Retriever) -> None:
    again = retriever.ingest(C, "t1", DOCS_T1)
    assert (again.unchanged, again.chunks) == (len(DOCS_T1), 0)
    before = retriever.store.count(C, Scope(tenant="t1"))
    new = Document(
        "volcano", "Geysers spout hot water heated by geothermal activity.", title="Geysers"
    )
    report = retriever.ingest(C, "t1", [new])
    assert (report.replaced, report.added) == (1, 0)
    collect_now(retriever)
    assert retriever.store.count(C, Scope(tenant="t1")) == before  # old chunk gone, new one in
    info, chunks = retriever.get_document(C, "t1", "volcano") or (None, [])
    assert info is not None and info.title == "Geysers" and "Geysers" in chunks[0].text
    assert "volcano" not in ids(retriever.search(C, "t1", "magma", mode=SearchMode.SPARSE))


def test_documents_listing_paging_and_get(retriever: Retriever) -> None:
    first = retriever.list_documents(C, "t1", limit=4)
    rest = retriever.list_documents(C, "t1", limit=4, after=first.next_after)
    names = [d.doc_id for d in first.documents + rest.documents]
    assert names == sorted(d.doc_id for d in DOCS_T1) and rest.next_after is None
    info, chunks = retriever.get_document(C, "t1", "manual") or (None, [])
    assert info is not None and info.chunk_count == len(chunks) == 2
    assert [c.heading_path for c in chunks] == [("Manual", "Specs"), ("Manual", "Care")]
    assert "| bolt | 40 Nm |" in chunks[0].text


def _ranked(hits: list[ScoredChunk]) -> list[tuple[float, str]]:
    # Tied scores may come in either order from two engines: compare (score, id) sorted.
    return sorted((-round(h.score, 4), h.chunk_id) for h in hits)


@pytest.mark.parametrize(
    "fusion",
    [
        FusionConfig(),
        FusionConfig(method="rrf", k=60, dense_weight=1.0, sparse_weight=1.0, prefetch=20),
        FusionConfig(method="rrf", k=2, dense_weight=1.0, sparse_weight=2.0),
    ],
    ids=["default-dbsf", "rrf", "rrf-weighted"],
)
@pytest.mark.parametrize("sparse", ["ours", "edge-bm25"])
def test_congruence_between_stores(
    tmp_path: Path, embedder: MiniLMEmbedder, fusion: FusionConfig, sparse: str
) -> None:
    results: dict[str, list[list[tuple[float, str]]]] = {}
    for kind in ("edge", "client"):
        r = Retriever(
            make_store(kind, tmp_path / kind),
            embedder,
            Bm25Encoder() if sparse == "ours" else EdgeBm25Encoder(),
            tmp_path / kind / "catalog",
            fusion=fusion,
        )
        r.create_collection(C)
        r.ingest(C, "t1", DOCS_T1)
        r.ingest(C, "t2", DOCS_T2)
        runs = []
        for query in QUERIES:
            for mode in SearchMode:
                runs.append(_ranked(r.search(C, "t1", query, mode=mode, top_k=8)))
            runs.append(
                _ranked(
                    r.search(C, "t1", query, top_k=8, filter=SearchFilter(metadata={"lang": "en"}))
                )
            )
        results[kind] = runs
        r.close()
    assert results["edge"] == results["client"]
    assert any(len(run) > 3 for run in results["edge"])


class ReverseReranker:
    """A reranker that inverts the fused order, so its effect is unmistakable."""

    def rerank(self, query: str, chunks: Sequence[ScoredChunk]) -> list[ScoredChunk]:
        n = len(chunks)
        return [replace(c, score=float(i + 1) / n) for i, c in enumerate(chunks)][::-1]


def test_reranker_hook_reorders_candidates(retriever: Retriever) -> None:
    plain = retriever.search(C, "t1", "volcano magma eruption", top_k=24)
    retriever.reranker = ReverseReranker()
    try:
        reranked = retriever.search(C, "t1", "volcano magma eruption", top_k=len(plain))
    finally:
        retriever.reranker = None
    assert ids(reranked) == ids(plain)[::-1]
    assert ids(reranked)[-1] == "volcano"


def test_congruence_between_control_planes(
    tmp_path: Path, embedder: MiniLMEmbedder, postgres_admin_url: str
) -> None:
    """The same scenario over the embedded SQLite and a real PostgreSQL control plane gives the
    same catalog and the same results, to the chunk and the score."""
    from tests.postgres import fresh_database

    outcomes: dict[str, list[object]] = {}
    for backend, url in (("sqlite", None), ("postgres", fresh_database(postgres_admin_url))):
        work = tmp_path / backend
        control = open_control_plane(url, work)
        r = Retriever(
            make_store("edge", work), embedder, Bm25Encoder(), work / "catalog",
            control=control, grace_s=GRACE_S,
        )  # fmt: skip
        r.create_collection(C)
        seen: list[object] = [r.ingest(C, "t1", DOCS_T1), r.ingest(C, "t2", DOCS_T2)]
        changed = Document("volcano", "Geysers spout water heated underground.", title="Geysers")
        seen += [r.ingest(C, "t1", [changed]), r.ingest(C, "t1", DOCS_T1[:1])]
        seen.append(r.delete_document(C, "t2", DOCS_T2[0].doc_id))
        collect_now(r)
        for tenant in ("t1", "t2"):
            page = r.list_documents(C, tenant, limit=2)
            rest = r.list_documents(C, tenant, limit=50, after=page.next_after)
            seen.append([(d.doc_id, d.version, d.chunk_count) for d in page.documents])
            seen.append([(d.doc_id, d.version, d.chunk_count) for d in rest.documents])
            for query in QUERIES:
                for mode in SearchMode:
                    seen.append(_ranked(r.search(C, tenant, query, mode=mode, top_k=8)))
        found = r.get_document(C, "t1", "volcano")
        assert found is not None
        seen.append([c.text for c in found[1]])
        seen.append(r.store.count(C, Scope(tenant="t1")))
        outcomes[backend] = seen
        r.close()
        control.close()
    assert outcomes["sqlite"] == outcomes["postgres"]
