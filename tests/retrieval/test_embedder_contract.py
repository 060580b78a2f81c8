"""The `Embedder` contract, held by the real all-MiniLM-L6-v2 (full tier) and by the hashing
embedder the fast tier's gateway and store tests use (`tests.fakes.HashingEmbedder`): what the
retriever, the chunker and `/v1/embeddings` rely on, and nothing a fake could not honestly do
(no paraphrase without shared words, no calibrated score)."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.dense import Embedder, MiniLMEmbedder
from tests.fakes import HashingEmbedder

HOSTILE = [
    "",
    "   \n\t ",
    "!!! ??? ...",
    "東京は日本の首都です。",
    "émigré naïve café — façade",
    "🙂🙃 " * 20,
    "x" * 3000,
]
# (query, a passage that shares its words, a passage that shares none)
RELEVANCE = [
    ("vault code for Orion", "The vault code for Orion is 4417-KESTREL.", "Bananas are yellow."),
    (
        "Which port does the gateway listen on?",
        "The gateway listens on port 8000 by default.",
        "Photosynthesis happens in the chloroplasts of plant cells.",
    ),
    ("volcano magma eruption", "A volcano erupts when magma rises.", "Python runs coroutines."),
]
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"]


@pytest.fixture(
    params=[
        pytest.param("minilm", marks=pytest.mark.embedder),
        pytest.param("hashing"),
    ]
)
def any_embedder(request: pytest.FixtureRequest) -> Embedder:
    if request.param == "minilm":
        real: Embedder = request.getfixturevalue("embedder")
        return real
    return HashingEmbedder()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_the_dimension_is_the_real_embedders(any_embedder: Embedder) -> None:
    # Collections are created with `dim`: a fake of another size could not share a store.
    assert any_embedder.dim == MiniLMEmbedder.dim == 384
    assert any_embedder.embed_query("hello").shape == (384,)


def test_no_texts_is_an_empty_matrix(any_embedder: Embedder) -> None:
    empty = any_embedder.embed_documents([])
    assert empty.shape == (0, any_embedder.dim) and empty.dtype == np.float32


def test_every_row_is_a_finite_float32_unit_vector_whatever_the_text(
    any_embedder: Embedder,
) -> None:
    vectors = any_embedder.embed_documents([*HOSTILE, *WORDS])
    assert vectors.shape == (len(HOSTILE) + len(WORDS), any_embedder.dim)
    assert vectors.dtype == np.float32 and np.isfinite(vectors).all()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_a_text_gets_the_same_vector_alone_as_a_query_or_in_any_batch(
    any_embedder: Embedder,
) -> None:
    texts = [WORDS[0], " ".join(WORDS), "The vault code for Orion is 4417."]
    batch = any_embedder.embed_documents(texts)
    backwards = any_embedder.embed_documents(texts[::-1])[::-1]
    for i, text in enumerate(texts):
        alone = any_embedder.embed_query(text)
        assert alone.dtype == np.float32
        assert cosine(alone, batch[i]) > 0.999
        assert cosine(batch[i], backwards[i]) > 0.999
        assert cosine(alone, any_embedder.embed_query(text)) > 0.99999  # deterministic


@pytest.mark.parametrize(("query", "related", "unrelated"), RELEVANCE)
def test_a_passage_sharing_the_querys_words_scores_higher(
    any_embedder: Embedder, query: str, related: str, unrelated: str
) -> None:
    q = any_embedder.embed_query(query)
    near, far = any_embedder.embed_documents([related, unrelated])
    assert float(q @ near) > float(q @ far)


def test_text_past_the_window_does_not_change_the_vector(any_embedder: Embedder) -> None:
    # The chunker keeps chunks well inside the window (200 of 256 tokens), so whatever lies past
    # it must not matter; the real model truncates there.
    long = " ".join(WORDS[i % len(WORDS)] for i in range(400))
    a, b = any_embedder.embed_documents([long, long + " zulu yankee xray whiskey"])
    assert cosine(a, b) > 0.9999


def test_token_counts_add_up_over_words_and_are_never_truncated(any_embedder: Embedder) -> None:
    count = any_embedder.count_tokens
    assert count("") == 0
    assert count("Hello, world!") >= 4  # words and punctuation each count
    for a, b in [("alpha bravo", "charlie"), ("The vault code", "is 4417-KESTREL."), ("x", "y")]:
        assert count(f"{a} {b}") == count(a) + count(b)
    many = " ".join(WORDS[i % len(WORDS)] for i in range(2000))
    assert count(many) >= 2000  # past the model's window: the chunker must see it all
