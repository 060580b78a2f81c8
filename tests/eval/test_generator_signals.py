"""The generator-signals report on hand-made gateway replies: labels, agreement, abstention."""

from __future__ import annotations

from typing import Any

from eval.generator_signals import report, row_of


def record(answer: str, span: str, gold: list[str], source: str, p: float) -> dict[str, Any]:
    grounding = {"status": "answered", "top_score": p, "support": {"overlap": p},
                 "reader": {"span": span, "probability": p, "margin": p - 0.5}}  # fmt: skip
    return {"answers": gold, "answer": answer, "sources": [source], "grounding": grounding}


def test_a_row_reads_label_agreement_and_abstention() -> None:
    agreed = row_of(record("1921 [1].", "1921", ["1921"], "Built in 1921.", 0.9))
    assert agreed["holds"] and agreed["generated_right"] and agreed["agreement"] == 1.0
    refused = row_of(record("I don't know based on the provided sources.", "1921", [], "x", 0.2))
    assert not refused["holds"] and refused["generated"] == 0.0 and refused["agreement"] == 0.0


def test_the_report_ranks_a_separating_signal_first() -> None:
    records = [record("1921 [1]", "1921", ["1921"], "in 1921", 0.6 + i / 100) for i in range(6)]
    records += [record("1950 [1]", "1921", [], "in 1921", 0.4 - i / 100) for i in range(6)]
    table = report(records)
    assert "12 questions, 6 with a gold answer" in table
    assert "| probability | 1.000 |" in table
    assert "| logistic, 5-fold CV: + the generator's signals |" in table
