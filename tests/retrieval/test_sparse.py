"""BM25 tokenizer, weights and stable term indices."""

from __future__ import annotations

import subprocess
import sys

import pytest

from retrieval.sparse import Bm25Encoder, light_stem, term_index, tf_weight, tokenize


def test_tokenize_lowercases_splits_and_drops_stopwords() -> None:
    assert tokenize("The T-cell IS in the Café's", stem=False) == ["cell", "cafe"]


@pytest.mark.parametrize(
    ("word", "stem"),
    [
        ("cells", "cell"),
        ("studies", "study"),
        ("treated", "treat"),
        ("running", "run"),
        ("classes", "class"),
        ("analysis", "analysis"),
        ("virus", "virus"),
        ("gas", "gas"),
        ("falling", "fall"),
        ("studied", "study"),
        ("p53", "p53"),
        ("sing", "sing"),
    ],
)
def test_light_stem(word: str, stem: str) -> None:
    assert light_stem(word) == stem


def test_documents_and_queries_share_the_tokenizer() -> None:
    encoder = Bm25Encoder()
    doc = encoder.embed_document("Mutated cells were studied.")
    query = encoder.embed_query("cell study mutation")
    assert set(query.indices) & set(doc.indices) == {term_index("cell"), term_index("study")}


def test_tf_weight_matches_hand_computed_bm25() -> None:
    # tf=2, dl=50, avg=100, k1=1.2, b=0.75: norm = 1.2 * (0.25 + 0.375) = 0.75
    assert tf_weight(2, 50, k1=1.2, b=0.75, avg_len=100) == pytest.approx(2 * 2.2 / 2.75)
    # b=0 removes length normalization: same weight at any length.
    assert tf_weight(3, 10, k1=1.2, b=0, avg_len=100) == tf_weight(3, 999, k1=1.2, b=0, avg_len=100)


def test_document_vector_weights() -> None:
    encoder = Bm25Encoder(k1=1.2, b=0.75, avg_len=4.0, stem=False)
    vector = encoder.embed_document("apple apple banana cherry")  # 4 terms, dl == avg_len
    weights = dict(zip(vector.indices, vector.values, strict=True))
    assert weights[term_index("apple")] == pytest.approx(2 * 2.2 / (2 + 1.2))
    assert weights[term_index("banana")] == pytest.approx(1.0)
    assert list(vector.indices) == sorted(vector.indices)


def test_query_vector_is_one_per_distinct_term() -> None:
    vector = Bm25Encoder().embed_query("protein protein folding of the protein")
    assert sorted(vector.values) == [1.0, 1.0]
    assert len(vector.indices) == 2


def test_term_index_is_31_bit_and_stable_across_processes() -> None:
    here = [term_index(t) for t in ("protein", "cell", "zebrafish")]
    code = (
        "from retrieval.sparse import term_index; "
        "print([term_index(t) for t in ('protein', 'cell', 'zebrafish')])"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PYTHONPATH": "."},
    )
    assert other.stdout.strip() == str(here)
    assert all(0 <= i < 2**31 for i in here) and len(set(here)) == 3


def test_edge_bm25_shares_stems_between_documents_and_queries() -> None:
    from retrieval.sparse import EdgeBm25Encoder

    encoder = EdgeBm25Encoder(avg_len=4.0)
    doc = encoder.embed_document("Connected networks of connections")
    query = encoder.embed_query("connecting the network")
    assert set(query.values) == {1.0}
    assert len(query.indices) == 2 and set(query.indices) <= set(doc.indices)
    weights = dict(zip(doc.indices, doc.values, strict=True))
    # "connected" and "connections" share one stem: tf 2 scores above "networks" (tf 1).
    assert weights[query.indices[0]] != weights[query.indices[1]]
    assert max(weights.values()) > min(weights.values())
