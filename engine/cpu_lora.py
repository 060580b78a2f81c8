"""Faster LoRA kernels for vLLM's CPU backend, installed as a vLLM general plugin.

vLLM's CPU LoRA path (`vllm.lora.ops.torch_ops`, used by `PunicaWrapperCPU`) gathers a full copy
of the adapter's A or B matrix for EVERY token (`weights[indices]`, shape tokens x out x in) and
then multiplies token by token with einsum. For a prompt of 800 tokens that is 800 copies of each
LoRA matrix per layer and projection, which is why serving any adapter here cost about half the
base model's throughput, with one adapter as with four (eval/perf/adapter_throughput.py).

The replacements below compute the same products with one matmul when every token of the batch
uses the same adapter slot (one adapter at a time, the common case); batches that mix adapters keep
vLLM's per-token method, which measured faster than a loop over slots. Same inputs, same
slot semantics (including index -1, which selects the last slot as torch indexing does), same
output dtype; tests/unit/test_cpu_lora.py checks them against vLLM's own functions.

Only the CPU platform is patched; on GPUs vLLM uses its Triton kernels and this plugin does
nothing. vLLM loads it in every engine process through the `vllm.general_plugins` entry point
(pyproject.toml); set VLLM_PLUGINS to a list without `ragdock_cpu_lora` to turn it off.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

logger = logging.getLogger(__name__)


def grouped_lora_matmul(
    inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """`out[t] = weights[indices[t]] @ inputs[t]` for every token t (one matmul for one slot).

    Args:
        inputs: [tokens, in] activations.
        weights: [slots, out, in] or [slots, 1, out, in] stacked LoRA matrices.
        indices: [tokens] slot per token (negative values index from the end, as in torch).
        dtype: compute and output dtype (vLLM casts both operands to the output's dtype).

    Returns:
        [tokens, out] products.
    """
    if weights.dim() == 4:
        weights = weights.squeeze(1)
    inputs = inputs.to(dtype)
    slots = torch.unique(indices)
    if slots.numel() == 1:  # the common case: every token uses the same adapter (or none)
        return inputs @ weights[slots[0]].to(dtype).t()
    # Several adapters in one batch: a Python loop over slots measured slower than vLLM's
    # per-token gather (eval/perf/cpu_lora_kernels.py), so mixed batches keep vLLM's method.
    return torch.einsum("bi, boi -> bo", inputs, weights[indices].to(dtype))


def bgmv_shrink(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    scaling: float = 1.0,
) -> None:
    outputs = grouped_lora_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs


def bgmv_expand(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    add_inputs: bool = True,
) -> None:
    outputs = grouped_lora_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    # As vLLM does: a single row broadcasts, and adapter and model may pad the width differently.
    limit = 1 if outputs.shape[0] == 1 and output_tensor.shape[0] != 1 else output_tensor.shape[0]
    common = min(outputs.shape[1], output_tensor.shape[1])
    if add_inputs:
        output_tensor[:, :common] += outputs[:limit, :common]
    else:
        output_tensor[:, :common] = outputs[:limit, :common]


def bgmv_expand_slice(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = True,
) -> None:
    outputs = grouped_lora_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    if add_inputs:
        output_tensor[:, slice_offset : slice_offset + slice_size] += outputs
    else:
        output_tensor[:, slice_offset : slice_offset + slice_size] = outputs


def _per_token(lora_indices_tensor: torch.Tensor, seq_len_tensor: torch.Tensor) -> torch.Tensor:
    return torch.repeat_interleave(lora_indices_tensor, seq_len_tensor)


def sgmv_shrink(
    inputs: torch.Tensor,
    lora_a_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    b_seq_start_loc: torch.Tensor,
    seq_len_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    scaling: float,
) -> None:
    indices = _per_token(lora_indices_tensor, seq_len_tensor)
    bgmv_shrink(inputs, lora_a_weights, output_tensor, indices, scaling)


def sgmv_expand(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    b_seq_start_loc: torch.Tensor,
    seq_len_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    add_inputs: bool = False,
) -> None:
    indices = _per_token(lora_indices_tensor, seq_len_tensor)
    bgmv_expand(inputs, lora_b_weights, output_tensor, indices, add_inputs)


def sgmv_expand_slice(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    b_seq_start_loc: torch.Tensor,
    seq_len_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    batches: int,
    max_seq_length: int,
    token_nums: int,
    slice_offset: int,
    slice_size: int,
    add_inputs: bool = False,
) -> None:
    indices = _per_token(lora_indices_tensor, seq_len_tensor)
    bgmv_expand_slice(
        inputs, lora_b_weights, output_tensor, indices, slice_offset, slice_size, add_inputs
    )


KERNELS = {
    "bgmv_shrink": bgmv_shrink,
    "bgmv_expand": bgmv_expand,
    "bgmv_expand_slice": bgmv_expand_slice,
    "sgmv_shrink": sgmv_shrink,
    "sgmv_expand": sgmv_expand,
    "sgmv_expand_slice": sgmv_expand_slice,
}


def register() -> None:
    """vLLM general-plugin hook: swap the CPU LoRA kernels in, on the CPU platform only."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    try:
        from vllm.lora.punica_wrapper import punica_cpu
    except ImportError:  # a vLLM without the CPU punica wrapper: nothing to speed up
        return
    module: Any = punica_cpu
    missing = [name for name in KERNELS if not hasattr(module, name)]
    if missing:
        logger.warning("ragdock_cpu_lora: vLLM's CPU LoRA wrapper lacks %s; not patched", missing)
        return
    for name, kernel in KERNELS.items():
        setattr(module, name, kernel)
    logger.info("ragdock_cpu_lora: grouped LoRA matmuls installed for the CPU backend")
