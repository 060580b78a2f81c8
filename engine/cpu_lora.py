"""Faster, correct multi-LoRA for vLLM's CPU backend, installed as a vLLM general plugin.

What vLLM's CPU LoRA path (`PunicaWrapperCPU` over `vllm.lora.ops.torch_ops`) does per layer and
per step, and what it costs on CPU (profiled with py-spy on the engine's worker process, see the
README's adapter section):

- it gathers a full copy of the adapter matrix for EVERY token (`weights[indices]`) and multiplies
  token by token with einsum;
- it makes one shrink and one expand call per output slice (three of each for the fused q/k/v
  projection), each re-deriving the per-token slots (`repeat_interleave`) from the step's metadata;
- every call is a tiny matrix product whose fixed cost (a oneDNN/MKL call and an OpenMP fork/join)
  dwarfs its arithmetic, so the number of calls, not the FLOPs, sets the price;
- it computes LoRA for every wrapped layer even where no adapter in the batch has weights (the
  MLP, for an adapter trained on attention only);
- and it applies the LAST slot's adapter to tokens that asked for none: it indexes the stacked
  weights with -1, vLLM's "no adapter" marker. In a batch that mixes base-model requests with
  adapters while every slot is full, the base requests get somebody else's adapter.

The replacement `add_lora_linear` below works per step and per layer instead of per token:
- `update_metadata` groups the step's tokens by adapter slot once (a slice when the slot's tokens
  are contiguous, an index tensor otherwise); tokens without an adapter belong to no group;
- per layer it caches every slot's A matrices, concatenated across output slices, and B matrices,
  block-diagonal across output slices, side by side; the cache is rebuilt when the engine changes
  which adapter sits in which slot;
- a batch on one adapter costs two matrix products per layer, the second accumulated straight
  into the output (`addmm_`); a batch that mixes adapters (decode-sized) also costs two: through
  every slot's A at once, a per-step 0/1 mask that keeps each token's own slot, then every slot's
  B at once. Past MASKED_MAX_TOKENS tokens each slot's rows are computed on their own instead;
- layers where no slot in the batch has weights (the MLP, for an attention-only adapter) are
  skipped.

The per-token kernels (`bgmv_*`, `sgmv_*`) that vLLM's other LoRA paths still call are replaced
too: one matmul per slot present, and no LoRA for index -1. tests/unit/test_cpu_lora.py checks all
of it against a per-token reference.

Only the CPU platform is patched; on GPUs vLLM uses its Triton kernels and this plugin does
nothing. vLLM loads it in every engine process through ragdock's general plugin
(engine/cpu_plugin.py); set VLLM_PLUGINS to a list without `ragdock_cpu` to turn it off.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

logger = logging.getLogger(__name__)

# Rows of one slot in the step's token batch: a slice when contiguous (a view, no copy).
Rows = slice | torch.Tensor


def slot_groups(slot_per_token: torch.Tensor) -> list[tuple[int, Rows]]:
    """Group a step's tokens by adapter slot; tokens at -1 (no adapter) are left out.

    Args:
        slot_per_token: [tokens] slot index per token, -1 for the base model.

    Returns:
        (slot, rows) pairs in order of first appearance; rows is a slice when the slot's tokens
        are contiguous, else a LongTensor of token positions.
    """
    if slot_per_token.numel() == 0:
        return []
    slots, lengths = torch.unique_consecutive(slot_per_token, return_counts=True)
    starts: dict[int, list[tuple[int, int]]] = {}
    position = 0
    for slot, length in zip(slots.tolist(), lengths.tolist(), strict=True):
        if slot >= 0:
            starts.setdefault(slot, []).append((position, position + length))
        position += length
    groups: list[tuple[int, Rows]] = []
    for slot, runs in starts.items():
        if len(runs) == 1:
            groups.append((slot, slice(*runs[0])))
        else:
            groups.append((slot, torch.cat([torch.arange(start, end) for start, end in runs])))
    return groups


# Up to this many tokens, a batch that mixes adapters is computed for every slot at once and
# masked (two matrix products per layer whatever the mix); past it, FLOPs win over call counts and
# each slot's rows are computed on their own (eval/perf/cpu_lora_kernels.py measures both).
MASKED_MAX_TOKENS = 256


@dataclass
class StepPlan:
    """Which tokens of one engine step use which adapter slot."""

    slot_per_token: torch.Tensor  # [tokens], -1 for the base model
    groups: list[tuple[int, Rows]]
    masks: dict[tuple[int, int, torch.dtype], torch.Tensor] = field(default_factory=dict)

    @classmethod
    def of(cls, slot_per_token: torch.Tensor) -> StepPlan:
        return cls(slot_per_token, slot_groups(slot_per_token))

    def mask(self, slots: int, width: int, dtype: torch.dtype) -> torch.Tensor:
        """[tokens, slots * width]: 1 in the `width` columns of the token's own slot, else 0."""
        key = (slots, width, dtype)
        if key not in self.masks:
            own = self.slot_per_token.unsqueeze(1) == torch.arange(slots).unsqueeze(0)
            self.masks[key] = own.to(dtype).repeat_interleave(width, dim=1)
        return self.masks[key]


@dataclass(frozen=True)
class FusedLayerWeights:
    """One LoRA layer's stacked weights, laid out so that a whole batch takes two products.

    a: [slots * width, in], every slot's A matrices for all output slices, one after another.
    b: [sum(output_slices), slots * width], the slots' B matrices side by side, each one block
       diagonal across output slices, so one product expands every slice into its own columns.
    width: slices * rank, the columns of `a.T` (and rows of `b.T`) that belong to one slot.
    active: slots with any non-zero weight in this layer.
    """

    a: torch.Tensor
    b: torch.Tensor
    width: int
    active: frozenset[int]

    @property
    def slots(self) -> int:
        return self.a.shape[0] // self.width


def fuse_layer_weights(
    lora_a_stacked: Sequence[torch.Tensor],
    lora_b_stacked: Sequence[torch.Tensor],
    output_slices: Sequence[int],
) -> FusedLayerWeights:
    """Fuse vLLM's per-slice stacked A ([slots, 1, r, in]) and B ([slots, 1, out, r]) weights."""
    a_parts = [a.squeeze(1) if a.dim() == 4 else a for a in lora_a_stacked]
    b_parts = [b.squeeze(1) if b.dim() == 4 else b for b in lora_b_stacked]
    slots, rank = a_parts[0].shape[0], a_parts[0].shape[1]
    width = rank * len(a_parts)
    a = torch.cat(a_parts, dim=1).reshape(slots * width, -1)
    b = a_parts[0].new_zeros(sum(output_slices), slots, width)
    column = 0
    for i, (part, size) in enumerate(zip(b_parts, output_slices, strict=True)):
        # part[:, :size] is [slots, size, rank]; its rows go to this slice's output columns
        b[column : column + size, :, i * rank : (i + 1) * rank] = part[:, :size].transpose(0, 1)
        column += size
    active = frozenset(
        slot
        for slot in range(slots)
        if any(bool(part[slot].any()) for part in (*a_parts, *b_parts))
    )
    return FusedLayerWeights(a=a, b=b.reshape(sum(output_slices), slots * width), width=width,
                             active=active)  # fmt: skip


def apply_lora(
    y: torch.Tensor,
    x: torch.Tensor,
    weights: FusedLayerWeights,
    plan: StepPlan,
    scale: float = 1.0,
) -> None:
    """`y[t] += scale * (x[t] @ A[slot(t)].T) @ B[slot(t)].T` for every token t with an adapter.

    y: [tokens, >= sum(output_slices)] updated in place; x: [tokens, in].
    """
    groups = [(slot, rows) for slot, rows in plan.groups if slot in weights.active]
    if not groups:
        return
    # Rows past the step's tokens (padding, should a runner add any) are not the plan's to touch.
    tokens = plan.slot_per_token.shape[0]
    out = y[:tokens, : weights.b.shape[0]]
    x = x[:tokens].to(y.dtype)
    a, b = weights.a.to(y.dtype), weights.b.to(y.dtype)
    one_run = len(plan.groups) == 1 and isinstance(plan.groups[0][1], slice)
    if not one_run and x.shape[0] <= MASKED_MAX_TOKENS:
        # Every slot at once: shrink through all slots' A, zero what belongs to other slots
        # (and to base tokens), expand through all slots' B. Two products, any mix of adapters.
        shrunk = x @ a.t()
        shrunk.mul_(plan.mask(weights.slots, weights.width, shrunk.dtype))
        out.addmm_(shrunk, b.t(), alpha=scale)
        return
    for slot, rows in groups:
        slot_a = a[slot * weights.width : (slot + 1) * weights.width]
        slot_b = b[:, slot * weights.width : (slot + 1) * weights.width]
        if isinstance(rows, slice):
            out[rows].addmm_(x[rows] @ slot_a.t(), slot_b.t(), alpha=scale)
        else:
            out.index_add_(0, rows, (x.index_select(0, rows) @ slot_a.t()) @ slot_b.t(),
                           alpha=scale)  # fmt: skip


# --- PunicaWrapperCPU methods -------------------------------------------------------------------


def with_step_plan(vllm_update_metadata: Any) -> Any:
    """PunicaWrapperCPU.update_metadata: vLLM's, then this step's plan and the slot layout.

    vLLM calls it whenever the batch's adapter mapping changes, after putting any newly needed
    adapter into a slot; `lora_index_to_id` says which adapter sits in which slot.
    """

    def update_metadata(
        self: Any, mapping: Any, lora_index_to_id: list[int | None], *args: Any, **kwargs: Any
    ) -> None:
        vllm_update_metadata(self, mapping, lora_index_to_id, *args, **kwargs)
        self._ragdock_plan = StepPlan.of(self.token_lora_indices.clone())
        layout = tuple(lora_index_to_id)
        if getattr(self, "_ragdock_layout", None) != layout:
            self._ragdock_layout = layout
            self._ragdock_weights = {}  # another adapter in some slot: fused weights are stale

    update_metadata.ragdock_plans = True  # type: ignore[attr-defined]
    return update_metadata


def add_lora_linear(
    self: Any,
    y: torch.Tensor,
    x: torch.Tensor,
    lora_a_stacked: tuple[torch.Tensor, ...],
    lora_b_stacked: tuple[torch.Tensor, ...],
    scale: float,
    output_slices: tuple[int, ...],
    *,
    buffer: Any = None,
    **kwargs: Any,
) -> torch.Tensor:
    """PunicaWrapperCPU.add_lora_linear: y += LoRA(x), per slot rather than per token.

    One wrapper serves every LoRA layer of the model; a layer is known by its stacked A tensor.
    """
    plan = getattr(self, "_ragdock_plan", None)
    if plan is None:  # metadata not set through our update_metadata (should not happen)
        self._ragdock_plan = plan = StepPlan.of(self.token_lora_indices.clone())
    if not plan.groups:  # base model only: vLLM's path allocates buffers and returns too
        return y
    cache: dict[int, tuple[torch.Tensor, FusedLayerWeights]] = self.__dict__.setdefault(
        "_ragdock_weights", {}
    )
    layer = lora_a_stacked[0]
    cached = cache.get(id(layer))
    # Fused once per layer after each slot change (update_metadata empties the cache); holding the
    # tensor and checking identity keeps a reused id() from picking up another layer's weights.
    if cached is None or cached[0] is not layer:
        cached = (layer, fuse_layer_weights(lora_a_stacked, lora_b_stacked, output_slices))
        cache[id(layer)] = cached
    apply_lora(y, x, cached[1], plan, scale)
    return y


# --- per-token kernels for vLLM's other CPU LoRA paths -----------------------------------------


def grouped_lora_matmul(
    inputs: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """`out[t] = weights[indices[t]] @ inputs[t]`, one matmul per slot; rows at -1 stay zero.

    Args:
        inputs: [tokens, in] activations.
        weights: [slots, out, in] or [slots, 1, out, in] stacked LoRA matrices.
        indices: [tokens] slot per token, -1 for no adapter.
        dtype: compute and output dtype (vLLM casts both operands to the output's dtype).
    """
    if weights.dim() == 4:
        weights = weights.squeeze(1)
    out = inputs.new_zeros(inputs.shape[0], weights.shape[1], dtype=dtype)
    for slot, rows in slot_groups(indices):
        out[rows] = inputs[rows].to(dtype) @ weights[slot].to(dtype).t()
    return out


def bgmv_shrink(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    scaling: float = 1.0,
) -> None:
    outputs = grouped_lora_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    rows = lora_indices_tensor >= 0  # base tokens keep what they had
    output_tensor[rows, : outputs.shape[1]] = scaling * outputs[rows]


def bgmv_expand(
    inputs: torch.Tensor,
    lora_b_weights: torch.Tensor,
    output_tensor: torch.Tensor,
    lora_indices_tensor: torch.Tensor,
    add_inputs: bool = True,
) -> None:
    outputs = grouped_lora_matmul(inputs, lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    rows = lora_indices_tensor >= 0  # base tokens keep what they had
    if outputs.shape[0] == 1 and output_tensor.shape[0] != 1:
        # As vLLM does: a single row broadcasts to every output row.
        outputs = outputs.expand(output_tensor.shape[0], -1)
        rows = rows.expand(output_tensor.shape[0])
    common = min(outputs.shape[1], output_tensor.shape[1])  # adapter and model may pad differently
    if add_inputs:
        output_tensor[rows, :common] += outputs[rows, :common]
    else:
        output_tensor[rows, :common] = outputs[rows, :common]


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
    rows = lora_indices_tensor >= 0  # base tokens keep what they had
    columns = slice(slice_offset, slice_offset + slice_size)
    if add_inputs:
        output_tensor[rows, columns] += outputs[rows]
    else:
        output_tensor[rows, columns] = outputs[rows]


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
WRAPPER_METHODS = ("update_metadata", "add_lora_linear")


def register() -> None:
    """vLLM general-plugin hook: install the CPU LoRA path above, on the CPU platform only."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    try:
        from vllm.lora.punica_wrapper import punica_cpu
    except ImportError:  # a vLLM without the CPU punica wrapper: nothing to speed up
        return
    module: Any = punica_cpu
    wrapper: Any = getattr(module, "PunicaWrapperCPU", None)
    missing = [name for name in KERNELS if not hasattr(module, name)]
    missing += [
        f"PunicaWrapperCPU.{name}" for name in WRAPPER_METHODS if not hasattr(wrapper, name)
    ]
    if missing:
        logger.warning("ragdock_cpu_lora: vLLM's CPU LoRA wrapper lacks %s; not patched", missing)
        return
    for name, kernel in KERNELS.items():
        setattr(module, name, kernel)
    if not getattr(wrapper.update_metadata, "ragdock_plans", False):  # registered once only
        wrapper.update_metadata = with_step_plan(wrapper.update_metadata)
    wrapper.add_lora_linear = add_lora_linear
    logger.info("ragdock_cpu_lora: per-slot LoRA installed for vLLM's CPU backend")
