"""JSON validity and label classification metrics, by hand."""

from __future__ import annotations

import pytest

from eval.metrics.structured import accuracy, extract_json, extract_label, json_validity, macro_f1

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def test_extract_json_from_fences_and_prose() -> None:
    assert extract_json('Here:\n```json\n{"a": 1}\n```') == {"a": 1}
    assert extract_json('The answer is {"a": [1, 2]} as asked.') == {"a": [1, 2]}
    with pytest.raises(ValueError, match="no JSON"):
        extract_json("no braces here")


def test_json_validity_against_a_schema() -> None:
    assert json_validity('{"name": "Ada", "age": 36}', SCHEMA) == 1.0
    assert json_validity('{"name": "Ada", "age": "36"}', SCHEMA) == 0.0  # wrong type
    assert json_validity('{"name": "Ada"', SCHEMA) == 0.0  # truncated
    assert json_validity("[1, 2]", None) == 1.0  # any JSON when there is no schema


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("Positive", "positive"),
        ("Label: NEGATIVE.", "negative"),
        ("I think it is neutral, not positive", "neutral"),  # the earliest label mentioned
        ("This is not spam.", "not spam"),  # the longer label wins at the same position
        ("no idea", None),
    ],
)
def test_extract_label(output: str, expected: str | None) -> None:
    labels = ["positive", "negative", "neutral", "spam", "not spam"]
    assert extract_label(output, labels) == expected


def test_accuracy_and_macro_f1_by_hand() -> None:
    gold = ["a", "a", "b", "b"]
    predicted: list[str | None] = ["a", "b", "b", None]
    assert accuracy(predicted, gold) == 0.5
    # a: tp=1 fp=0 fn=1 -> 2/3 ; b: tp=1 fp=1 fn=1 -> 1/2 ; c: never seen -> 0
    assert macro_f1(predicted, gold, ["a", "b"]) == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert macro_f1(predicted, gold, ["a", "b", "c"]) == pytest.approx((2 / 3 + 1 / 2) / 3)
