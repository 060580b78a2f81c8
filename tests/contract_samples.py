"""Small, valid instances of the typed contracts (ragdock.contracts), built through the models
themselves so a test's sample follows the format when it changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from eval.gates import GateSpec, Rule
from eval.signing import SigningKey
from eval.verdict import PlatformJudge
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
    parse_eval_report,
)

# The tests' platform: the key it signs its measurements with and the gate it promotes by (one
# judge for the unit registries, the in-process gateways and the session gateway). A sample's
# metrics pass this gate when the sample says they do.
SIGNING_SECRET = "tests-platform-signing-key-0123456789abcdef"
SIGNING_KEY = SigningKey(SIGNING_SECRET.encode())
PLATFORM_GATE = GateSpec(
    name="tests-platform",
    rules=[Rule(metric="forgetting.perplexity_increase", op="<=", threshold=1.0)],
)
JUDGE = PlatformJudge(SIGNING_KEY, PLATFORM_GATE)


def eval_report(
    passed: bool | None = True,
    *,
    name: str = "x",
    version: str = "v1",
    rule: str = "grounding.hallucination <= 0.1",
    measured: bool | None = None,
    signed: bool = True,
) -> dict[str, Any]:
    """A report with a grounding and a forgetting task, for NAME@VERSION.

    Args:
        passed: the verdict the report's own gate claims (None: no gate verdict yet).
        measured: whether its metrics pass `PLATFORM_GATE` (default: as `passed` claims).
        signed: signed with `SIGNING_KEY`, as the tests' platform signs what it measured.
    """
    good = bool(passed) if measured is None else measured
    grounding = TaskReport(
        kind="grounding",
        data={},
        metrics={"candidate": {"hallucination": 0.05 if good else 0.4}},
        deltas={},
        intervals={"hallucination": Interval(value=0.05, low=0.0, high=0.1, level=0.95, n=20)},
        relative={},
        failures=[],
        notes=[],
    )
    increase = 0.02 if good else 1.5
    forgetting = TaskReport(
        kind="forgetting",
        data={},
        metrics={"candidate": {"perplexity": 10.0 * (1 + increase)}, "base": {"perplexity": 10.0}},
        deltas={},
        intervals={},
        relative={
            "perplexity_increase": Interval(
                value=increase, low=increase - 0.01, high=increase + 0.01, level=0.95, n=4
            )
        },
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
        tasks={"grounding": grounding, "forgetting": forgetting},
        run={"wall_s": 1.0},
        gate=gate,
    )
    return (SIGNING_KEY.sign(report) if signed else report).as_json()


def platform_files(directory: Path) -> dict[str, Path]:
    """The tests' platform key and gate as files, by the settings that name them
    (`signing_key_file`, `promotion_gate`): a gateway given them judges as `JUDGE` does."""
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / "signing.key"
    key.write_text(SIGNING_SECRET + "\n")
    key.chmod(0o600)
    gate = directory / "promotion-gate.yaml"
    gate.write_text(yaml.safe_dump(PLATFORM_GATE.model_dump(exclude_defaults=True)))
    return {"signing_key_file": key, "promotion_gate": gate}


def platform_env(directory: Path) -> dict[str, str]:
    """`platform_files` as the environment of a gateway (or `ragdock eval`) process."""
    return {f"RAGDOCK_{k.upper()}": str(v) for k, v in platform_files(directory).items()}


def signed(report: dict[str, Any], key: SigningKey = SIGNING_KEY) -> dict[str, Any]:
    """`report` (JSON) as `key` signs it."""
    return key.sign(parse_eval_report(report, source="a test's report")).as_json()


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
