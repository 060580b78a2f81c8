"""BM25 as sparse vectors scored inside Qdrant.

Qdrant scores a sparse query by the dot product with each stored vector, and with the IDF
modifier multiplies each query term by idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5)) computed
over the stored points. So BM25 splits in two:
- documents store the saturated term frequency tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / L)),
  where L is an ASSUMED average length (the true one would change as the corpus changes and
  force re-encoding everything);
- queries send 1.0 per distinct term; Qdrant adds the IDF.
The sum over shared terms is then exactly Okapi BM25 (with L for the average length).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from retrieval.sparse.tokenize import tokenize

Tokenizer = Callable[[str], list[str]]


@dataclass(frozen=True)
class SparseVec:
    """Sparse vector: sorted distinct indices and their values."""

    indices: tuple[int, ...]
    values: tuple[float, ...]


def term_index(term: str) -> int:
    """Stable 31-bit index of a term (the same in every process, unlike `hash()`)."""
    digest = hashlib.blake2b(term.encode("utf-8"), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


def tf_weight(tf: int, doc_len: int, *, k1: float, b: float, avg_len: float) -> float:
    """BM25's saturated term frequency for one term of a document."""
    norm = k1 * (1.0 - b + b * doc_len / avg_len)
    return tf * (k1 + 1.0) / (tf + norm)


def _from_terms(weights: dict[int, float]) -> SparseVec:
    indices = tuple(sorted(weights))
    return SparseVec(indices, tuple(weights[index] for index in indices))


@dataclass(frozen=True)
class Bm25Encoder:
    """BM25 document and query encoder over one shared tokenizer.

    Attributes:
        k1: term-frequency saturation.
        b: length normalization.
        avg_len: assumed average document length in terms (after stopwords).
        stem: use the light stemmer in the default tokenizer.
    """

    k1: float = 1.2
    b: float = 0.75
    avg_len: float = 100.0
    stem: bool = True

    def terms(self, text: str) -> list[str]:
        """The tokenizer shared by documents and queries."""
        return tokenize(text, stem=self.stem)

    def embed_document(self, text: str) -> SparseVec:
        """Saturated term frequencies of a passage, keyed by stable term index."""
        terms = self.terms(text)
        weights: dict[int, float] = {}
        for term, tf in Counter(terms).items():
            index = term_index(term)
            # A (rare) hash collision merges two terms: add, as one term would be counted.
            weights[index] = weights.get(index, 0.0) + tf_weight(
                tf, len(terms), k1=self.k1, b=self.b, avg_len=self.avg_len
            )
        return _from_terms(weights)

    def embed_query(self, text: str) -> SparseVec:
        """1.0 per distinct query term; Qdrant's IDF modifier supplies the term weights."""
        return _from_terms({term_index(term): 1.0 for term in self.terms(text)})
