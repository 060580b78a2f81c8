"""The platform's verdict on an eval report: what the adapter registry promotes on.

A report is evidence; a verdict is computed. The platform judges a report only when it measured
it, i.e. the report carries the platform's signature (`eval.signing`) and was measured for the
very version it is attached to; then it applies its own gate file to the report's metrics. The
report's own `gate` (what the run's gate said, or what an uploader wrote) is never read here.
"""

from __future__ import annotations

import logging
from pathlib import Path

from eval.gates import GateSpec, evaluate_gate, load_gate
from eval.signing import SigningKey
from ragdock.contracts.eval_report import EvalReport, PlatformVerdict

log = logging.getLogger(__name__)

# The gate a platform judges by when its operator names none (RAGDOCK_PROMOTION_GATE).
DEFAULT_GATE = Path(__file__).parent / "suites" / "grounded-raft-270m.gate.yaml"


class PlatformJudge:
    """Judges eval reports with the platform's key and gate.

    Args:
        key: the platform's signing key; None: nothing verifies (every report is unverified).
        gate: the platform's gate; None: nothing passes (every signed report fails), for a
            platform whose gate file is missing.
    """

    def __init__(self, key: SigningKey | None, gate: GateSpec | None) -> None:
        self.key = key
        self.gate = gate

    def __repr__(self) -> str:
        return f"PlatformJudge(key={self.key!r}, gate={self.gate.name if self.gate else None!r})"

    def __call__(self, report: EvalReport | None, name: str, version: str) -> PlatformVerdict:
        """The verdict on `report` as the eval report of `name@version`."""
        if report is None:
            return PlatformVerdict(status="missing", reason="it has no eval report")
        problem = self._unmeasured(report, name, version)
        if problem is not None:
            return PlatformVerdict(
                status="unverified",
                reason=f"its eval report is not platform-measured ({problem}): kept as "
                "evidence, it cannot pass the platform's gate",
            )
        if self.gate is None:
            return PlatformVerdict(
                status="failed",
                reason="this platform has no promotion gate to judge it by (set "
                "RAGDOCK_PROMOTION_GATE to a gate file)",
            )
        gate = evaluate_gate(report, self.gate)
        if gate.passed:
            return PlatformVerdict(
                status="passed", reason=f"the platform's gate `{gate.name}` passed", gate=gate
            )
        failed = ", ".join(gate.failed_rules())
        return PlatformVerdict(
            status="failed",
            reason=f"its metrics fail the platform's gate `{gate.name}` ({failed})",
            gate=gate,
        )

    def _unmeasured(self, report: EvalReport, name: str, version: str) -> str | None:
        """Why the platform cannot count `report` as its own measurement of name@version."""
        if report.signature is None:
            return "it is unsigned"
        if self.key is None:
            return "this platform has no signing key to verify it with"
        if not self.key.verifies(report):
            return "its signature does not verify with this platform's key"
        measured = report.candidate_record
        if (measured.name, measured.version) != (name, version):
            return f"it was measured for {measured.name}@{measured.version}"
        return None


def load_judge(key: SigningKey | None, gate_file: Path | None) -> PlatformJudge:
    """The judge over `key` and the gate in `gate_file` (default: `DEFAULT_GATE`, the shipped
    grounded-answering gate; when a package install lacks it, nothing passes, logged).

    Raises:
        SuiteError: `gate_file` was given and cannot be read or is not a valid gate.
    """
    if gate_file is not None:
        return PlatformJudge(key, load_gate(gate_file))
    if not DEFAULT_GATE.is_file():
        log.warning(
            "no promotion gate: %s is not installed and RAGDOCK_PROMOTION_GATE is not set, so "
            "no eval report passes (a platform admin can still force a promotion)",
            DEFAULT_GATE,
        )
        return PlatformJudge(key, None)
    return PlatformJudge(key, load_gate(DEFAULT_GATE))
