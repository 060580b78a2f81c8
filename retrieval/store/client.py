"""`QdrantClientStore`: a Qdrant server (or cluster) by URL through qdrant-client.

qdrant-client's local mode (`location=":memory:"` or `path=...`) speaks the same API, which is
how the contract tests exercise this code path without a server.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from retrieval.store.base import (
    DENSE,
    DOC_FIELD,
    GEN_FIELD,
    META_FIELD,
    REV_FIELD,
    SEQ_FIELD,
    SPARSE,
    TENANT_FIELD,
    UPDATED_FIELD,
    Hit,
    Scope,
    StoredPoint,
    StoreQuery,
    dense_of,
)
from retrieval.store.edge import check_collection_name


def client_filter(scope: Scope) -> Any:
    """Translate a `Scope` into a qdrant-client `models.Filter`."""
    from qdrant_client import models as m

    must: list[Any] = [m.FieldCondition(key=TENANT_FIELD, match=m.MatchValue(value=scope.tenant))]
    if scope.doc_ids is not None:
        must.append(m.FieldCondition(key=DOC_FIELD, match=m.MatchAny(any=list(scope.doc_ids))))
    if scope.revs is not None:
        must.append(m.FieldCondition(key=REV_FIELD, match=m.MatchAny(any=list(scope.revs))))
    for key, value in sorted(scope.metadata.items()):
        path = f"{META_FIELD}.{key}"
        if isinstance(value, float):
            must.append(m.FieldCondition(key=path, range=m.Range(gte=value, lte=value)))
        else:
            must.append(m.FieldCondition(key=path, match=m.MatchValue(value=value)))
    if scope.updated_from or scope.updated_before:
        # The model is typed for datetime but accepts RFC 3339 strings, as the server does.
        window = m.DatetimeRange(gte=scope.updated_from, lt=scope.updated_before)
        must.append(m.FieldCondition(key=UPDATED_FIELD, range=window))
    must_not: list[Any] = []
    if scope.hidden_revs:
        hidden = m.MatchAny(any=sorted(scope.hidden_revs))
        must_not.append(m.FieldCondition(key=REV_FIELD, match=hidden))
    # Exclusions, so points written before the control plane (without the fields) stay visible.
    if scope.generation is not None:
        other = m.MatchExcept(**{"except": [scope.generation]})
        must_not.append(m.FieldCondition(key=GEN_FIELD, match=other))
    if scope.max_seq is not None:
        later = m.Range(gt=float(scope.max_seq))
        must_not.append(m.FieldCondition(key=SEQ_FIELD, range=later))
    return m.Filter(must=must, must_not=must_not or None)


class QdrantClientStore:
    """Collections on a Qdrant server, or in qdrant-client's local mode for tests.

    Args:
        client: a `qdrant_client.QdrantClient` (built by the caller: URL, API key, timeouts).
        serialize: run one call at a time. Needed for local mode, which is not thread-safe
            (a query concurrent with an upsert failed with numpy shape errors in the
            freshness test); a server client is safe to share.
    """

    def __init__(self, client: Any, *, serialize: bool = False) -> None:
        self._client = client
        self._lock: AbstractContextManager[Any] = threading.Lock() if serialize else nullcontext()

    @classmethod
    def connect(
        cls, location: str, *, api_key: str | None = None, timeout_s: float = 10.0
    ) -> QdrantClientStore:
        """Build from a URL (`http://...`), a local path, or `":memory:"`.

        Args:
            location: server URL, local-mode directory, or ":memory:".
            api_key: the server's API key, if any.
            timeout_s: longest wait for a server's answer: a hung Qdrant must turn into an
                error the gateway can report, never into a request that waits forever.

        Returns:
            The store.
        """
        from qdrant_client import QdrantClient

        if location == ":memory:":
            return cls(QdrantClient(location=":memory:"), serialize=True)
        if location.startswith(("http://", "https://")):
            return cls(QdrantClient(url=location, api_key=api_key, timeout=math.ceil(timeout_s)))
        return cls(QdrantClient(path=location), serialize=True)

    def create_collection(self, name: str, dim: int) -> None:
        """Create the collection with both vectors and the payload indexes (idempotent)."""
        from qdrant_client import models as m

        if self.collection_exists(name):
            return
        with self._lock:
            self._client.create_collection(
                collection_name=name,
                vectors_config={DENSE: m.VectorParams(size=dim, distance=m.Distance.COSINE)},
                sparse_vectors_config={SPARSE: m.SparseVectorParams(modifier=m.Modifier.IDF)},
            )
        indexes: list[tuple[str, Any]] = [
            (TENANT_FIELD, m.KeywordIndexParams(type=m.KeywordIndexType.KEYWORD, is_tenant=True)),
            (DOC_FIELD, m.PayloadSchemaType.KEYWORD),
            (REV_FIELD, m.PayloadSchemaType.KEYWORD),
            (GEN_FIELD, m.PayloadSchemaType.KEYWORD),
            (SEQ_FIELD, m.PayloadSchemaType.INTEGER),
            (UPDATED_FIELD, m.PayloadSchemaType.DATETIME),
        ]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # local mode warns that indexes are no-ops there
            for field_name, schema in indexes:
                with self._lock:
                    self._client.create_payload_index(
                        name, field_name=field_name, field_schema=schema
                    )

    def list_collections(self) -> list[str]:
        """Collection names, sorted."""
        with self._lock:
            return sorted(c.name for c in self._client.get_collections().collections)

    def collection_exists(self, name: str) -> bool:
        """Whether the collection exists."""
        with self._lock:
            return bool(self._client.collection_exists(check_collection_name(name)))

    def delete_collection(self, name: str) -> None:
        """Drop the collection."""
        with self._lock:
            self._client.delete_collection(check_collection_name(name))

    def upsert(self, name: str, points: Sequence[StoredPoint]) -> None:
        """Insert or replace points, waiting until they are applied."""
        from qdrant_client import models as m

        if not points:
            return
        batch = [
            m.PointStruct(
                id=point.point_id,
                vector={
                    DENSE: list(point.dense),
                    SPARSE: m.SparseVector(
                        indices=list(point.sparse.indices), values=list(point.sparse.values)
                    ),
                },
                payload=dict(point.payload),
            )
            for point in points
        ]
        with self._lock:
            self._client.upsert(collection_name=name, points=batch, wait=True)

    def delete_revs(self, name: str, tenant: str, revs: Sequence[str]) -> None:
        """Delete the points of these revisions of `tenant`."""
        from qdrant_client import models as m

        if revs:
            selector = m.FilterSelector(
                filter=client_filter(Scope(tenant=tenant, revs=tuple(revs)))
            )
            with self._lock:
                self._client.delete(collection_name=name, points_selector=selector, wait=True)

    def query(self, name: str, request: StoreQuery) -> list[Hit]:
        """Dense, sparse or hybrid (fused by Qdrant) search."""
        from qdrant_client import models as m

        flt = client_filter(request.scope)
        idf = m.SearchParams(idf=m.IdfCorpusParams(corpus=client_filter(request.scope.corpus())))
        branches: list[tuple[Any, str, Any]] = []
        if request.dense is not None:
            branches.append((list(request.dense), DENSE, None))
        if request.sparse is not None:
            vector = m.SparseVector(
                indices=list(request.sparse.indices), values=list(request.sparse.values)
            )
            branches.append((vector, SPARSE, idf))
        if not branches:
            raise ValueError("a query needs a dense or a sparse vector")
        vectors: Any = [DENSE] if request.with_dense else False
        if len(branches) == 1:
            query, using, params = branches[0]
            with self._lock:
                response = self._client.query_points(
                    collection_name=name,
                    query=query,
                    using=using,
                    query_filter=flt,
                    search_params=params,
                    limit=request.limit,
                    with_payload=True,
                    with_vectors=vectors,
                )
        else:
            fusion = request.fusion
            fuse: Any = (
                m.FusionQuery(fusion=m.Fusion.DBSF)
                if fusion.method == "dbsf"
                else m.RrfQuery(
                    rrf=m.Rrf(k=fusion.k, weights=[fusion.dense_weight, fusion.sparse_weight])
                )
            )
            prefetch = [
                m.Prefetch(
                    query=query, using=using, filter=flt, params=params, limit=fusion.prefetch
                )
                for query, using, params in branches
            ]
            with self._lock:
                response = self._client.query_points(
                    collection_name=name,
                    prefetch=prefetch,
                    query=fuse,
                    limit=request.limit,
                    with_payload=True,
                    with_vectors=vectors,
                )
        return [
            Hit(str(p.id), float(p.score), p.payload or {}, dense_of(p.vector))
            for p in response.points
        ]

    def scroll(self, name: str, scope: Scope, limit: int) -> list[Hit]:
        """Up to `limit` points of the scope."""
        with self._lock:
            records, _ = self._client.scroll(
                collection_name=name,
                scroll_filter=client_filter(scope),
                limit=limit,
                with_payload=True,
            )
        return [Hit(str(r.id), 0.0, r.payload or {}) for r in records]

    def count(self, name: str, scope: Scope) -> int:
        """Exact count of the scope's points."""
        with self._lock:
            result = self._client.count(
                collection_name=name, count_filter=client_filter(scope), exact=True
            )
        return int(result.count)

    def close(self) -> None:
        """Close the client."""
        with self._lock:
            self._client.close()
