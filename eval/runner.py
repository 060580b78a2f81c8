"""`ragdock eval SUITE.yaml`: resolve the models, check the frozen holdout, run every task on
every model, add paired intervals, and write the report.

The candidate is compared with the base model and with the version its alias points at now
(`previous`), on the same examples with greedy decoding and a fixed seed.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval import report as report_io
from eval.gateway import EvalGateway, GatewayError
from eval.stats import paired_bootstrap
from eval.suite import Suite, SuiteError
from eval.tasks.base import TaskContext, TaskResult
from eval.tasks.forgetting import run_forgetting
from eval.tasks.generation import run_generation
from eval.tasks.grounding import run_grounding
from eval.tasks.retrieval import run_retrieval
from ragdock.contracts.adapter_manifest import AdapterManifest, parse_adapter_manifest
from ragdock.contracts.base import ContractError
from ragdock.contracts.eval_report import EvalReport, parse_eval_report
from ragdock.digest import sha256_file

RUNNERS = {
    "retrieval": run_retrieval,
    "generation": run_generation,
    "grounding": run_grounding,
    "forgetting": run_forgetting,
}


class HoldoutMismatchError(SuiteError):
    """The suite's holdout is not the one the candidate was trained against."""


def check_holdout(suite: Suite, manifest: AdapterManifest | None) -> dict[str, Any] | None:
    """Compare the suite's holdout with the one in the candidate's training manifest.

    Raises:
        HoldoutMismatchError: the file changed, the hashes differ, or the candidate's manifest
            records no holdout (nothing proves the eval data was kept out of training).
    """
    if suite.holdout is None:
        return None
    path = suite.holdout.verified()
    recorded = manifest.data.files.get("holdout") if manifest is not None else None
    if recorded is None:
        raise HoldoutMismatchError(
            f"{suite.candidate} records no holdout in its training manifest, so nothing shows "
            f"{path} was kept out of its training data; retrain with data.holdout set"
        )
    trained = recorded.sha256
    if trained != suite.holdout.sha256:
        raise HoldoutMismatchError(
            f"holdout mismatch: {path} has sha256 {suite.holdout.sha256}, but {suite.candidate} "
            f"was trained against holdout {recorded.path} with sha256 {recorded.sha256}. "
            "Evaluate on the holdout frozen at training time"
        )
    return {"path": str(path), "sha256": trained, "status": "matches the training manifest"}


async def resolve_models(
    suite: Suite, gateway: EvalGateway
) -> tuple[dict[str, str], dict[str, Any]]:
    """Role -> served model name (candidate, base, and previous when the alias points elsewhere),
    and the candidate's registry record."""
    name, _, selector = suite.candidate.partition("@")
    if not selector:
        raise SuiteError(f"candidate {suite.candidate!r}: write NAME@VERSION or NAME@ALIAS")
    summary = await gateway.adapter_summary(name)
    record = await gateway.adapter_version(name, selector, summary)
    models = {"candidate": str(record["model"]), "base": suite.base or await gateway.base_model()}
    previous = summary["aliases"].get(suite.alias)
    if previous and previous != record["version"]:
        models["previous"] = f"{name}@{previous}"
    return models, record


def add_deltas(result: TaskResult, suite: Suite) -> dict[str, dict[str, dict[str, Any]]]:
    """Paired intervals of candidate - base and candidate - previous, per per-example metric."""
    deltas: dict[str, dict[str, dict[str, Any]]] = {}
    candidate = result.per_example.get("candidate")
    if candidate is None:
        return deltas
    for role in ("base", "previous"):
        other = result.per_example.get(role)
        if other is None:
            continue
        deltas[f"vs_{role}"] = {}
        for metric, values in candidate.items():
            pairs = [
                (c, o)
                for c, o in zip(values, other[metric], strict=True)
                if c is not None and o is not None
            ]
            if not pairs:
                continue
            interval = paired_bootstrap(
                [c for c, _ in pairs],
                [o for _, o in pairs],
                resamples=suite.bootstrap.resamples,
                level=suite.bootstrap.level,
                seed=suite.seed,
            )
            deltas[f"vs_{role}"][metric] = interval.as_json()
    return deltas


def add_intervals(result: TaskResult, suite: Suite) -> dict[str, dict[str, Any]]:
    """The candidate's own value of each per-example metric with its bootstrap interval (what a
    rule like `crag_score >= 0.25` with `bound: lower` reads)."""
    intervals: dict[str, dict[str, Any]] = {}
    for metric, values in (result.per_example.get("candidate") or {}).items():
        if not any(v is not None for v in values):
            continue
        # Against a reference of zeros the paired delta is the candidate's own mean.
        interval = paired_bootstrap(
            values,
            [0.0] * len(values),
            resamples=suite.bootstrap.resamples,
            level=suite.bootstrap.level,
            seed=suite.seed,
        ).as_json()
        interval["value"] = interval.pop("delta")
        intervals[metric] = interval
    return intervals


def _rounded(value: Any) -> Any:
    """Floats to 6 places, so the report's bytes do not depend on summation noise."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


@dataclass
class SuiteRun:
    """What the models answered, before it becomes a report."""

    models: dict[str, str]
    record: dict[str, Any]
    holdout: dict[str, Any] | None
    results: list[TaskResult]
    started_at: str
    wall_s: float


async def run_tasks(
    suite: Suite,
    *,
    gateway_url: str,
    api_key: str | None,
    progress: Callable[[str, int], Callable[[], None]],
) -> SuiteRun:
    """Resolve the models, check the holdout, and run every task on every model.

    Raises:
        SuiteError: bad data, a changed file, or a holdout that differs from training's.
        GatewayError: the gateway refused or failed a request.
    """
    started, clock = dt.datetime.now(dt.UTC), time.perf_counter()
    async with EvalGateway(gateway_url, api_key) as gateway:
        models, record = await resolve_models(suite, gateway)
        holdout = check_holdout(suite, candidate_manifest(record))
        ctx = TaskContext(
            gateway=gateway,
            models=models,
            seed=suite.seed,
            concurrency=suite.concurrency,
            progress=progress,
        )
        results = []
        for task in suite.tasks:
            results.append(await RUNNERS[task.kind](task, ctx))  # type: ignore[operator]
    return SuiteRun(
        models,
        record,
        holdout,
        results,
        started.isoformat(timespec="seconds"),
        round(time.perf_counter() - clock, 1),
    )


def candidate_manifest(record: dict[str, Any]) -> AdapterManifest | None:
    """The candidate's training manifest, from its registry record as the gateway shows it.

    Raises:
        SuiteError: the record carries a manifest this version cannot read.
    """
    raw = record.get("manifest")
    if raw is None:
        return None
    source = f"the manifest of {record.get('name')}@{record.get('version')} (from the gateway)"
    try:
        return parse_adapter_manifest(raw, source=source)
    except ContractError as exc:
        raise SuiteError(str(exc)) from exc


def build_report(run: SuiteRun, suite: Suite, suite_path: Path, gateway_url: str) -> EvalReport:
    """The report: deterministic sections first, the run's timing under `run`."""
    report: dict[str, Any] = {
        "schema": report_io.SCHEMA,
        "suite": {"name": suite.name, "path": str(suite_path), "sha256": sha256_file(suite_path)},
        "models": {role: run.models.get(role) for role in ("candidate", "base", "previous")},
        "candidate_record": {"name": run.record["name"], "version": run.record["version"]},
        "holdout": run.holdout,
        "settings": {
            "seed": suite.seed,
            "temperature": 0.0,
            "bootstrap": suite.bootstrap.model_dump(),
        },
        "tasks": {},
        "run": {"started_at": run.started_at, "gateway": gateway_url, "wall_s": run.wall_s},
    }
    manifest = candidate_manifest(run.record)
    if manifest is not None and manifest.calibration is not None:
        # The candidate's own calibration (fitted on its validation split), shown beside what
        # its score did on this suite's questions.
        report["calibration"] = _rounded(manifest.calibration.model_dump(mode="json"))
    for result in run.results:
        report["tasks"][result.name] = _rounded(
            {
                "kind": result.kind,
                "data": result.data,
                "metrics": result.metrics,
                "deltas": add_deltas(result, suite),
                "intervals": add_intervals(result, suite),
                "relative": result.relative,
                "failures": result.failures,
                "notes": result.notes,
            }
        )
    return parse_eval_report(report, source=f"the report of suite {suite.name}")


def write_predictions(run: SuiteRun, out_dir: Path) -> None:
    """Every output of every model, one JSON line each, for review (not read by the gate)."""
    with (out_dir / report_io.PREDICTIONS).open("w", encoding="utf-8") as handle:
        for result in run.results:
            for prediction in result.predictions:
                handle.write(json.dumps(prediction, sort_keys=True) + "\n")


def write_outputs(report: EvalReport, out_dir: Path) -> None:
    """report.json, report.md and one PNG chart per task (drawn from the validated report)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = report.as_json()
    report_io.write_json(data, out_dir)
    (out_dir / report_io.REPORT_MD).write_text(report_io.render_markdown(data), encoding="utf-8")
    report_io.plot_charts(data, out_dir)
    report_io.plot_answerability(data, out_dir)


__all__ = ["GatewayError", "HoldoutMismatchError", "build_report", "run_tasks", "write_outputs"]
