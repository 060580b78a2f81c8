"""Synthetic chunks for benchmarks: unit dense vectors and Zipf-distributed BM25 terms, so
sparse posting lists have realistic lengths (a few very common terms, a long tail); a store
filled with them (`fill`), and query encoders that hand out precomputed vectors (`FixedDense`,
`FixedSparse`), so a search is timed without the model."""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator, Sequence

import numpy as np

from retrieval.dense import FloatMatrix
from retrieval.sparse import SparseVec
from retrieval.store import StoredPoint, VectorStore

VOCABULARY = 30_000
COLLECTION = "bench"
TENANT = "t1"


def _terms(rng: np.random.Generator, count: int) -> np.ndarray:
    # Zipf over the vocabulary (exponent 1.1), folded back into range.
    terms: np.ndarray = (rng.zipf(1.1, size=count) - 1) % VOCABULARY
    return terms


def sparse_vector(rng: np.random.Generator, terms: int) -> SparseVec:
    """A BM25-like document vector with about `terms` distinct terms."""
    ids, counts = np.unique(_terms(rng, terms), return_counts=True)
    weights = counts * 2.2 / (counts + 1.2)
    return SparseVec(tuple(int(i) for i in ids), tuple(float(w) for w in weights))


def query_vector(rng: np.random.Generator, terms: int = 6) -> SparseVec:
    """A query: 1.0 per distinct term, terms drawn from the same distribution."""
    ids = np.unique(_terms(rng, terms))
    return SparseVec(tuple(int(i) for i in ids), tuple(1.0 for _ in ids))


def unit_vectors(rng: np.random.Generator, count: int, dim: int) -> np.ndarray:
    """Random unit vectors (exact search costs the same whatever their distribution)."""
    vectors = rng.standard_normal((count, dim)).astype(np.float32)
    normalized: np.ndarray = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return normalized


def synthetic_points(
    count: int, tenant: str, *, dim: int = 384, seed: int = 0, batch: int = 2048
) -> Iterator[list[StoredPoint]]:
    """Batches of points with the retriever's payload layout.

    Args:
        count: points in all.
        tenant: their tenant.
        dim: dense dimension.
        seed: random seed (same seed, same points).
        batch: points per yielded batch.

    Yields:
        Lists of points.
    """
    rng = np.random.default_rng(seed)
    for start in range(0, count, batch):
        size = min(batch, count - start)
        dense = unit_vectors(rng, size, dim)
        yield [
            StoredPoint(
                point_id=f"00000000-0000-4000-8000-{start + i:012d}",
                dense=dense[i].tolist(),
                sparse=sparse_vector(rng, 80),
                payload={
                    "tenant_id": tenant,
                    "doc_id": f"d{start + i}",
                    "rev": "r0",
                    "chunk_id": f"c{start + i}",
                    "index": 0,
                    "title": "synthetic",
                    "uri": "",
                    "updated_at": "2024-01-01T00:00:00.000000Z",
                    "text": "synthetic chunk",
                    "heading_path": [],
                    "meta": {},
                },
            )
            for i in range(size)
        ]


def fill(store: VectorStore, size: int) -> float:
    """Create `COLLECTION` and upsert `size` synthetic points of `TENANT`; returns seconds taken."""
    store.create_collection(COLLECTION, 384)
    started = time.perf_counter()
    for batch in synthetic_points(size, TENANT):
        store.upsert(COLLECTION, batch)
    return time.perf_counter() - started


class FixedDense:
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


class FixedSparse:
    """Synthetic-vocabulary query vectors (real words would match no synthetic posting)."""

    def __init__(self, vectors: list[SparseVec]) -> None:
        self.vectors = vectors

    def embed_document(self, text: str) -> SparseVec:
        return self.embed_query(text)

    def embed_query(self, text: str) -> SparseVec:
        return self.vectors[zlib.crc32(text.encode()) % len(self.vectors)]


def fixed_encoders(seed: int = 1, count: int = 64) -> tuple[FixedDense, FixedSparse]:
    """Query encoders over `count` precomputed random query vectors each (same seed, same ones)."""
    rng = np.random.default_rng(seed)
    dense = FixedDense(unit_vectors(rng, count, FixedDense.dim))
    return dense, FixedSparse([query_vector(rng) for _ in range(count)])
