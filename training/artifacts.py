"""What a run leaves behind besides the adapter: metrics, loss curve, manifest and model card."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from safetensors import safe_open

from ragdock.contracts.adapter_manifest import AdapterManifest

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
_LIBRARIES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "safetensors")
# Keys vLLM refuses in a LoRA adapter (it loads LoRA A/B matrices only).
_FORBIDDEN_KEY_PARTS = ("lm_head", "embed_tokens", "modules_to_save")


class AdapterError(RuntimeError):
    """The saved adapter would not load in vLLM."""


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def check_adapter_dir(directory: Path) -> list[str]:
    """Verify an adapter directory is what vLLM loads: safetensors of LoRA A/B tensors only.

    Returns:
        The tensor names.

    Raises:
        AdapterError: a pickle file is present, the config carries modules_to_save, or a tensor is
            not a LoRA matrix.
    """
    if any(directory.glob("*.bin")) or any(directory.glob("*.pt")):
        raise AdapterError(f"{directory} holds pickle weights; only safetensors are allowed")
    config = json.loads((directory / ADAPTER_CONFIG).read_text())
    if config.get("modules_to_save"):
        raise AdapterError(f"adapter_config.json has modules_to_save={config['modules_to_save']}")
    with safe_open(str(directory / ADAPTER_WEIGHTS), framework="pt") as handle:
        names = list(handle.keys())
    bad = [n for n in names if ".lora_" not in n or any(p in n for p in _FORBIDDEN_KEY_PARTS)]
    if bad or not names:
        raise AdapterError(f"adapter has non-LoRA tensors (vLLM refuses them): {bad[:5]}")
    return names


class MetricsLog:
    """Append-only JSONL of step and eval records (flushed per line, so a crash keeps them)."""

    def __init__(self, path: Path, *, append: bool) -> None:
        self.path = path
        self._handle = path.open("a" if append else "w", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def plot_loss_curve(history: list[dict[str, Any]], path: Path, title: str) -> None:
    """Train loss per step (and its running mean) with validation loss points, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in history if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in history if "eval_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        steps, losses = zip(*train, strict=True)
        ax.plot(steps, losses, color="tab:blue", alpha=0.35, linewidth=1, label="train (step)")
        window = max(1, len(losses) // 20)
        smooth = [
            sum(losses[max(0, i - window + 1) : i + 1])
            / len(losses[max(0, i - window + 1) : i + 1])
            for i in range(len(losses))
        ]
        ax.plot(steps, smooth, color="tab:blue", linewidth=2, label=f"train (mean of {window})")
    if evals:
        steps, losses = zip(*evals, strict=True)
        ax.plot(steps, losses, "o-", color="tab:orange", linewidth=2, label="validation")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (assistant tokens, nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_model_card(path: Path, manifest: AdapterManifest) -> None:
    """A short README.md describing the adapter, its data and its results."""
    shape, base, data = manifest.adapter, manifest.base_model, manifest.data
    dtype = manifest.hardware.dtype or {}
    lines = [
        f"# LoRA adapter for {base.id}",
        "",
        f"Trained by ragdock ({manifest.method}, r={shape.r}, alpha={shape.alpha:g}, "
        f"targets={shape.target_modules}).",
        "Load it with vLLM (`--enable-lora`) on the same base model, or with peft.",
        f"Computed in {dtype.get('dtype', '?')} ({dtype.get('source', '?')}"
        + (f", CPU {dtype['cpu_model']}" if "cpu_model" in dtype else "")
        + ").",
        "",
        "## Base model",
        f"- id: `{base.id}` (weights digest `{base.digest or base.build_digest}`)",
        "",
        "## Data",
    ]
    for role, info in data.files.items():
        lines.append(
            f"- {role}: `{info.path}` sha256 `{info.sha256[:16]}...` ({info.examples} examples)"
        )
    lines += [
        f"- leakage check against the holdout: {data.leakage.status}",
        "",
        "## Results",
        "| metric | value |",
        "|---|---|",
    ]
    for key, value in manifest.metrics.model_dump().items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"| {key} | {shown} |")
    lines += [
        "",
        "![loss curve](loss_curve.png)",
        "",
        "Training configuration, library versions and hashes: `manifest.json`.",
        "",
    ]
    path.write_text("\n".join(lines))
