"""Property: no query of tenant A ever returns a chunk of tenant B, whatever the documents, the
shared document ids, the query (including text copied from B's documents), the search mode or the
filter; and no document read of A shows B's documents.

Real embedder, real embedded Qdrant engine; one collection that keeps every example's documents,
so each example searches among all the other tenants' data so far."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retrieval.dense import MiniLMEmbedder
from retrieval.factory import open_retriever
from retrieval.service import Retriever
from retrieval.types import Document, SearchFilter, SearchMode

COLLECTION = "shared"
WORDS = [
    "gateway",
    "port",
    "engine",
    "adapter",
    "tenant",
    "invoice",
    "refund",
    "policy",
    "kernel",
    "cache",
    "vector",
    "shard",
    "replica",
    "latency",
    "token",
    "budget",
    "contract",
    "secret",
    "salary",
    "merger",
    "launch",
    "roadmap",
    "incident",
]
TENANTS = ("a", "b", "c")

_example = itertools.count()

documents = st.lists(
    st.tuples(
        st.sampled_from(TENANTS),
        st.sampled_from(["doc-1", "doc-2", "doc-3", "doc-4"]),  # ids shared across tenants
        st.lists(st.sampled_from(WORDS), min_size=3, max_size=25),
    ),
    min_size=1,
    max_size=8,
)
searches = st.lists(
    st.tuples(
        st.sampled_from(TENANTS),
        st.one_of(
            st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join),
            st.just(None),  # None: the query is the text of another tenant's document
        ),
        st.sampled_from(list(SearchMode)),
        st.booleans(),  # filter on doc ids (including ones only other tenants have)
    ),
    min_size=1,
    max_size=5,
)


@pytest.fixture(scope="module")
def retriever(
    tmp_path_factory: pytest.TempPathFactory, embedder: MiniLMEmbedder
) -> Iterator[Retriever]:
    retriever = open_retriever(Path(tmp_path_factory.mktemp("isolation")), embedder=embedder)
    retriever.create_collection(COLLECTION)
    yield retriever
    retriever.close()


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(docs=documents, queries=searches)
def test_no_query_of_one_tenant_returns_another_tenants_chunk(
    retriever: Retriever,
    docs: list[tuple[str, str, list[str]]],
    queries: list[tuple[str, str | None, SearchMode, bool]],
) -> None:
    # Fresh tenant names per example: what earlier examples wrote belongs to other tenants.
    run = next(_example)
    owned: dict[str, dict[str, str]] = {t: {} for t in TENANTS}
    for tenant, doc_id, words in docs:
        text = " ".join(words) + f" owner {tenant}{run}"
        owned[tenant][doc_id] = text  # the last version of a doc id wins, as in ingest
        retriever.ingest(COLLECTION, f"{tenant}{run}", [Document(doc_id, text)])

    for tenant, query, mode, by_doc_ids in queries:
        theirs = [t for who, d in owned.items() if who != tenant for t in d.values()]
        text = query if query is not None else (theirs[-1] if theirs else "gateway")
        flt = SearchFilter(doc_ids=("doc-1", "doc-2", "doc-3", "doc-4")) if by_doc_ids else None
        hits = retriever.search(COLLECTION, f"{tenant}{run}", text, top_k=10, mode=mode, filter=flt)
        mine = owned[tenant]
        for hit in hits:
            assert hit.doc_id in mine, f"{tenant} got {hit.doc_id}, which it never wrote"
            assert hit.text.strip() == mine[hit.doc_id].strip(), "a chunk of another tenant's doc"

    for tenant in TENANTS:
        listed = retriever.list_documents(COLLECTION, f"{tenant}{run}", limit=100).documents
        assert {d.doc_id for d in listed} == set(owned[tenant])
        for doc_id in ("doc-1", "doc-2", "doc-3", "doc-4"):
            found = retriever.get_document(COLLECTION, f"{tenant}{run}", doc_id)
            if doc_id not in owned[tenant]:
                assert found is None
            else:
                assert found is not None
                assert [c.text.strip() for c in found[1]] == [owned[tenant][doc_id].strip()]
