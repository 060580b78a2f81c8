"""vLLM's CPU LoRA kernels vs ragdock's grouped ones (engine/cpu_lora.py), in one process.

    python -m eval.perf.cpu_lora_kernels [--reps 30]

One LoRA projection as the engine runs it (shrink x -> rank, then expand rank -> out) at Gemma 3
270M's shapes (hidden 640, MLP 2048), for decode-sized and prefill-sized token batches and 1, 2
or 4 adapters mixed in the batch. Both implementations run interleaved on the same tensors; the
table gives medians in microseconds and the speed-up.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from vllm.lora.ops import torch_ops as vllm_ops

from engine import cpu_lora


def projection(
    ops: object,
    x: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    indices: torch.Tensor,
    out: torch.Tensor,
) -> None:
    buffer = torch.zeros(x.shape[0], a.shape[2], dtype=torch.float32)
    ops.bgmv_shrink(x, a, buffer, indices, 1.0)  # type: ignore[attr-defined]
    ops.bgmv_expand(buffer, b, out, indices, True)  # type: ignore[attr-defined]


def timed(fn: Callable[[], None]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--rank", type=int, default=16)
    args = parser.parse_args()
    torch.manual_seed(0)
    hidden, width, slots = 640, 2048, 4
    a = torch.randn(slots, 1, args.rank, hidden, dtype=torch.bfloat16)
    b = torch.randn(slots, 1, width, args.rank, dtype=torch.bfloat16)
    print(f"| tokens | adapters | vLLM us | ragdock us | speed-up |  (r={args.rank}, 640 -> 2048)")
    print("|---|---|---|---|---|")
    for tokens in (8, 32, 128, 512):
        for mixed in (1, 2, 4):
            x = torch.randn(tokens, hidden, dtype=torch.bfloat16)
            indices = torch.arange(tokens) % mixed
            out = torch.zeros(tokens, width, dtype=torch.bfloat16)
            times: dict[str, list[float]] = {"vllm": [], "ragdock": []}
            for rep in range(args.reps + 3):
                order = [("vllm", vllm_ops), ("ragdock", cpu_lora)]
                for name, ops in order if rep % 2 == 0 else reversed(order):
                    spent = timed(
                        lambda ops=ops, x=x, i=indices, o=out: projection(ops, x, a, b, i, o)
                    )
                    if rep >= 3:  # warm-up
                        times[name].append(spent)
            theirs, ours = statistics.median(times["vllm"]), statistics.median(times["ragdock"])
            print(f"| {tokens} | {mixed} | {theirs:.0f} | {ours:.0f} | {theirs / ours:.2f}x |")


if __name__ == "__main__":
    main()
