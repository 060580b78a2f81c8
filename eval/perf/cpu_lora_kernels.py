"""vLLM's CPU LoRA path vs ragdock's (engine/cpu_lora.py), one layer at a time, in one process.

    python -m eval.perf.cpu_lora_kernels [--reps 30] [--rank 16]

Both run through vLLM's real `PunicaWrapperCPU` (metadata from a real `LoRAMapping`, then
`add_lora_linear`), at Gemma 3 270M's four LoRA layer shapes: the fused q/k/v projection, o, the
fused gate/up projection and down. Batches are decode-sized to prefill-sized, with every token on
one adapter, or 2 or 4 adapters interleaved token by token, 4 slots filled. Interleaved reps; the
table gives medians in microseconds per layer call and the speed-up.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from vllm.lora.layers.utils import LoRAMapping
from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

from engine import cpu_lora
from ragdock.compute_dtype import choose_dtype, torch_dtype

SLOTS = 4
# name: (input width, output slices) at Gemma 3 270M's sizes
LAYERS = {
    "qkv": (640, (1024, 256, 256)),
    "o": (1024, (640,)),
    "gate_up": (640, (2048, 2048)),
    "down": (2048, (640,)),
}


class Ours(PunicaWrapperCPU):
    """vLLM's wrapper with ragdock's two methods, without patching vLLM's class."""

    update_metadata = cpu_lora.with_step_plan(PunicaWrapperCPU.update_metadata)
    add_lora_linear = cpu_lora.add_lora_linear  # type: ignore[assignment]  # returns y too


def wrapper(cls: type[PunicaWrapperCPU], tokens: int, adapters: int) -> PunicaWrapperCPU:
    wrap = cls(max_num_batched_tokens=tokens, max_batches=tokens, device="cpu")
    lora_ids: list[int | None] = [i + 1 for i in range(SLOTS)]
    per_token = tuple(1 + t % adapters for t in range(tokens))
    mapping = LoRAMapping(per_token, per_token, is_prefill=True)
    wrap.update_metadata(mapping, lora_ids, SLOTS + 1, 262144)
    return wrap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--dtype", default="auto", help="auto (the engine's choice), bf16, fp32")
    args = parser.parse_args()
    torch.manual_seed(0)
    choice = choose_dtype(args.dtype, home=None)
    dtype = torch_dtype(choice.dtype)
    from eval.perf.bench import machine_line, markdown_header, markdown_row, timed

    print(machine_line(choice.dtype))
    print(f"dtype: {choice.describe()}; LoRA r={args.rank}")
    print(markdown_header("layer", "tokens", "adapters", "vLLM us", "ragdock us", "speed-up"))
    ratios = []
    for name, (width_in, slices) in LAYERS.items():
        a = tuple(torch.randn(SLOTS, 1, args.rank, width_in, dtype=dtype) for _ in slices)
        b = tuple(torch.randn(SLOTS, 1, out, args.rank, dtype=dtype) for out in slices)
        for tokens in (8, 32, 128, 512):
            for adapters in (1, 2, 4):
                x = torch.randn(tokens, width_in, dtype=dtype)
                y = torch.zeros(tokens, sum(slices), dtype=dtype)
                wrappers = {
                    "vllm": wrapper(PunicaWrapperCPU, tokens, adapters),
                    "ragdock": wrapper(Ours, tokens, adapters),
                }
                times: dict[str, list[float]] = {"vllm": [], "ragdock": []}
                for rep in range(args.reps + 3):
                    order = list(wrappers.items())
                    for impl, wrap in order if rep % 2 == 0 else reversed(order):
                        spent = 1e6 * timed(partial(wrap.add_lora_linear, y, x, a, b, 1.0, slices))
                        if rep >= 3:  # warm-up, and ragdock's one-off weight fusing
                            times[impl].append(spent)
                theirs = statistics.median(times["vllm"])
                ours = statistics.median(times["ragdock"])
                ratios.append(theirs / ours)
                print(
                    markdown_row(
                        name,
                        tokens,
                        adapters,
                        f"{theirs:.0f}",
                        f"{ours:.0f}",
                        f"{theirs / ours:.2f}x",
                    )
                )
    print(f"\nmedian speed-up over all rows: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
