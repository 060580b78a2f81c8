"""Promotion gates: rules over an eval report, each with a verdict that explains itself.

A rule reads one metric of one task, written `TASK.METRIC`, and compares either
- the candidate's own value with a threshold (`grounding.hallucination <= 0.10`; with `bound:
  lower` the lower end of its own bootstrap interval, `grounding.crag_score > 0`), or
- the candidate's paired delta against the base or the previous version with a margin
  (`grounding.crag_score >= previous + 0.00`), using one end of the bootstrap interval
  (`bound: lower` demands the improvement hold at the interval's lower end, so noise cannot pass).
Relative measures (`forgetting.perplexity_increase`) carry intervals too. A metric the report
does not hold fails its rule: a gate that cannot be checked must not pass. See `eval/gates/`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from eval.suite import SuiteError
from ragdock.contracts.eval_report import EvalReport, GateVerdict, Interval, RuleVerdict

OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: str = Field(pattern=r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_.@-]+$", description="TASK.METRIC")
    op: Literal[">=", ">", "<=", "<"]
    threshold: float = Field(description="The limit, or the margin on the delta when comparing.")
    compare_to: Literal["base", "previous"] | None = None
    bound: Literal["lower", "point", "upper"] = Field(
        "point", description="Which end of the interval must satisfy the rule."
    )
    if_missing: Literal["pass", "fail"] = Field(
        "fail", description="When compare_to names a model the report lacks (no previous version)."
    )

    def text(self) -> str:
        lhs = self.metric if self.compare_to is None else f"{self.metric} - {self.compare_to}"
        bound = "" if self.bound == "point" else f" ({self.bound} bound of the interval)"
        return f"{lhs} {self.op} {self.threshold:g}{bound}"


class GateSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    rules: list[Rule] = Field(min_length=1)


def load_gate(path: Path) -> GateSpec:
    """Read and validate a gate file.

    Raises:
        SuiteError: unreadable YAML or an invalid rule (the message names it).
    """
    try:
        return GateSpec.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError) as exc:
        raise SuiteError(f"cannot read gate {path}: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise SuiteError(f"{path}: {problems}") from exc


def _observed(rule: Rule, report: EvalReport) -> tuple[float | None, str]:
    """The number the rule compares, and how it was read (for the explanation)."""
    task_name, metric = rule.metric.split(".", 1)
    task = report.tasks.get(task_name)
    if task is None:
        return None, f"the report has no task {task_name!r}"
    interval: Interval | None
    if rule.compare_to is not None:
        if not report.models.get(rule.compare_to):
            return None, f"no {rule.compare_to} model in this report"
        interval = task.deltas.get(f"vs_{rule.compare_to}", {}).get(metric)
        if interval is None:
            return None, f"no delta for {metric!r} vs {rule.compare_to}"
    elif metric in task.relative:
        interval = task.relative[metric]
    elif rule.bound != "point":
        interval = task.intervals.get(metric)
        if interval is None:
            return None, f"no interval for {metric!r} in task {task_name!r}"
    else:
        for role in ("candidate", "system"):
            value = task.metrics.get(role, {}).get(metric)
            if value is not None:
                return float(value), f"{value:.4f}"
        return None, f"the report has no {metric!r} in task {task_name!r}"
    mid = interval.mid
    chosen = {"point": mid, "lower": interval.low, "upper": interval.high}[rule.bound]
    return float(chosen), f"{mid:+.4f} [{interval.low:+.4f}, {interval.high:+.4f}]"


def evaluate_gate(report: EvalReport, spec: GateSpec) -> GateVerdict:
    """Every rule's verdict and the overall one (all rules must pass): the verdict the adapter
    registry reads before it moves an alias."""
    verdicts = []
    for rule in spec.rules:
        value, observed = _observed(rule, report)
        if value is None:
            missing_model = rule.compare_to is not None and not report.models.get(rule.compare_to)
            passed = missing_model and rule.if_missing == "pass"
            why = f"{observed}: {'passes (if_missing: pass)' if passed else 'cannot be checked'}"
        else:
            passed = OPS[rule.op](value, rule.threshold)
            side = {"point": "value", "lower": "lower bound", "upper": "upper bound"}[rule.bound]
            verb = "satisfies" if passed else "violates"
            why = f"{side} {value:+.4f} {verb} {rule.op} {rule.threshold:g}"
        verdicts.append(
            RuleVerdict(
                rule=rule.text(), metric=rule.metric, passed=passed, observed=observed, why=why
            )
        )
    return GateVerdict(name=spec.name, passed=all(v.passed for v in verdicts), verdicts=verdicts)
