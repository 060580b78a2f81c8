"""An embedder wrapper that remembers vectors on disk, so repeated eval runs (fusion sweeps,
sparse variants) embed the corpus once. The cache lives wherever the caller says (never in
the repository) and is keyed by the text's hash, so it is correct for any corpus.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from retrieval.dense import Embedder, FloatMatrix


class CachedEmbedder:
    """Wraps an `Embedder`; `save()` writes new vectors to `cache_dir/<name>.npz`.

    Args:
        inner: the real embedder.
        cache_dir: directory for the cache file, or None to cache in memory only.
        name: cache file stem (one per model).
    """

    def __init__(self, inner: Embedder, cache_dir: Path | None, name: str = "minilm") -> None:
        self._inner = inner
        self._path = cache_dir / f"{name}.npz" if cache_dir else None
        self._vectors: dict[str, FloatMatrix] = {}
        self._dirty = False
        if self._path and self._path.exists():
            data = np.load(self._path)
            self._vectors = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self._inner.dim

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha1(text.encode("utf-8")).hexdigest()

    def embed_documents(self, texts: Sequence[str]) -> FloatMatrix:
        """Embed what is not cached, return all rows in order."""
        keys = [self._key(t) for t in texts]
        missing = sorted(
            {k: t for k, t in zip(keys, texts, strict=True) if k not in self._vectors}.items()
        )
        if missing:
            fresh = self._inner.embed_documents([t for _, t in missing])
            self._vectors.update({k: fresh[i] for i, (k, _) in enumerate(missing)})
            self._dirty = True
        if not keys:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._vectors[k] for k in keys]).astype(np.float32)

    def embed_query(self, text: str) -> FloatMatrix:
        """Embed (or recall) one query."""
        vector: FloatMatrix = self.embed_documents([text])[0]
        return vector

    def count_tokens(self, text: str) -> int:
        """The inner embedder's token count."""
        return self._inner.count_tokens(text)

    def save(self) -> None:
        """Write the cache file if anything was added."""
        if self._path and self._dirty:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            keys = np.array(list(self._vectors))
            np.savez(self._path, keys=keys, vectors=np.stack(list(self._vectors.values())))
            self._dirty = False
