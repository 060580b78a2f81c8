"""Fixtures: the real all-MiniLM-L6-v2 (from its PyPI package), loaded once per session."""

from __future__ import annotations

import os

import pytest

from retrieval.dense import MiniLMEmbedder

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder()


@pytest.fixture(scope="session")
def minilm_counter(embedder: MiniLMEmbedder) -> MiniLMEmbedder:
    return embedder
