"""Fusion and decay math against hand-computed values."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from retrieval.ranking import FusionConfig, RecencyDecay, parse_utc, rrf_scores


def test_rrf_equal_weights() -> None:
    scores = rrf_scores([["a", "b", "c"], ["b", "d"]], k=60)
    assert scores["a"] == pytest.approx(1 / 60)
    assert scores["b"] == pytest.approx(1 / 61 + 1 / 60)
    assert scores["c"] == pytest.approx(1 / 62)
    assert scores["d"] == pytest.approx(1 / 61)
    assert max(scores, key=scores.__getitem__) == "b"


def test_rrf_weights_follow_qdrant_formula() -> None:
    scores = rrf_scores([["a"], ["a", "b"]], k=60, weights=[1.0, 2.0])
    assert scores["a"] == pytest.approx(1 / 60 + 1 / (0.5 + 59))
    assert scores["b"] == pytest.approx(1 / (1.0 + 59))
    silenced = rrf_scores([["a"], ["b"]], k=60, weights=[0.0, 1.0])
    assert silenced == {"a": 0.0, "b": pytest.approx(1 / 60)}


def test_fusion_config_validation() -> None:
    with pytest.raises(ValueError, match="method"):
        FusionConfig(method="sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="weights"):
        FusionConfig(dense_weight=-1)
    with pytest.raises(ValueError, match="k and prefetch"):
        FusionConfig(k=0)


def test_recency_decay() -> None:
    now = datetime(2024, 6, 1, tzinfo=UTC)
    decay = RecencyDecay(half_life_days=10, floor=0.2)
    assert decay.factor(now, now) == pytest.approx(1.0)
    assert decay.factor(now - timedelta(days=10), now) == pytest.approx(0.2 + 0.8 * 0.5)
    assert decay.factor(now - timedelta(days=20), now) == pytest.approx(0.2 + 0.8 * 0.25)
    assert decay.factor(now + timedelta(days=3), now) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        RecencyDecay(half_life_days=0)


def test_parse_utc_reads_store_stamps() -> None:
    assert parse_utc("2024-05-01T12:00:00.000000Z") == datetime(2024, 5, 1, 12, tzinfo=UTC)
