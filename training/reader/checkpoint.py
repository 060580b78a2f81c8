"""Resumable reader checkpoints: trained weights, best weights, optimizer, schedule, RNGs, position.

Like the adapter recipe's `training/checkpoint.py` (atomic `step-NNNNNN` directories, tensors in
safetensors, the rest `torch.save`d and loaded with `weights_only=True`), with the reader's own
loop state (a higher-is-better validation metric rather than a loss) and the config fingerprint,
so a resume under a changed config is refused instead of silently mixing two runs.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from grounding.reader.model import load_trained_state
from training.checkpoint import list_checkpoints
from training.reader.loss import trained_state

STATE_FILE = "trainer_state.pt"
WEIGHTS_FILE = "weights.safetensors"
BEST_FILE = "best_weights.safetensors"


@dataclass
class ReaderLoopState:
    """Where the loop is; everything but tensors that a resumed run needs."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_value: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    windows_seen: int = 0
    train_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


class ResumeError(RuntimeError):
    """The checkpoint was written under another configuration."""


def save(
    root: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    loop: ReaderLoopState,
    best: dict[str, torch.Tensor] | None,
    fingerprint: dict[str, Any],
    keep: int,
) -> Path:
    """Write `root/step-NNNNNN` through a temporary name and keep the newest `keep` of them.

    Returns:
        The checkpoint directory.
    """
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{loop.step:06d}"
    tmp = root / f".{final.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.contiguous() for k, v in trained_state(model).items()}, str(tmp / WEIGHTS_FILE))
    if best is not None:
        save_file({k: v.contiguous() for k, v in best.items()}, str(tmp / BEST_FILE))
    numpy_state: Any = np.random.get_state(legacy=True)
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "loop": asdict(loop),
            "fingerprint": fingerprint,
            "rng": {
                "python": random.getstate(),
                # numpy arrays are refused by weights_only loading; a tensor is not.
                "numpy": [
                    numpy_state[0],
                    torch.from_numpy(numpy_state[1].astype(np.int64)),
                    *(float(x) for x in numpy_state[2:]),
                ],
                "torch": torch.get_rng_state(),
            },
        },
        tmp / STATE_FILE,
    )
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def newest(root: Path) -> Path | None:
    """The newest complete checkpoint under `root`, if any."""
    found = list_checkpoints(root)
    return found[-1] if found else None


def restore(
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    fingerprint: dict[str, Any],
) -> tuple[ReaderLoopState, dict[str, torch.Tensor] | None]:
    """Load a checkpoint into freshly built objects and the global RNGs.

    Returns:
        The loop state and the best weights so far (None before any validation).

    Raises:
        ResumeError: the checkpoint's config fingerprint differs (the keys that differ named).
        KeyError: its tensors do not match the model's trained parameters.
    """
    state = torch.load(path / STATE_FILE, weights_only=True)
    if state["fingerprint"] != fingerprint:
        differ = _differences(state["fingerprint"], fingerprint)
        raise ResumeError(
            f"{path} was written under another config ({', '.join(differ[:6])} differ); "
            "restore those settings, or use a new output_dir (or loop.resume=never after "
            "removing the checkpoints)"
        )
    load_trained_state(model, load_file(str(path / WEIGHTS_FILE)))
    best = load_file(str(path / BEST_FILE)) if (path / BEST_FILE).is_file() else None
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    random.setstate(state["rng"]["python"])
    name, keys, pos, has_gauss, cached = state["rng"]["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), cached))
    torch.set_rng_state(state["rng"]["torch"])
    return ReaderLoopState(**state["loop"]), best


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]
