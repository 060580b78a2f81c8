"""A dense embedder without weights: feature-hashed term counts, L2-normalized.

It has the real embedder's dimension, window and interface (`retrieval.dense.Embedder`, plus
`max_tokens`), is deterministic across processes (blake2b, not Python's salted `hash`) and loads
nothing, so a test that only needs *an* embedder (the gateway's routes, the store's plumbing, the
chunker's budget) runs in milliseconds. Texts that share terms score higher than texts that share
none, which is all such tests may assume: anything that needs real semantic similarity (a
paraphrase found without shared words, a calibrated score threshold) stays on `MiniLMEmbedder`.
`tests/retrieval/test_embedder_contract.py` holds both to the same contract.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence

import numpy as np

from retrieval.dense import FloatMatrix, MiniLMEmbedder
from retrieval.sparse import STOPWORDS, light_stem

# Words and single punctuation marks, as BERT's pre-tokenizer splits (before word pieces).
_PIECE = re.compile(r"\w+|[^\w\s]")


def _pieces(text: str) -> list[str]:
    """Lowercased, accents dropped (the real tokenizer's normalizer), split like BERT."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    folded = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _PIECE.findall(folded)


def _bucket(term: str, dim: int) -> tuple[int, float]:
    value = int.from_bytes(hashlib.blake2b(term.encode(), digest_size=8).digest(), "little")
    # A second, independent bit picks the sign, so colliding terms cancel rather than add up.
    return value % dim, 1.0 if (value >> 40) & 1 else -1.0


class HashingEmbedder:
    """Feature hashing of stemmed content words into `MiniLMEmbedder.dim` signed buckets.

    Args:
        dim: vector dimension; the real embedder's by default, so collections made with either
            have the same shape.
        max_tokens: the window; as the real model, only the first `max_tokens - 2` tokens (two
            are its [CLS] and [SEP]) reach the vector, while `count_tokens` counts them all.
    """

    def __init__(self, dim: int = MiniLMEmbedder.dim, max_tokens: int = 256) -> None:
        self.dim = dim
        self.max_tokens = max_tokens

    def _vector(self, text: str) -> FloatMatrix:
        pieces = _pieces(text)[: self.max_tokens - 2]
        words = [p for p in pieces if p.isalnum()]
        terms = [light_stem(w) for w in words if w not in STOPWORDS] or words or pieces or [""]
        vector = np.zeros(self.dim, dtype=np.float32)
        for term in terms:
            index, sign = _bucket(term, self.dim)
            vector[index] += sign
        norm = float(np.linalg.norm(vector))
        if norm == 0.0:  # every term cancelled out: any fixed unit vector will do
            vector[_bucket("", self.dim)[0]] = 1.0
            return vector
        normalized: FloatMatrix = vector / norm
        return normalized

    def embed_documents(self, texts: Sequence[str]) -> FloatMatrix:
        """float32 array (len(texts), dim), each row of unit length."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._vector(t) for t in texts])

    def embed_query(self, text: str) -> FloatMatrix:
        """One unit vector of shape (dim,)."""
        return self._vector(text)

    def count_tokens(self, text: str) -> int:
        """Words and punctuation marks of `text` (the real one counts word pieces: at least as
        many), without truncation."""
        return len(_pieces(text))
