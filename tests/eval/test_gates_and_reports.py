"""Gates over a report, suite loading with pinned hashes, the holdout check, report rendering."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from eval.gates import GateSpec, evaluate_gate, load_gate
from eval.report import plot_answerability, plot_charts, render_markdown
from eval.runner import HoldoutMismatchError, check_holdout
from eval.suite import SuiteError, load_suite
from ragdock.contracts.eval_report import EvalReport, parse_eval_report
from tests import contract_samples as samples

REPO = Path(__file__).resolve().parents[2]


def a_report(previous: str | None = "grounded@v1") -> EvalReport:
    return parse_eval_report(a_report_json(previous), source="a_report")


def a_report_json(previous: str | None = "grounded@v1") -> dict[str, Any]:
    interval = {"delta": 0.04, "low": 0.01, "high": 0.07, "level": 0.95, "n": 100}
    return {
        "schema": "ragdock.eval.report/1",
        "suite": {"name": "demo", "path": "demo.yaml", "sha256": "0" * 64},
        "models": {"candidate": "grounded@v2", "base": "gemma", "previous": previous},
        "candidate_record": {"name": "grounded", "version": "v2"},
        "holdout": None,
        "settings": {"seed": 0},
        "run": {"wall_s": 1.0},
        "tasks": {
            "grounding": {
                "kind": "grounding",
                "data": {},
                "notes": [],
                "metrics": {
                    "candidate": {"crag_score": 0.30, "hallucination": 0.08},
                    "base": {"crag_score": -0.40, "hallucination": 0.95},
                    **(
                        {"previous": {"crag_score": 0.26, "hallucination": 0.10}}
                        if previous
                        else {}
                    ),
                },
                "deltas": {
                    "vs_base": {"crag_score": {**interval, "delta": 0.7, "low": 0.6, "high": 0.8}},
                    **({"vs_previous": {"crag_score": interval}} if previous else {}),
                },
                "intervals": {
                    "crag_score": {"value": 0.3, "low": 0.12, "high": 0.47, "level": 0.95, "n": 200}
                },
                "relative": {},
                "failures": [
                    {
                        "id": "q1",
                        "verdict": "hallucinated",
                        "question": "Who?",
                        "answers": [],
                        "output": "Bob [1]",
                    }
                ],
            },
            "forgetting": {
                "kind": "forgetting",
                "data": {},
                "notes": [],
                "failures": [],
                "intervals": {},
                "metrics": {"candidate": {"perplexity": 21.0}, "base": {"perplexity": 20.0}},
                "deltas": {},
                "relative": {"perplexity_increase": {"value": 0.05, "low": 0.03, "high": 0.07}},
            },
        },
    }


def gate(*rules: dict[str, Any]) -> GateSpec:
    return GateSpec.model_validate({"name": "test", "rules": list(rules)})


def test_gate_passes_and_explains_each_rule() -> None:
    verdict = evaluate_gate(
        a_report(),
        gate(
            {
                "metric": "grounding.crag_score",
                "compare_to": "previous",
                "op": ">=",
                "threshold": 0.0,
                "bound": "lower",
            },
            {"metric": "grounding.hallucination", "op": "<=", "threshold": 0.10},
        ),
    )
    assert verdict.passed is True
    assert [v.passed for v in verdict.verdicts] == [True, True]
    assert "lower bound +0.0100 satisfies >= 0" in verdict.verdicts[0].why


def test_lower_bound_fails_where_the_point_estimate_would_pass() -> None:
    rules = {"metric": "forgetting.perplexity_increase", "op": "<=", "threshold": 0.06}
    assert evaluate_gate(a_report(), gate(rules)).passed is True  # point 0.05
    verdict = evaluate_gate(a_report(), gate({**rules, "bound": "upper"}))  # upper 0.07
    assert verdict.passed is False
    assert "violates" in verdict.verdicts[0].why


def test_own_value_rules_can_demand_the_lower_end_of_its_interval() -> None:
    point = {"metric": "grounding.crag_score", "op": ">=", "threshold": 0.25}
    assert evaluate_gate(a_report(), gate(point)).passed is True  # 0.30
    lower = evaluate_gate(a_report(), gate({**point, "bound": "lower"}))  # 0.12
    assert lower.passed is False
    assert "lower bound +0.1200 violates" in lower.verdicts[0].why
    above_zero = {"metric": "grounding.crag_score", "op": ">", "threshold": 0.0, "bound": "lower"}
    assert evaluate_gate(a_report(), gate(above_zero)).passed is True
    # No interval recorded: the rule cannot be checked, so it fails.
    missing = {"metric": "grounding.hallucination", "op": "<=", "threshold": 0.1, "bound": "upper"}
    assert evaluate_gate(a_report(), gate(missing)).passed is False


def test_missing_metric_fails_and_missing_previous_follows_if_missing() -> None:
    assert (
        evaluate_gate(
            a_report(), gate({"metric": "generation.json_validity", "op": ">=", "threshold": 0.99})
        ).passed
        is False
    )
    rule = {
        "metric": "grounding.crag_score",
        "compare_to": "previous",
        "op": ">=",
        "threshold": 0.0,
    }
    first_version = a_report(previous=None)
    assert evaluate_gate(first_version, gate(rule)).passed is False
    assert evaluate_gate(first_version, gate({**rule, "if_missing": "pass"})).passed is True


def test_shipped_suite_and_gate_load() -> None:
    suite = load_suite(REPO / "eval/suites/grounded-raft-270m.yaml")
    assert {t.kind for t in suite.tasks} == {"grounding", "generation", "forgetting", "retrieval"}
    assert load_gate(REPO / "eval/suites/grounded-raft-270m.gate.yaml").rules


def test_shipped_general_holdout_matches_the_pinned_hashes() -> None:
    suite = load_suite(REPO / "eval/suites/grounded-raft-270m.yaml")
    forgetting = next(t for t in suite.tasks if t.kind == "forgetting")
    for ref in (forgetting.text, forgetting.qa):  # type: ignore[union-attr]
        assert (REPO / ref.path).is_file()
        assert hashlib.sha256((REPO / ref.path).read_bytes()).hexdigest() == ref.sha256


def suite_file(tmp_path: Path, holdout: Path, digest: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(
        json.dumps(
            {
                "name": "t",
                "candidate": "a@v1",
                "holdout": {"path": str(holdout), "sha256": digest},
                "tasks": [
                    {
                        "kind": "forgetting",
                        "text": {"path": str(holdout), "sha256": digest},
                        "qa": {"path": str(holdout), "sha256": digest},
                    }
                ],
            }
        )
    )
    return path


def test_changed_data_and_other_holdouts_are_refused(tmp_path: Path) -> None:
    holdout = tmp_path / "holdout.jsonl"
    holdout.write_text('{"id": 1}\n')
    digest = hashlib.sha256(holdout.read_bytes()).hexdigest()
    suite = load_suite(suite_file(tmp_path, holdout, digest))
    manifest = samples.adapter_manifest(holdout_sha256=digest)
    assert check_holdout(suite, manifest)["status"].startswith("matches")  # type: ignore[index]
    other = samples.adapter_manifest(holdout_sha256="0" * 64)
    with pytest.raises(HoldoutMismatchError, match="holdout mismatch"):
        check_holdout(suite, other)
    with pytest.raises(HoldoutMismatchError, match="records no holdout"):
        check_holdout(suite, samples.adapter_manifest())
    holdout.write_text('{"id": 2}\n')  # the file changed after the suite pinned it
    with pytest.raises(SuiteError, match="changed"):
        check_holdout(suite, manifest)


def test_invalid_suite_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ncandidate: a@v1\ntasks: [{kind: grounding}]\n")
    with pytest.raises(SuiteError, match="holdout"):
        load_suite(path)


def test_report_renders_as_markdown_and_charts(tmp_path: Path) -> None:
    typed = a_report()
    typed.gate = evaluate_gate(
        typed, gate({"metric": "grounding.hallucination", "op": "<=", "threshold": 0.05})
    )
    report = typed.as_json()
    text = render_markdown(report)
    assert "| crag_score | 0.300 | 0.260 | -0.400 |" in text
    assert "| crag_score | +0.040 [+0.010, +0.070] | 100 |" in text
    assert "| perplexity_increase | +0.050 [+0.030, +0.070] |" in text
    assert "| crag_score | +0.300 [+0.120, +0.470] | 200 |" in text  # the candidate's own
    assert "hallucinated: Who? -> 'Bob [1]'" in text
    assert "FAILED" in text
    charts = plot_charts(report, tmp_path)
    assert [c.name for c in charts] == ["grounding.png"]  # forgetting has no 0..1 metric here
    assert charts[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_answerability_section_and_curve_from_the_calibration_and_the_holdout(
    tmp_path: Path,
) -> None:
    curve = [
        {"threshold": t / 10, "hallucination": 1 - t / 10, "false_abstention": t / 10}
        for t in range(11)
    ]
    report = a_report_json()
    report["calibration"] = {
        "features": ["abstain_logit", "question_coverage", "top_score"],
        "threshold": 0.6,
        "target_hallucination": 0.08,
        "validation": {
            "signals": {"p_answer": {"auroc": 0.81, "n": 400}},
            "combined_auroc_cv": 0.84,
            "at_threshold": {"hallucination": 0.08, "false_abstention": 0.3},
            "curve": curve,
        },
    }
    report["tasks"]["grounding"]["data"] = {
        "answerability": {
            "candidate": {
                "signals": {"p_answer": {"auroc": 0.78, "n": 200}},
                "score_auroc": 0.8,
                "threshold": 0.6,
                "at_threshold": {"hallucination": 0.09, "false_abstention": 0.31},
                "curve": curve,
            }
        }
    }
    text = render_markdown(report)
    assert "## Answerability" in text
    assert "| p_answer | 0.810 (n=400) | 0.780 (n=200) |" in text
    assert "| calibrated score | 0.840 | 0.800 |" in text
    assert "Threshold 0.600" in text
    path = plot_answerability(report, tmp_path)
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_answerability(a_report_json(), tmp_path / "none") is None
