"""Resumable checkpoints: adapter weights, optimizer, scheduler, RNG states and loop position.

A checkpoint is a directory `checkpoints/step-000123/` written atomically (temporary name, then
rename) so a crash never leaves a half checkpoint that `latest` would pick. Resuming restores the
same step, optimizer moments, learning-rate schedule, every RNG (python, numpy, torch) and the
position in the epoch's data order, so the resumed run computes the same losses as one that was
never interrupted. Training state is saved with `torch.save` and loaded with `weights_only=True`;
adapter weights are safetensors like the final output.
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

STATE_FILE = "trainer_state.pt"
ADAPTER_FILE = "adapter_weights.safetensors"
_PREFIX = "step-"


@dataclass
class LoopState:
    """Where the loop is: everything besides tensors that a resumed run needs."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_eval_loss: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    tokens_seen: int = 0
    train_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable (LoRA) tensors by parameter name, detached copies."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(
    root: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    loop: LoopState,
    best_weights: dict[str, torch.Tensor] | None,
    keep: int,
) -> Path:
    """Write `root/step-NNNNNN` and delete all but the newest `keep` checkpoints.

    Returns:
        The checkpoint directory.
    """
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{_PREFIX}{loop.step:06d}"
    tmp = root / f".{final.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(
        {k: v.contiguous() for k, v in trainable_state(model).items()}, str(tmp / ADAPTER_FILE)
    )
    if best_weights is not None:
        save_file(
            {k: v.contiguous() for k, v in best_weights.items()},
            str(tmp / "best_weights.safetensors"),
        )
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "loop": asdict(loop),
            "rng": {
                "python": random.getstate(),
                "numpy": _numpy_state_to_tensors(),
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


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX)]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX) :]))


def resolve_resume(path: Path, root: Path) -> Path:
    """`latest` means the newest checkpoint under `root`.

    Raises:
        FileNotFoundError: no such checkpoint, with what exists.
    """
    if str(path) == "latest":
        found = list_checkpoints(root)
        if not found:
            raise FileNotFoundError(f"loop.resume_from=latest but {root} holds no checkpoint")
        return found[-1]
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint (no {STATE_FILE})")
    return path


def load_checkpoint(
    path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> tuple[LoopState, dict[str, torch.Tensor] | None]:
    """Restore a checkpoint into freshly built objects (same config) and the global RNGs.

    Returns:
        The loop state and the best weights so far (if validation had run).

    Raises:
        KeyError: the checkpoint's tensors do not match the model's trainable parameters.
    """
    weights = load_file(str(path / ADAPTER_FILE))
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(weights) != set(params):
        missing = sorted(set(params) ^ set(weights))[:3]
        raise KeyError(f"{path} does not match this model's adapter (e.g. {missing}); same config?")
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)
    best_path = path / "best_weights.safetensors"
    best = load_file(str(best_path)) if best_path.is_file() else None
    state = torch.load(path / STATE_FILE, weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    random.setstate(state["rng"]["python"])
    _numpy_state_from_tensors(state["rng"]["numpy"])
    torch.set_rng_state(state["rng"]["torch"])
    return LoopState(**state["loop"]), best


def _numpy_state_to_tensors() -> dict[str, Any]:
    # numpy arrays are not allowed by weights_only loading; tensors and ints are.
    state: Any = np.random.get_state(legacy=True)
    name, keys, pos, has_gauss, cached = state
    return {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }


def _numpy_state_from_tensors(state: dict[str, Any]) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state((state["name"], keys, state["pos"], state["has_gauss"], state["cached"]))
