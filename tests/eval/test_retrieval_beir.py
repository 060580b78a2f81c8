"""The BEIR runner end to end on a tiny dataset written in the BEIR layout."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from eval.beir import load_beir
from eval.retrieval_beir import evaluate_beir, render_table, sparse_encoder
from retrieval.ranking import FusionConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CORPUS = [
    ("d1", "Volcanoes", "Magma rises through the crust and erupts as lava."),
    ("d2", "Photosynthesis", "Plants convert sunlight into chemical energy in chloroplasts."),
    ("d3", "Asyncio", "Python coroutines run on an event loop and await futures."),
    ("d4", "Glaciers", "Compacted snow forms ice that flows slowly downhill."),
]
QUERIES = [
    ("q1", "how does lava erupt from a volcano"),
    ("q2", "plants sunlight energy"),
    ("q3", "python event loop coroutines"),
    ("q9", "unjudged query"),
]
QRELS = [("q1", "d1", 1), ("q2", "d2", 2), ("q3", "d3", 1)]


@pytest.fixture
def beir_dir(tmp_path: Path) -> Path:
    (tmp_path / "qrels").mkdir()
    with (tmp_path / "corpus.jsonl").open("w") as handle:
        for doc_id, title, text in CORPUS:
            handle.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with (tmp_path / "queries.jsonl").open("w") as handle:
        for qid, text in QUERIES:
            handle.write(json.dumps({"_id": qid, "text": text}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in QRELS]
    (tmp_path / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_load_beir_keeps_judged_queries(beir_dir: Path) -> None:
    data = load_beir(beir_dir)
    assert sorted(data.queries) == ["q1", "q2", "q3"]
    assert data.qrels["q2"] == {"d2": 2}
    assert [d.doc_id for d in data.corpus] == ["d1", "d2", "d3", "d4"]


def test_evaluate_beir_scores_every_mode(beir_dir: Path, tmp_path: Path) -> None:
    report = evaluate_beir(
        beir_dir,
        cache_dir=tmp_path / "cache",
        fusions=[("hybrid", FusionConfig()), ("rrf", FusionConfig(method="rrf"))],
    )
    assert set(report.metrics) == {"dense", "sparse", "hybrid", "rrf"}
    for metrics in report.metrics.values():
        # Each query has one obviously matching document among four.
        assert metrics["ndcg@10"] == pytest.approx(1.0)
        assert metrics["recall@1"] == pytest.approx(1.0)
    assert report.settings["chunks"] == 4
    assert (tmp_path / "cache" / "minilm.npz").exists()
    assert render_table(report).row_count == 4
    assert json.loads(json.dumps(report.as_json()))["metrics"]["dense"]["mrr@10"] == 1.0


def test_sparse_encoder_names() -> None:
    assert sparse_encoder("ours", 100).embed_query("cells").values == (1.0,)
    with pytest.raises(ValueError, match="unknown sparse encoder"):
        sparse_encoder("tfidf", 100)
