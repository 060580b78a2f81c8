"""Retrieval metrics against hand-computed cases."""

from __future__ import annotations

import math

import pytest

from eval.metrics.retrieval import dedupe, evaluate_run, mrr_at, ndcg_at, recall_at


def test_recall() -> None:
    qrels = {"a": 1, "b": 2, "z": 0}
    assert recall_at(["x", "a", "y", "b"], qrels, 2) == 0.5
    assert recall_at(["x", "a", "y", "b"], qrels, 4) == 1.0
    assert recall_at(["a"], {"a": 0}, 1) == 0.0


def test_mrr() -> None:
    assert mrr_at(["x", "y", "a"], {"a": 1}) == pytest.approx(1 / 3)
    assert mrr_at(["x"] * 10 + ["a"], {"a": 1}) == 0.0


def test_ndcg_graded_hand_computed() -> None:
    qrels = {"a": 2, "b": 1, "c": 0}
    ranked = ["b", "x", "a"]
    dcg = 1 / math.log2(2) + 2 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at(ranked, qrels, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at(["a", "b"], qrels, 10) == pytest.approx(1.0)
    assert ndcg_at(["b", "a"], qrels, 1) == pytest.approx(1 / 2)
    assert ndcg_at(["x"], {"x": 0}, 10) == 0.0


def test_dedupe_keeps_first_position() -> None:
    assert dedupe(["a", "b", "a", "c", "b"]) == ["a", "b", "c"]


def test_evaluate_run_means_over_judged_queries() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 0}}
    run = {"q1": ["a"], "q2": ["x", "b"]}
    metrics = evaluate_run(run, qrels, recall_ks=(1, 5))
    assert metrics["recall@1"] == pytest.approx(0.5)
    assert metrics["recall@5"] == pytest.approx(1.0)
    assert metrics["mrr@10"] == pytest.approx((1 + 0.5) / 2)
    assert metrics["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
