"""Vector stores: one protocol, two Qdrant engines (embedded edge, server via qdrant-client)."""

from retrieval.store.base import Hit, Scope, StoredPoint, StoreQuery, VectorStore
from retrieval.store.client import QdrantClientStore
from retrieval.store.edge import EdgeStore, StoreInUseError, check_collection_name

__all__ = [
    "EdgeStore",
    "Hit",
    "QdrantClientStore",
    "Scope",
    "StoreInUseError",
    "StoreQuery",
    "StoredPoint",
    "VectorStore",
    "check_collection_name",
]
