"""The eval report (`report.json`, written by `ragdock eval`), the gate verdict inside it, the
platform's signature on it, and the verdict the platform itself reaches on it (what the adapter
registry reads before it moves an alias).

`schema` is the report's version. Everything under `tasks` depends only on the models' outputs
and the seed; timings live under `run`. The report's own `gate` is what the run's gate said: a
claim any uploader can write. The registry promotes on a `PlatformVerdict`, which it computes
from a report signed with the platform's key, against the platform's own gate file.
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


class ReportSignature(Contract):
    """The platform's mark on a report it measured: HMAC-SHA256 with the platform's signing key
    over the report's canonical content (every field but `gate` and `signature`; see
    `eval.signing`). The gate is left out because no reader takes a verdict from a report: it
    is judged again by whoever reads it."""

    alg: Literal["hmac-sha256"] = "hmac-sha256"
    key_id: str = Field(description="Which key signed: the first 16 hex digits of its sha256.")
    value: str = Field(description="The HMAC, hex.")


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
    signature: ReportSignature | None = None

    model_config = Contract.model_config | {"populate_by_name": True}

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class PlatformVerdict(Contract):
    """What the platform concluded from a version's eval report, computed by the platform (never
    read from the report):

    - `passed` / `failed`: the report is signed with the platform's key for this very version,
      and the platform's gate file, applied to its metrics, passed / failed (`gate` holds that
      verdict, rule by rule);
    - `unverified`: the report is kept as evidence but the platform did not measure it
      (unsigned, a signature that does not verify, or measured for another version);
    - `missing`: the version has no eval report.
    Only `passed` promotes (short of a platform admin's audited force)."""

    status: Literal["passed", "failed", "unverified", "missing"]
    reason: str = Field(description="Why, in a clause: `its gate failed (...)`.")
    gate: GateVerdict | None = Field(
        None, description="The platform's gate applied to the report (signed reports only)."
    )

    @property
    def passed(self) -> bool:
        return self.status == "passed"


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
