"""Answer-quality metrics against values worked out by hand."""

from __future__ import annotations

import pytest

from eval.metrics.text import (
    chrf,
    contains_answer,
    exact_match,
    normalize_answer,
    rouge_l,
    token_f1,
)


def test_normalize_drops_case_punctuation_articles_and_citations() -> None:
    assert normalize_answer("The  Eiffel Tower! [2]") == "eiffel tower"


@pytest.mark.parametrize(
    ("prediction", "references", "expected"),
    [
        ("Paris [1]", ["paris"], 1.0),
        ("in Paris", ["Paris"], 0.0),
        ("the Nile", ["Amazon", "Nile"], 1.0),
    ],
)
def test_exact_match(prediction: str, references: list[str], expected: float) -> None:
    assert exact_match(prediction, references) == expected


def test_token_f1_by_hand() -> None:
    # prediction tokens: [built, in, 1712] ; reference: [1712] -> P = 1/3, R = 1, F1 = 0.5
    assert token_f1("built in 1712", ["1712"]) == pytest.approx(0.5)
    # best of two references: [newcomen] vs [thomas, newcomen]: P = 1, R = 1/2 -> 2/3
    assert token_f1("Newcomen", ["James Watt", "Thomas Newcomen"]) == pytest.approx(2 / 3)
    assert token_f1("", ["x"]) == 0.0


def test_contains_answer_needs_whole_words() -> None:
    assert contains_answer("It opened in 1712 [1].", ["1712"]) == 1.0
    assert contains_answer("It opened in 17120.", ["1712"]) == 0.0


def test_rouge_l_by_hand() -> None:
    # got: [a, b, c, d] ("a" is an article, so use other words) -> cat sat on mat
    # want: [cat, on, mat]; LCS = [cat, on, mat] = 3; P = 3/4, R = 1; beta = 1.2
    p, r, b2 = 0.75, 1.0, 1.44
    expected = (1 + b2) * p * r / (r + b2 * p)
    assert rouge_l("cat sat on mat", ["cat on mat"]) == pytest.approx(expected)
    assert rouge_l("x y", ["z"]) == 0.0


def test_chrf_by_hand() -> None:
    # "ab" vs "ab": identical -> 1. "ab" vs "ac": 1-grams a,b vs a,c -> P = R = 1/2;
    # 2-grams ab vs ac -> 0; orders 3..6 have no n-grams and are skipped. Average P = R = 1/4.
    assert chrf("ab", ["ab"]) == pytest.approx(1.0)
    assert chrf("ab", ["ac"]) == pytest.approx(0.25)
    # Spaces are ignored: "a b" is "ab".
    assert chrf("a b", ["ab"]) == pytest.approx(1.0)
    assert chrf("", ["ab"]) == 0.0
