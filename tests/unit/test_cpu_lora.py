"""The grouped CPU LoRA kernels compute what vLLM's own torch kernels compute."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from vllm.lora.ops import torch_ops as reference

from engine import cpu_lora

SLOTS, RANK, HIDDEN, TOKENS = 3, 8, 48, 11


def mixed_indices() -> torch.Tensor:
    # Two adapters, a third slot, and -1 (vLLM's "no adapter", indexing from the end).
    return torch.tensor([0, 0, 1, -1, 2, 1, 1, -1, 0, 2, 2])


def run_both(name: str, make_args: Callable[[], tuple[Any, ...]]) -> tuple[torch.Tensor, ...]:
    outs = []
    for impl in (getattr(reference, name), cpu_lora.KERNELS[name]):
        torch.manual_seed(0)
        args = make_args()
        impl(*args)
        outs.append(args[2])
    return tuple(outs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("indices", [mixed_indices(), torch.zeros(TOKENS, dtype=torch.long)])
def test_bgmv_kernels_match_vllm(dtype: torch.dtype, indices: torch.Tensor) -> None:
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 2e-2}

    def shrink() -> tuple[Any, ...]:
        x = torch.randn(TOKENS, HIDDEN, dtype=dtype)
        a = torch.randn(SLOTS, 1, RANK, HIDDEN, dtype=dtype)
        return (x, a, torch.zeros(TOKENS, RANK, dtype=torch.float32), indices, 0.5)

    def expand() -> tuple[Any, ...]:
        x = torch.randn(TOKENS, RANK, dtype=torch.float32)
        b = torch.randn(SLOTS, 1, HIDDEN, RANK, dtype=dtype)
        return (x, b, torch.randn(TOKENS, HIDDEN, dtype=dtype), indices, True)

    def expand_slice() -> tuple[Any, ...]:
        x = torch.randn(TOKENS, RANK, dtype=torch.float32)
        b = torch.randn(SLOTS, 1, 16, RANK, dtype=dtype)
        return (x, b, torch.randn(TOKENS, HIDDEN, dtype=dtype), indices, 8, 16, True)

    for name, make in (
        ("bgmv_shrink", shrink),
        ("bgmv_expand", expand),
        ("bgmv_expand_slice", expand_slice),
    ):
        theirs, ours = run_both(name, make)
        torch.testing.assert_close(theirs, ours, **tol)


def test_sgmv_kernels_match_vllm_on_a_prefill_batch() -> None:
    # Three sequences of 4, 2 and 5 tokens on slots 1, -1 and 0.
    seq_lens, slots = torch.tensor([4, 2, 5]), torch.tensor([1, -1, 0])
    starts = torch.tensor([0, 4, 6])

    def shrink() -> tuple[Any, ...]:
        x = torch.randn(TOKENS, HIDDEN)
        a = torch.randn(SLOTS, 1, RANK, HIDDEN)
        return (x, a, torch.zeros(TOKENS, RANK), starts, seq_lens, slots, 3, 5, TOKENS, 2.0)

    def expand() -> tuple[Any, ...]:
        x = torch.randn(TOKENS, RANK)
        b = torch.randn(SLOTS, 1, HIDDEN, RANK)
        return (x, b, torch.randn(TOKENS, HIDDEN), starts, seq_lens, slots, 3, 5, TOKENS, True)

    def expand_slice() -> tuple[Any, ...]:
        x = torch.randn(TOKENS, RANK)
        b = torch.randn(SLOTS, 1, 16, RANK)
        return (
            x,
            b,
            torch.randn(TOKENS, HIDDEN),
            starts,
            seq_lens,
            slots,
            3,
            5,
            TOKENS,
            8,
            16,
            False,
        )

    for name, make in (
        ("sgmv_shrink", shrink),
        ("sgmv_expand", expand),
        ("sgmv_expand_slice", expand_slice),
    ):
        theirs, ours = run_both(name, make)
        torch.testing.assert_close(theirs, ours)


def test_register_patches_vllms_cpu_wrapper_on_cpu() -> None:
    from vllm.lora.punica_wrapper import punica_cpu

    saved = {name: getattr(punica_cpu, name) for name in cpu_lora.KERNELS}
    try:
        cpu_lora.register()
        for name, kernel in cpu_lora.KERNELS.items():
            assert getattr(punica_cpu, name) is kernel
    finally:
        for name, original in saved.items():
            setattr(punica_cpu, name, original)
