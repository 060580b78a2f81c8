"""Structured-output metrics: JSON validity against a schema, and label classification.

Models wrap JSON in prose or Markdown fences and write labels with varying case and punctuation;
the extractors here are deliberately forgiving about the wrapping and strict about the content,
so a score measures what the model meant, not how it formatted it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_json(text: str) -> Any:
    """The first JSON value in `text`: a fenced block, the whole text, or the first {...}/[...].

    Raises:
        ValueError: nothing in the text parses as JSON.
    """
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for candidate in candidates:
        stripped = candidate.strip()
        for start, char in enumerate(stripped):
            if char in "{[":
                try:
                    return decoder.raw_decode(stripped[start:])[0]
                except json.JSONDecodeError:
                    continue
    raise ValueError("no JSON object or array in the output")


def json_validity(text: str, schema: Mapping[str, Any] | None = None) -> float:
    """1.0 when the output holds JSON that validates against `schema` (any JSON when None)."""
    try:
        value = extract_json(text)
    except ValueError:
        return 0.0
    if schema is None:
        return 1.0
    return float(jsonschema.Draft202012Validator(schema).is_valid(value))


def extract_label(text: str, labels: Sequence[str]) -> str | None:
    """The label the output names: an exact (normalised) match first, else the earliest label
    mentioned as a whole word; None when no label is named.

    At the same position the longer label wins, so "not spam" is not read as "spam".
    """
    normalized = _norm(text)
    by_norm = {_norm(label): label for label in labels}
    if normalized in by_norm:
        return by_norm[normalized]
    hits: list[tuple[int, int, str]] = []
    for norm, label in by_norm.items():
        match = re.search(rf"(?<![a-z0-9]){re.escape(norm)}(?![a-z0-9])", normalized)
        if match:
            hits.append((match.start(), -len(norm), label))
    return min(hits)[2] if hits else None


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


def accuracy(predicted: Sequence[str | None], gold: Sequence[str]) -> float:
    """Share of exact label matches (an unreadable prediction is wrong)."""
    if not gold:
        return 0.0
    return sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold)


def macro_f1(predicted: Sequence[str | None], gold: Sequence[str], labels: Sequence[str]) -> float:
    """Unweighted mean of per-label F1 over `labels` (a label never predicted nor gold scores 0
    and still counts, as in scikit-learn with `labels=` given)."""
    if not labels:
        return 0.0
    scores = []
    for label in labels:
        tp = sum(p == label and g == label for p, g in zip(predicted, gold, strict=True))
        fp = sum(p == label and g != label for p, g in zip(predicted, gold, strict=True))
        fn = sum(p != label and g == label for p, g in zip(predicted, gold, strict=True))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores)
