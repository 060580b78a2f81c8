"""The promotion gate of grounding readers: rules over the figures in a reader's manifest.

Trust: the figures come from the reader's own training run (`validation`, measured on its
held-out articles, and the `decision` that `ragdock eval calibrate-reader` fitted), written into
its manifest.json; the registry reads them as validated and stored at push, never from a file
that can change afterwards. That is the same trust as the manifest itself, not a measurement by
the platform: unlike an adapter's eval report, no platform key signs them (`eval.signing` signs
eval reports of served adapters, which readers do not have yet). The gate never reads a claimed
"passed": it computes the verdict from the numbers.

The gate file has the adapter gates' shape (`eval.gates.GateSpec`), with plain thresholds only;
a reader without a calibrated decision fails whatever its rules say, because the gateway would
then decide by the uncalibrated margin alone.
"""

from __future__ import annotations

from pathlib import Path

from eval.gates import OPS, GateSpec, Rule, load_gate
from eval.suite import SuiteError
from ragdock.contracts.eval_report import GateVerdict, RuleVerdict
from ragdock.contracts.reader import ReaderManifest

# Shipped in the wheel (eval/suites/*.yaml); RAGDOCK_READER_PROMOTION_GATE names another.
DEFAULT_READER_GATE = Path(__file__).parent / "suites" / "reader.gate.yaml"
CALIBRATED = "decision is calibrated"


def load_reader_gate(path: Path | None = None) -> GateSpec:
    """Read a reader gate file (default: `DEFAULT_READER_GATE`).

    Raises:
        SuiteError: unreadable, invalid, or a rule that compares to a baseline or reads an
            interval bound (a reader's figures have neither).
    """
    spec = load_gate(path or DEFAULT_READER_GATE)
    for rule in spec.rules:
        if rule.compare_to is not None or rule.bound != "point":
            raise SuiteError(
                f"{path or DEFAULT_READER_GATE}: rule `{rule.text()}`: reader gates take plain "
                "thresholds only (drop compare_to and bound)"
            )
    return spec


def reader_figures(manifest: ReaderManifest) -> dict[str, float]:
    """Every figure a rule may name, as `SECTION.NAME` (see eval/suites/reader.gate.yaml)."""
    figures = {f"validation.{k}": v for k, v in manifest.validation.items() if v is not None}
    decision = manifest.decision
    if decision is not None:
        for field in ("hallucination", "false_abstention", "target_hallucination"):
            figures[f"decision.{field}"] = float(getattr(decision, field))
        figures["decision.questions"] = float(decision.questions)
        figures["decision.answerable"] = float(decision.answerable)
        for signal in decision.auroc:
            if signal.auroc is not None:
                figures[f"decision_auroc.{signal.signal}"] = signal.auroc
    return figures


def evaluate_reader_gate(manifest: ReaderManifest, spec: GateSpec) -> GateVerdict:
    """Every rule's verdict on the manifest's figures, plus the calibrated-decision rule; all
    must pass. A figure the manifest lacks fails its rule (a gate that cannot be checked must
    not pass)."""
    calibrated = manifest.decision is not None
    fix = "no calibrated decision: fit one with `ragdock eval calibrate-reader READER_DIR`"
    verdicts = [
        RuleVerdict(
            rule=CALIBRATED,
            metric="decision",
            passed=calibrated,
            observed="fitted" if calibrated else "none",
            why="fitted by calibrate-reader" if calibrated else fix,
        )
    ]
    figures = reader_figures(manifest)
    verdicts += [_rule_verdict(rule, figures.get(rule.metric)) for rule in spec.rules]
    return GateVerdict(name=spec.name, passed=all(v.passed for v in verdicts), verdicts=verdicts)


def _rule_verdict(rule: Rule, value: float | None) -> RuleVerdict:
    if value is None:
        return RuleVerdict(
            rule=rule.text(), metric=rule.metric, passed=False, observed="missing",
            why=f"the manifest has no {rule.metric!r}: cannot be checked",
        )  # fmt: skip
    passed = OPS[rule.op](value, rule.threshold)
    verb = "satisfies" if passed else "violates"
    return RuleVerdict(
        rule=rule.text(), metric=rule.metric, passed=passed, observed=f"{value:.4f}",
        why=f"value {value:+.4f} {verb} {rule.op} {rule.threshold:g}",
    )  # fmt: skip
