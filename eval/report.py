"""The eval report in three forms: JSON (what the registry and the gate read), Markdown tables
(metric x model, deltas with intervals, the candidate's failures) and PNG charts.

Everything under `tasks` depends only on the models' outputs and the seed, so two runs over the
same outputs write identical bytes there; timings and dates live apart, under `run`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
PREDICTIONS = "predictions.jsonl"
SCHEMA = "ragdock.eval.report/1"

ROLE_ORDER = ("candidate", "previous", "base", "system")


def write_json(report: dict[str, Any], out_dir: Path) -> Path:
    path = out_dir / REPORT_JSON
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)  # a reader never sees half a report
    return path


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "-" if value is None else str(value)


def _interval(iv: dict[str, float]) -> str:
    mid = iv["delta"] if "delta" in iv else iv["value"]
    return f"{mid:+.3f} [{iv['low']:+.3f}, {iv['high']:+.3f}]"


def render_markdown(report: dict[str, Any]) -> str:
    """Human-readable tables for the whole report."""
    models = report["models"]
    lines = [f"# Eval report: {report['suite']['name']}", ""]
    lines.append("| role | model |")
    lines.append("|---|---|")
    lines += [f"| {role} | {models.get(role) or '(none)'} |" for role in ROLE_ORDER[:3]]
    if report.get("holdout"):
        h = report["holdout"]
        lines += [
            "",
            f"Frozen holdout `{h['path']}` sha256 `{h['sha256'][:16]}...`: {h['status']}.",
        ]
    for name, task in report["tasks"].items():
        roles = [r for r in ROLE_ORDER if r in task["metrics"]]
        metrics = sorted({m for r in roles for m in task["metrics"][r]})
        lines += ["", f"## {name} ({task['kind']})", ""]
        lines.append(
            "| metric | "
            + " | ".join(
                f"{r} ({models.get(r, '') or ''})" if r != "system" else "value" for r in roles
            )
            + " |"
        )
        lines.append("|---" * (len(roles) + 1) + "|")
        for metric in metrics:
            row = [_fmt(task["metrics"][r].get(metric)) for r in roles]
            lines.append(f"| {metric} | " + " | ".join(row) + " |")
        for comparison, deltas in task.get("deltas", {}).items():
            if not deltas:
                continue
            level = next(iter(deltas.values()))["level"]
            lines += [
                "",
                f"Candidate {comparison.replace('_', ' ')}: delta "
                f"[{level:.0%} paired bootstrap interval]",
                "",
                "| metric | delta [interval] | n |",
                "|---|---|---|",
            ]
            lines += [f"| {m} | {_interval(iv)} | {iv['n']} |" for m, iv in sorted(deltas.items())]
        if task.get("intervals"):
            lines += ["", "Candidate's own values [95% bootstrap interval]:", "",
                      "| metric | value [interval] | n |", "|---|---|---|"]  # fmt: skip
            own = sorted(task["intervals"].items())
            lines += [f"| {m} | {_interval(iv)} | {iv['n']} |" for m, iv in own]
        if task.get("relative"):
            lines += [
                "",
                "Candidate relative to base (positive = worse):",
                "",
                "| measure | value [interval] |",
                "|---|---|",
            ]
            lines += [f"| {m} | {_interval(iv)} |" for m, iv in sorted(task["relative"].items())]
        lines += ["", *(f"- {note}" for note in task.get("notes", []))] if task.get("notes") else []
        if task.get("failures"):
            lines += ["", "Where the candidate fails (first 8):", ""]
            for failure in task["failures"][:8]:
                lines.append(_failure_line(failure))
    lines += render_answerability(report)
    signature = report.get("signature")
    lines += [
        "",
        f"Signed with the platform's key `{signature['key_id']}`: the registry judges it with "
        "the platform's own gate."
        if signature
        else "Unsigned: the registry keeps it as evidence; it cannot promote.",
    ]
    if report.get("gate"):
        lines += ["", render_gate_markdown(report["gate"])]
    return "\n".join(lines) + "\n"


def _answerability_sets(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Signal summaries by question set: the calibration's validation split and, for every
    grounding task, the candidate's questions there."""
    sets: dict[str, dict[str, Any]] = {}
    if report.get("calibration"):
        sets["validation (calibration)"] = report["calibration"].get("validation") or {}
    for name, task in report["tasks"].items():
        found = ((task.get("data") or {}).get("answerability") or {}).get("candidate")
        if found:
            sets[f"{name} (candidate)"] = found
    return sets


def render_answerability(report: dict[str, Any]) -> list[str]:
    """AUROC of each answerability signal per question set, and the calibrated operating point."""
    sets = _answerability_sets(report)
    if not sets:
        return []
    names = sorted({s for data in sets.values() for s in data.get("signals", {})})
    lines = ["", "## Answerability (answer or abstain)", ""]
    lines.append("AUROC of each signal, answerable vs unanswerable (0.5 = chance):")
    lines += ["", "| signal | " + " | ".join(sets) + " |", "|---" * (len(sets) + 1) + "|"]
    for name in names:
        cells = []
        for data in sets.values():
            item = data.get("signals", {}).get(name) or {}
            value = item.get("auroc")
            cells.append("n/a" if value is None else f"{value:.3f} (n={item.get('n')})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    combined = []
    for data in sets.values():
        value = data.get("combined_auroc_cv", data.get("score_auroc"))
        combined.append("n/a" if value is None else f"{value:.3f}")
    lines.append("| calibrated score | " + " | ".join(combined) + " |")
    calibration = report.get("calibration")
    if calibration:
        at = (calibration.get("validation") or {}).get("at_threshold") or {}
        lines += [
            "",
            f"Threshold {calibration['threshold']:.3f} on the calibrated score (target "
            f"hallucination {calibration['target_hallucination']}): on validation, hallucination "
            f"{at.get('hallucination', float('nan')):.3f} and false abstention "
            f"{at.get('false_abstention', float('nan')):.3f}. Features "
            f"{', '.join(calibration['features'])}; the curve is `answerability.png`.",
        ]
        if calibration.get("enforced") is False:
            lines.append(
                "The calibration is recorded but NOT enforced (that threshold would refuse more "
                "than its allowed share of answerable questions): the model decides, and the "
                "score is reported."
            )
    for label, data in sets.items():
        if "at_threshold" in data and "threshold" in data:
            at = data["at_threshold"]
            lines.append(
                f"- {label}: at threshold {data['threshold']:.3f} the score alone gives "
                f"hallucination {at['hallucination']:.3f}, false abstention "
                f"{at['false_abstention']:.3f} (before the support check)."
            )
    return lines


def plot_answerability(report: dict[str, Any], out_dir: Path) -> Path | None:
    """`answerability.png`: hallucination vs false abstention as the threshold moves, per
    question set, with the calibrated threshold marked (None when nothing was scored)."""
    from eval.answerability import plot_tradeoff

    curves, chosen = {}, {}
    calibrated = (report.get("calibration") or {}).get("threshold")
    for label, data in _answerability_sets(report).items():
        if not data.get("curve"):
            continue
        curves[label] = data["curve"]
        threshold = data.get("threshold", calibrated)
        if data.get("at_threshold") and threshold is not None:
            chosen[label] = {"threshold": threshold, **data["at_threshold"]}
        elif calibrated is not None:  # not applied here: where the calibrated one would sit
            point = min(data["curve"], key=lambda p: abs(p["threshold"] - calibrated))
            chosen[label] = {**point, "threshold": calibrated}
    if not curves:
        return None
    title = f"answerability: {report['models'].get('candidate')}"
    return plot_tradeoff(curves, chosen, out_dir / "answerability.png", title)


def _failure_line(failure: dict[str, Any]) -> str:
    line = f"- `{failure['id']}` {failure.get('verdict', '')}".rstrip()
    if failure.get("question"):
        line += f": {failure['question']}"
    want = failure.get("answers", failure.get("reference", ""))
    if failure.get("output") or want:
        line += f" -> {failure.get('output', '')!r} (expected {want!r})"
    return line


def render_gate_markdown(gate: dict[str, Any]) -> str:
    lines = [
        f"## Gate `{gate['name']}`: {'PASSED' if gate['passed'] else 'FAILED'}",
        "",
        "| rule | observed | verdict |",
        "|---|---|---|",
    ]
    for verdict in gate["verdicts"]:
        mark = "pass" if verdict["passed"] else "FAIL"
        lines.append(f"| {verdict['rule']} | {verdict['observed']} | {mark} |")
    return "\n".join(lines)


def plot_charts(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """One PNG per task: metric values per model, and the candidate's deltas with intervals."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display here
    import matplotlib.pyplot as plt

    written = []
    for name, task in report["tasks"].items():
        roles = [r for r in ROLE_ORDER if r in task["metrics"]]
        metrics = sorted(
            {
                m
                for r in roles
                for m, v in task["metrics"][r].items()
                if isinstance(v, float) and 0.0 <= v <= 1.0
            }
        )
        comparisons = {k: v for k, v in task.get("deltas", {}).items() if v}
        if not metrics:
            continue
        panels = 1 + len(comparisons)
        fig, axes = plt.subplots(
            1, panels, figsize=(6 * panels, 0.45 * len(metrics) + 1.8), squeeze=False
        )
        ax = axes[0][0]
        height = 0.8 / len(roles)
        for offset, role in enumerate(roles):
            values = [task["metrics"][role].get(m, 0.0) for m in metrics]
            positions = [i + offset * height for i in range(len(metrics))]
            ax.barh(positions, values, height=height, label=f"{role}")
        ax.set_yticks([i + 0.4 - height / 2 for i in range(len(metrics))], metrics)
        ax.set_xlim(0, 1)
        ax.invert_yaxis()
        ax.legend(loc="lower right", fontsize=8)
        ax.set_title(f"{name}: scores")
        for ax, (comparison, deltas) in zip(axes[0][1:], comparisons.items(), strict=True):
            names = sorted(deltas)
            mids = [deltas[m]["delta"] for m in names]
            errors = [
                [mid - deltas[m]["low"] for m, mid in zip(names, mids, strict=True)],
                [deltas[m]["high"] - mid for m, mid in zip(names, mids, strict=True)],
            ]
            ax.errorbar(mids, range(len(names)), xerr=errors, fmt="o", capsize=3)
            ax.axvline(0, color="grey", linewidth=0.8)
            ax.set_yticks(range(len(names)), names)
            ax.invert_yaxis()
            ax.set_title(f"candidate {comparison.replace('_', ' ')} (95% CI)")
        fig.tight_layout()
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
