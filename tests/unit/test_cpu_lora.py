"""The CPU LoRA plugin computes what LoRA means, token by token, and what vLLM's kernels compute.

The one deliberate difference from vLLM's CPU kernels: a token at slot -1 ("no adapter") gets no
LoRA. vLLM's torch kernels index the stacked weights with -1 and so apply the last slot's adapter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from vllm.lora.layers.utils import LoRAMapping
from vllm.lora.ops import torch_ops as reference
from vllm.lora.punica_wrapper import punica_cpu

from engine import cpu_lora

SLOTS, RANK, HIDDEN, TOKENS = 3, 8, 48, 11
MIXED = [0, 0, 1, -1, 2, 1, 1, -1, 0, 2, 2]  # three adapters interleaved, and two base tokens


def per_token_lora(
    x: torch.Tensor,
    a_stacked: list[torch.Tensor],
    b_stacked: list[torch.Tensor],
    slots: list[int],
    scale: float = 1.0,
) -> torch.Tensor:
    """LoRA by definition, in float64: slice i's columns get scale * x @ A_i.T @ B_i.T."""
    width = sum(b.shape[2] for b in b_stacked)
    out = torch.zeros(x.shape[0], width, dtype=torch.float64)
    for t, slot in enumerate(slots):
        if slot < 0:
            continue
        column = 0
        for a, b in zip(a_stacked, b_stacked, strict=True):
            delta = scale * (x[t].double() @ a[slot, 0].double().t()) @ b[slot, 0].double().t()
            out[t, column : column + b.shape[2]] = delta
            column += b.shape[2]
    return out


def stacked(slices: list[int], dtype: torch.dtype) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    a = [torch.randn(SLOTS, 1, RANK, HIDDEN, dtype=dtype) / 4 for _ in slices]
    b = [torch.randn(SLOTS, 1, width, RANK, dtype=dtype) / 4 for width in slices]
    return a, b


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    return {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 3e-2, "rtol": 3e-2}


def test_slot_groups_are_slices_when_contiguous_and_leave_out_the_base() -> None:
    groups = cpu_lora.slot_groups(torch.tensor([2, 2, -1, 0, 0, 0, -1]))
    assert groups == [(2, slice(0, 2)), (0, slice(3, 6))]
    ((slot, rows),) = cpu_lora.slot_groups(torch.tensor([1, -1, 1, 1]))
    assert slot == 1 and rows.tolist() == [0, 2, 3]
    assert cpu_lora.slot_groups(torch.tensor([-1, -1])) == []
    assert cpu_lora.slot_groups(torch.zeros(0, dtype=torch.long)) == []


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("slices", [[40], [32, 16, 16]])  # one projection; fused q/k/v
@pytest.mark.parametrize(
    "slots",
    [
        MIXED,  # decode-sized mixed batch: all slots at once, masked
        MIXED * 30,  # past MASKED_MAX_TOKENS: slot by slot, gathered rows
        [1] * TOKENS,  # one adapter: one run of rows
        [-1] * TOKENS,  # base model only: nothing to do
        [0] * 5 + [2] * 6,
        [0] * 150 + [-1] * 60 + [2] * 90,  # past MASKED_MAX_TOKENS: slot by slot, row slices
    ],
    ids=["mixed", "mixed-large", "one", "base", "two-runs", "runs-large"],
)
def test_apply_lora_matches_the_per_token_definition(
    dtype: torch.dtype, slices: list[int], slots: list[int]
) -> None:
    torch.manual_seed(0)
    a, b = stacked(slices, dtype)
    x = torch.randn(len(slots), HIDDEN, dtype=dtype)
    y = torch.randn(len(slots), sum(slices), dtype=dtype)
    expected = y.double() + per_token_lora(x, a, b, slots, scale=0.5)
    weights = cpu_lora.fuse_layer_weights(a, b, slices)
    cpu_lora.apply_lora(y, x, weights, cpu_lora.StepPlan.of(torch.tensor(slots)), scale=0.5)
    torch.testing.assert_close(y.double(), expected, **tolerance(dtype))


def test_slots_without_weights_in_a_layer_are_skipped() -> None:
    torch.manual_seed(0)
    a, b = stacked([16, 16], torch.float32)
    for tensor in (*a, *b):
        tensor[1].zero_()  # slot 1's adapter does not train this layer
    weights = cpu_lora.fuse_layer_weights(a, b, [16, 16])
    assert weights.active == frozenset({0, 2})
    x, y = torch.randn(TOKENS, HIDDEN), torch.zeros(TOKENS, 32)
    cpu_lora.apply_lora(y, x, weights, cpu_lora.StepPlan.of(torch.tensor(MIXED)))
    torch.testing.assert_close(y.double(), per_token_lora(x, a, b, MIXED), **tolerance(y.dtype))


def test_rows_past_the_steps_tokens_are_left_alone() -> None:
    torch.manual_seed(0)
    a, b = stacked([16, 16], torch.float32)
    x, y = torch.randn(TOKENS + 5, HIDDEN), torch.zeros(TOKENS + 5, 32)
    weights = cpu_lora.fuse_layer_weights(a, b, [16, 16])
    cpu_lora.apply_lora(y, x, weights, cpu_lora.StepPlan.of(torch.tensor(MIXED)))
    expected = per_token_lora(x[:TOKENS], a, b, MIXED)
    torch.testing.assert_close(y[:TOKENS].double(), expected, **tolerance(y.dtype))
    assert not y[TOKENS:].any()


def run_kernel(impl: Callable[..., None], make_args: Callable[[], tuple[Any, ...]]) -> torch.Tensor:
    torch.manual_seed(0)
    args = make_args()
    impl(*args)
    return args[2]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("slots", [MIXED, [0] * TOKENS], ids=["mixed", "one"])
def test_bgmv_kernels_match_vllm_and_leave_base_tokens_alone(
    dtype: torch.dtype, slots: list[int]
) -> None:
    indices = torch.tensor(slots)
    base_rows = indices < 0

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
        theirs = run_kernel(getattr(reference, name), make)
        ours = run_kernel(cpu_lora.KERNELS[name], make)
        torch.manual_seed(0)
        untouched = make()[2]  # the output tensor as it was before the call (same seed)
        torch.testing.assert_close(ours[~base_rows], theirs[~base_rows], **tolerance(dtype))
        torch.testing.assert_close(ours[base_rows], untouched[base_rows])


def test_sgmv_kernels_match_vllm_on_a_prefill_batch() -> None:
    # Three sequences of 4, 2 and 5 tokens on slots 1, 2 and 0.
    seq_lens, slots, starts = (
        torch.tensor([4, 2, 5]),
        torch.tensor([1, 2, 0]),
        torch.tensor([0, 4, 6]),
    )
    meta = (starts, seq_lens, slots, 3, 5, TOKENS)

    def shrink() -> tuple[Any, ...]:
        return (torch.randn(TOKENS, HIDDEN), torch.randn(SLOTS, 1, RANK, HIDDEN),
                torch.zeros(TOKENS, RANK), *meta, 2.0)  # fmt: skip

    def expand() -> tuple[Any, ...]:
        return (torch.randn(TOKENS, RANK), torch.randn(SLOTS, 1, HIDDEN, RANK),
                torch.randn(TOKENS, HIDDEN), *meta, True)  # fmt: skip

    def expand_slice() -> tuple[Any, ...]:
        return (torch.randn(TOKENS, RANK), torch.randn(SLOTS, 1, 16, RANK),
                torch.randn(TOKENS, HIDDEN), *meta, 8, 16, False)  # fmt: skip

    for name, make in (
        ("sgmv_shrink", shrink),
        ("sgmv_expand", expand),
        ("sgmv_expand_slice", expand_slice),
    ):
        theirs = run_kernel(getattr(reference, name), make)
        ours = run_kernel(cpu_lora.KERNELS[name], make)
        torch.testing.assert_close(ours, theirs)


@pytest.fixture
def patched_wrapper() -> Any:
    """vLLM's real PunicaWrapperCPU with the plugin registered; restored afterwards."""
    cls = punica_cpu.PunicaWrapperCPU
    saved_kernels = {name: getattr(punica_cpu, name) for name in cpu_lora.KERNELS}
    saved_methods = {name: cls.__dict__.get(name) for name in cpu_lora.WRAPPER_METHODS}
    cpu_lora.register()
    try:
        yield cls(max_num_batched_tokens=64, max_batches=8, device="cpu")
    finally:
        for name, kernel in saved_kernels.items():
            setattr(punica_cpu, name, kernel)
        for name, method in saved_methods.items():
            if method is None:
                delattr(cls, name)
            else:
                setattr(cls, name, method)


def test_register_installs_the_kernels_and_wrapper_methods(patched_wrapper: Any) -> None:
    for name, kernel in cpu_lora.KERNELS.items():
        assert getattr(punica_cpu, name) is kernel
    wrapper = punica_cpu.PunicaWrapperCPU
    assert wrapper.add_lora_linear is cpu_lora.add_lora_linear
    assert getattr(wrapper.update_metadata, "ragdock_plans", False)
    installed = wrapper.update_metadata
    cpu_lora.register()  # a second registration does not wrap vLLM's method twice
    assert wrapper.update_metadata is installed


def test_the_patched_wrapper_serves_a_mixed_batch_and_follows_slot_changes(
    patched_wrapper: Any,
) -> None:
    """Through vLLM's own metadata path: lora ids -> slots -> groups -> fused weights."""
    torch.manual_seed(0)
    slices = [32, 16, 16]
    a, b = stacked(slices, torch.float32)
    lora_ids = [7, 8, 9]  # the adapter in each slot
    token_ids = [7, 7, 8, 0, 9, 8, 8, 0, 7, 9, 9]  # 0 = the base model
    slots = [lora_ids.index(i) if i else -1 for i in token_ids]

    def step() -> torch.Tensor:
        mapping = LoRAMapping(token_ids, token_ids, is_prefill=True)
        patched_wrapper.update_metadata(mapping, list(lora_ids), SLOTS + 1, 1000)
        x, y = torch.randn(TOKENS, HIDDEN), torch.zeros(TOKENS, sum(slices))
        patched_wrapper.add_lora_linear(y, x, tuple(a), tuple(b), 1.0, tuple(slices))
        torch.testing.assert_close(y.double(), per_token_lora(x, a, b, slots), **tolerance(y.dtype))
        return y

    step()
    # The engine puts another adapter (id 10) into slot 1: the fused weights must follow.
    for tensor in (*a, *b):
        tensor[1].normal_()
    lora_ids[1], token_ids[:] = 10, [10 if i == 8 else i for i in token_ids]
    step()
