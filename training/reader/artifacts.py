"""What a reader run leaves besides its weights: the training curve, the model card, the eval
summary. (The manifest is `ragdock.contracts.reader.ReaderManifest`.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ragdock.contracts.reader import ReaderManifest

EVAL_SUMMARY = "eval_summary.json"
CURVE = "training_curve.png"
_CARD_METRICS = (
    "auroc_gold",
    "auroc_hard_negatives",
    "auroc_all",
    "forced_em",
    "forced_f1",
    "has_answer_f1_at_0",
    "squad2_f1_at_0",
    "best_f1",
    "best_f1_with_negatives",
)


def plot_curve(
    history: list[dict[str, Any]], path: Path, *, select_metric: str, title: str
) -> None:
    """Train loss per step (and a running mean) and the validation metrics by step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    steps = [(r["step"], r["loss"]) for r in history if "loss" in r]
    evals = [r for r in history if "eval" in r]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    if steps:
        xs, ys = zip(*steps, strict=True)
        window = max(1, len(ys) // 25)
        smooth = [sum(ys[max(0, i - window + 1) : i + 1]) / (i + 1 - max(0, i - window + 1))
                  for i in range(len(ys))]  # fmt: skip
        left.plot(xs, ys, color="tab:blue", alpha=0.3, linewidth=1, label="train (step)")
        left.plot(xs, smooth, color="tab:blue", linewidth=2, label=f"train (mean of {window})")
    left.set_xlabel("optimizer step")
    left.set_ylabel("span loss (mean start/end cross-entropy)")
    left.grid(alpha=0.3)
    left.legend()
    for key, color in (
        ("auroc_gold", "tab:orange"),
        ("auroc_hard_negatives", "tab:green"),
        ("auroc_all", "tab:red"),
        ("forced_f1", "tab:purple"),
    ):
        points = [(r["step"], r["eval"][key]) for r in evals if r["eval"].get(key) is not None]
        if points:
            xs, ys = zip(*points, strict=True)
            style = "o-" if key == select_metric else ".--"
            right.plot(xs, ys, style, color=color, label=key)
    right.set_xlabel("optimizer step")
    right.set_ylabel("validation")
    right.set_ylim(0.0, 1.0)
    right.grid(alpha=0.3)
    right.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_eval_summary(path: Path, summary: dict[str, Any]) -> None:
    path.write_text(json.dumps(summary, indent=2) + "\n")


def _shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def write_model_card(path: Path, manifest: ReaderManifest, results: dict[str, Any]) -> None:
    """README.md: what the reader is, what it was trained on, and how well it reads."""
    base, data, training = manifest.base, manifest.data, manifest.training
    shape = (
        f"LoRA r={manifest.lora.r}, alpha={manifest.lora.alpha} on {manifest.lora.target_modules}"
        " + span head"
        if manifest.lora
        else "full fine-tune"
    )
    dtype = (manifest.hardware.dtype or {}).get("dtype", "?")
    lines = [
        f"# Reader on {base.package} {base.version}",
        "",
        "An extractive reader: for a question and a chunk it gives the best answer span, its",
        "score and a no-answer ([CLS]) score; the margin (span - null) says whether the chunk",
        "answers the question. Load it with `grounding.reader.reader.Reader.load(this_dir)`.",
        "",
        f"- {shape}; weights `{manifest.weights.file}` ({manifest.weights.bytes / 1e6:.1f} MB, "
        f"from step {manifest.weights.from_step}).",
        f"- base weights sha256 `{base.weights_sha256[:16]}...` (another base is refused)",
        f"- windows of {manifest.decoding.max_seq_len} tokens (stride {manifest.decoding.stride}), "
        f"spans up to {manifest.decoding.max_answer_tokens} tokens; computed in {dtype}.",
        f"- {training.steps} steps ({training.epochs:.2f} epochs), "
        f"{training.seconds_per_step:.2f} s/step, best {training.select_metric} "
        f"{_shown(training.best_value)} at step {training.best_step}"
        + (" (stopped early)" if training.stopped_early else ""),
        "",
        "## Data (split by article)",
    ]
    for item in data.files:
        lines.append(f"- `{item.path}` sha256 `{item.sha256[:16]}...` ({item.questions} questions)")
    for split, titles in data.splits.items():
        counts = data.counts.get(split, {})
        lines.append(f"- {split}: {', '.join(titles) or '-'} ({counts.get('questions', 0)} q)")
    lines += ["", "## Results", "", "| split | " + " | ".join(_CARD_METRICS) + " |"]
    lines.append("|---|" + "---|" * len(_CARD_METRICS))
    for split, metrics in results.items():
        row = " | ".join(_shown(metrics.get(k)) for k in _CARD_METRICS)
        lines.append(f"| {split} | {row} |")
    if manifest.threshold is not None:
        t = manifest.threshold
        lines += [
            "",
            f"Threshold: answer when margin > {t.value:.3f} ({t.objective} {t.achieved:.3f} on "
            f"{t.split}: {', '.join(t.articles)}).",
        ]
    lines += [
        "",
        f"![training curve]({CURVE})",
        "",
        "Config, versions, digests: `manifest.json`.",
        "",
    ]
    path.write_text("\n".join(lines))
