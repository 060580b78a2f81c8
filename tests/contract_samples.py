"""Small, valid instances of the typed contracts (ragdock.contracts), built through the models
themselves so a test's sample follows the format when it changes."""

from __future__ import annotations

from typing import Any

from ragdock.contracts.adapter_manifest import (
    AdapterManifest,
    AdapterShape,
    BaseModelRef,
    CalibrationBlock,
    DataFile,
    DataRecord,
    Hardware,
    Leakage,
    TrainMetrics,
)
from ragdock.contracts.eval_report import (
    CandidateRef,
    EvalReport,
    GateVerdict,
    Interval,
    RuleVerdict,
    SuiteRef,
    TaskReport,
)


def eval_report(
    passed: bool | None = True,
    *,
    name: str = "x",
    version: str = "v1",
    rule: str = "grounding.hallucination <= 0.1",
) -> dict[str, Any]:
    """A report with one grounding task; `passed` None: no gate verdict yet."""
    task = TaskReport(
        kind="grounding",
        data={},
        metrics={"candidate": {"hallucination": 0.05 if passed else 0.4}},
        deltas={},
        intervals={"hallucination": Interval(value=0.05, low=0.0, high=0.1, level=0.95, n=20)},
        relative={},
        failures=[],
        notes=[],
    )
    gate = None
    if passed is not None:
        gate = GateVerdict(
            name="test",
            passed=passed,
            verdicts=[
                RuleVerdict(
                    rule=rule,
                    metric="grounding.hallucination",
                    passed=passed,
                    observed="-",
                    why="sample",
                )
            ],
        )
    report = EvalReport(
        suite=SuiteRef(name="sample", path="suite.yaml", sha256="0" * 64),
        models={"candidate": f"{name}@{version}", "base": "gemma", "previous": None},
        candidate_record=CandidateRef(name=name, version=version),
        holdout=None,
        settings={"seed": 0},
        tasks={"grounding": task},
        run={"wall_s": 1.0},
        gate=gate,
    )
    return report.as_json()


def adapter_manifest(
    *,
    digest: str | None = "abc",
    holdout_sha256: str | None = None,
    calibration: CalibrationBlock | None = None,
) -> AdapterManifest:
    files = {"train": DataFile(path="train.jsonl", sha256="1" * 64, examples=4)}
    if holdout_sha256 is not None:
        files["holdout"] = DataFile(path="holdout.jsonl", sha256=holdout_sha256, examples=2)
    return AdapterManifest(
        created_at="2026-12-01T00:00:00+00:00",
        base_model=BaseModelRef(name="gemma-3-270m", id="google/gemma-3-270m", digest=digest),
        method="lora",
        adapter=AdapterShape(
            r=8, alpha=16, target_modules=["q_proj"], files={}, weights_from_step=1
        ),
        data=DataRecord(
            files=files,
            train_examples=4,
            validation_examples=0,
            duplicates_dropped=0,
            too_long_dropped=0,
            train_tokens=40,
            train_label_tokens=8,
            leakage=Leakage(status="clean"),
        ),
        seed=0,
        config={},
        libraries={},
        hardware=Hardware(device="cpu", torch_threads=2),
        metrics=TrainMetrics(
            steps=1,
            epochs=1.0,
            first_train_loss=1.0,
            final_train_loss=0.5,
            best_eval_loss=None,
            best_step=None,
            stopped_early=False,
            tokens_seen=40,
            tokens_per_second=10.0,
            train_seconds=4.0,
            wall_seconds=5.0,
        ),
        calibration=calibration,
    )
