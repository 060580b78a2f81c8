"""The roofline a benchmark's figures are measured against (the machine line they all state
first is `eval.perf.bench.machine_line`).

`Roofline` is a matmul probe shaped like the model. It times `torch.nn.functional.linear` on every
linear layer of one transformer block (q/k/v/o and the gated MLP) at a prompt-sized batch, in the
run's dtype and thread count, and counts the non-embedding parameters from the model's config.
Prefill cannot beat `flops / (2 * params)` tokens per second with these kernels, and a training
step (forward, then backward through frozen weights) not `flops / (4 * params)`, so the ratio of a
measured rate to that bound says how much of the machine the path uses.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from adapters.validation import module_shapes_from_config


@dataclass(frozen=True)
class ModelShape:
    """A decoder's linear layers (in, out) per block, and its number of blocks."""

    layer_shapes: tuple[tuple[int, int], ...]
    layers: int

    @classmethod
    def from_config(cls, model_dir: Path) -> ModelShape:
        """Read from config.json, with the shapes the adapter validator checks LoRA against."""
        config = json.loads((model_dir / "config.json").read_text())
        shapes = module_shapes_from_config(config)
        if shapes is None:
            raise ValueError(f"{model_dir / 'config.json'} does not describe a Gemma/Llama decoder")
        layers = int((config.get("text_config") or config)["num_hidden_layers"])
        return cls(tuple(shapes.values()), layers)

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of one block's linear layers: q, k, v, o, gate, up, down."""
        return list(self.layer_shapes)

    @property
    def params(self) -> int:
        """Non-embedding linear parameters (what each token multiplies through)."""
        return self.layers * sum(i * o for i, o in self.linear_shapes())


@dataclass(frozen=True)
class Roofline:
    """The model-shaped matmul probe's answer on this machine."""

    shape: ModelShape
    dtype: str
    tokens: int
    gflops: float

    @property
    def prefill_tokens_per_s(self) -> float:
        """Forward tokens/s if every FLOP ran at the probe's rate (attention not counted)."""
        return self.gflops * 1e9 / (2 * self.shape.params)

    @property
    def train_tokens_per_s(self) -> float:
        """Training tokens/s at the probe's rate: forward (2N) plus the backward pass through
        frozen weights to the adapters (2N); the adapters' own FLOPs are left out."""
        return self.gflops * 1e9 / (4 * self.shape.params)

    def describe(self) -> str:
        return (
            f"roofline: model-shaped matmul probe {self.gflops:.0f} GFLOP/s ({self.dtype}, "
            f"{self.tokens} rows, {self.shape.params / 1e6:.1f}M non-embedding params) -> "
            f"prefill <= {self.prefill_tokens_per_s:.0f} tokens/s, "
            f"training <= {self.train_tokens_per_s:.0f} tokens/s"
        )


def measure_roofline(
    model_dir: Path, dtype: str, tokens: int = 1024, budget_s: float = 3.0
) -> Roofline:
    """Time one block's linear layers at `tokens` rows; the fastest of repeated passes.

    The fastest, not the median: a bound is what the machine can do, and noise from other
    processes only ever slows a pass down.
    """
    import torch

    from ragdock.compute_dtype import torch_dtype

    shape = ModelShape.from_config(model_dir)
    torch_type = torch_dtype(dtype)  # type: ignore[arg-type]
    inputs = {i: torch.randn(tokens, i, dtype=torch_type) for i, _ in shape.linear_shapes()}
    weights = [torch.randn(o, i, dtype=torch_type) for i, o in shape.linear_shapes()]
    flops = sum(2 * tokens * i * o for i, o in shape.linear_shapes())

    def one_pass() -> float:
        started = time.perf_counter()
        for weight in weights:
            torch.nn.functional.linear(inputs[weight.shape[1]], weight)
        return time.perf_counter() - started

    for _ in range(3):  # warm the kernels and their caches
        one_pass()
    times: list[float] = []
    deadline = time.monotonic() + budget_s
    while time.monotonic() < deadline or len(times) < 5:
        times.append(one_pass())
    return Roofline(shape, dtype, tokens, flops / min(times) / 1e9)
