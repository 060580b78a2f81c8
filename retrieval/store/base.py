"""The `VectorStore` protocol: what the retriever needs from a Qdrant engine, and nothing more.

Every point carries a `ragdock.contracts.chunk_payload.ChunkPayload`; `Scope` is the only way to
select points, and it always names a tenant, so no code path can read across tenants.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ragdock.contracts.chunk_payload import (
    DOC_FIELD,
    GEN_FIELD,
    META_FIELD,
    REV_FIELD,
    SEQ_FIELD,
    TENANT_FIELD,
    UPDATED_FIELD,
)
from retrieval.ranking import FusionConfig
from retrieval.sparse import SparseVec
from retrieval.types import MetadataValue

DENSE = "dense"
SPARSE = "bm25"


@dataclass(frozen=True)
class Scope:
    """A selection of points: always one tenant, optionally narrowed.

    Attributes:
        tenant: the tenant whose points are visible (required).
        hidden_revs: revisions to exclude (staged or retired versions; see `freshness`).
        generation: when set, points written under another generation of the collection are
            excluded.
        max_seq: when set, points staged after the reader's snapshot are excluded.
        doc_ids: only these documents.
        revs: only these revisions.
        metadata: exact matches on `meta.<field>`.
        updated_from: inclusive lower bound (RFC 3339 UTC).
        updated_before: exclusive upper bound (RFC 3339 UTC).
    """

    tenant: str
    hidden_revs: frozenset[str] = frozenset()
    generation: str | None = None
    max_seq: int | None = None
    doc_ids: tuple[str, ...] | None = None
    revs: tuple[str, ...] | None = None
    metadata: Mapping[str, MetadataValue] = field(default_factory=dict)
    updated_from: str | None = None
    updated_before: str | None = None

    def __post_init__(self) -> None:
        if not self.tenant:
            raise ValueError("a Scope needs a tenant: reads are never cross-tenant")

    def corpus(self) -> Scope:
        """The tenant's visible corpus, over which sparse IDF is computed.

        IDF ignores the caller's narrowing filters (stable scores), but never counts another
        tenant's points nor staged/retired versions.
        """
        return Scope(
            tenant=self.tenant,
            hidden_revs=self.hidden_revs,
            generation=self.generation,
            max_seq=self.max_seq,
        )


@dataclass(frozen=True)
class StoredPoint:
    """A point to upsert: id, both vectors, payload."""

    point_id: str
    dense: Sequence[float]
    sparse: SparseVec
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class Hit:
    """A point read back: id, score (0 for scrolls), payload, and its dense vector when the query
    asked for it (`StoreQuery.with_dense`)."""

    point_id: str
    score: float
    payload: Mapping[str, Any]
    dense: Sequence[float] | None = None


@dataclass(frozen=True)
class StoreQuery:
    """One search. Both vectors given: hybrid (fused in the engine); one given: that one alone.

    Attributes:
        scope: which points are eligible.
        limit: results wanted.
        dense: query embedding.
        sparse: query sparse vector.
        fusion: how hybrid candidates are fused.
        with_dense: return each hit's dense vector (normalized, as the cosine index stores it),
            so a fused search also tells each hit's similarity without a second query.
    """

    scope: Scope
    limit: int
    dense: Sequence[float] | None = None
    sparse: SparseVec | None = None
    fusion: FusionConfig = field(default_factory=FusionConfig)
    with_dense: bool = False


def dense_of(vector: Any) -> list[float] | None:
    """The dense vector among a returned point's named vectors (None when not asked for)."""
    value = vector.get(DENSE) if isinstance(vector, dict) else None
    return [float(x) for x in value] if isinstance(value, list) else None


class VectorStore(Protocol):
    """A Qdrant engine holding collections with a "dense" (cosine) and "bm25" (IDF) vector."""

    def create_collection(self, name: str, dim: int) -> None:
        """Create a collection (idempotent) with payload indexes."""
        ...

    def list_collections(self) -> list[str]:
        """Collection names, sorted."""
        ...

    def collection_exists(self, name: str) -> bool:
        """Whether the collection exists."""
        ...

    def delete_collection(self, name: str) -> None:
        """Drop a collection and its data (no error when absent)."""
        ...

    def upsert(self, name: str, points: Sequence[StoredPoint]) -> None:
        """Insert or replace points."""
        ...

    def delete_revs(self, name: str, tenant: str, revs: Sequence[str]) -> None:
        """Delete every point of these revisions of the tenant."""
        ...

    def query(self, name: str, request: StoreQuery) -> list[Hit]:
        """Run a dense, sparse or hybrid search."""
        ...

    def scroll(self, name: str, scope: Scope, limit: int) -> list[Hit]:
        """Up to `limit` points of the scope, in id order."""
        ...

    def count(self, name: str, scope: Scope) -> int:
        """Points in the scope."""
        ...

    def close(self) -> None:
        """Release the engine (flush to disk where it has one)."""
        ...


__all__ = [
    "DENSE",
    "DOC_FIELD",
    "GEN_FIELD",
    "META_FIELD",
    "REV_FIELD",
    "SEQ_FIELD",
    "SPARSE",
    "TENANT_FIELD",
    "UPDATED_FIELD",
    "Hit",
    "Scope",
    "StoreQuery",
    "StoredPoint",
    "VectorStore",
    "dense_of",
]
