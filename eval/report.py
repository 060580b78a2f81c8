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
    if report.get("gate"):
        lines += ["", render_gate_markdown(report["gate"])]
    return "\n".join(lines) + "\n"


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
