"""The eval report (`report.json`, written by `ragdock eval`) and the gate verdict inside it, which
the adapter registry reads before it moves an alias.

`schema` is the report's version. Everything under `tasks` depends only on the models' outputs
and the seed; timings live under `run`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer

from ragdock.contracts.base import Contract, ContractError, parse

REPORT_SCHEMA: Literal["ragdock.eval.report/1"] = "ragdock.eval.report/1"
_FIX = (
    "reports are written by `ragdock eval SUITE.yaml` and gated by `ragdock eval gate`: attach "
    "the report.json those commands wrote, or correct the field named"
)


class RuleVerdict(Contract):
    rule: str = Field(description="The rule in words, e.g. `grounding.hallucination <= 0.1`.")
    metric: str
    passed: bool
    observed: str = Field(description="The value the rule read, with its interval.")
    why: str


class GateVerdict(Contract):
    """Every rule's verdict and the overall one (all rules must pass)."""

    name: str
    passed: bool
    verdicts: list[RuleVerdict]

    def failed_rules(self) -> list[str]:
        return [v.rule for v in self.verdicts if not v.passed]


class Interval(Contract):
    """A bootstrap interval: `delta` for a paired difference, `value` for a metric's own."""

    low: float
    high: float
    value: float | None = None
    delta: float | None = None
    level: float | None = None
    n: int | None = None

    @model_serializer(mode="wrap")
    def _without_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # An interval carries `value` or `delta`, never both: the other is not written as null.
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None}

    @property
    def mid(self) -> float:
        mid = self.delta if self.delta is not None else self.value
        return float("nan") if mid is None else mid


class TaskReport(Contract):
    kind: str
    data: dict[str, Any] = Field(description="The task's data files with their sha256.")
    metrics: dict[str, dict[str, Any]] = Field(description="Role -> metric -> value.")
    deltas: dict[str, dict[str, Interval]] = Field(description="vs_base / vs_previous.")
    intervals: dict[str, Interval]
    relative: dict[str, Interval]
    failures: list[dict[str, Any]]
    notes: list[str]


class SuiteRef(Contract):
    name: str
    path: str
    sha256: str


class CandidateRef(Contract):
    name: str
    version: str


class EvalReport(Contract):
    schema_: Literal["ragdock.eval.report/1"] = Field(REPORT_SCHEMA, alias="schema")
    suite: SuiteRef
    models: dict[str, str | None] = Field(description="candidate, base, previous -> model.")
    candidate_record: CandidateRef
    holdout: dict[str, Any] | None
    settings: dict[str, Any]
    tasks: dict[str, TaskReport]
    run: dict[str, Any]
    calibration: dict[str, Any] | None = None
    gate: GateVerdict | None = None

    model_config = Contract.model_config | {"populate_by_name": True}

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def parse_eval_report(data: object, *, source: str) -> EvalReport:
    """Raises ContractError: the data is not an eval report this version reads."""
    if isinstance(data, dict) and data.get("schema") not in (None, REPORT_SCHEMA):
        raise ContractError(
            source,
            [("schema", f"{data.get('schema')!r} is not {REPORT_SCHEMA!r}")],
            "upgrade ragdock, or run the eval again with this version",
        )
    return parse(EvalReport, data, source=source, fix=_FIX)


def parse_gate_verdict(data: object, *, source: str) -> GateVerdict:
    return parse(GateVerdict, data, source=source, fix=_FIX)
