"""Loading the base model and wrapping it with a LoRA adapter (peft), in bf16/fp32 or 4-bit NF4.

The QLoRA trap (measured on CPUs with AVX512_BF16): bitsandbytes repacks a 4-bit weight into an
inference-only layout the first time a `Linear4bit` runs in eval mode on an input that does not
require grad. From then on every matmul goes through `gemv_4bit`, which has no autograd, and
training continues with silently wrong gradients. `no_grad_eval` keeps the 4-bit layers out of that
path during validation, and `assert_not_repacked` refuses to train a model that was repacked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ragdock.compute_dtype import ComputeDtype, torch_dtype
from training.batching import Batch
from training.config import TrainConfig, resolve_device
from training.render import IGNORE_INDEX


class QLoRATrapError(RuntimeError):
    """A 4-bit weight was repacked for inference; training it would give wrong gradients."""


def load_tokenizer(model_dir: Path) -> Any:
    """The checkpoint's own tokenizer; it must have a pad token (embeddings are never resized).

    Raises:
        ValueError: the tokenizer has no pad token or no chat template.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if tokenizer.pad_token_id is None:
        raise ValueError(
            f"the tokenizer in {model_dir} has no pad token; ragdock does not add one because "
            "resizing the embeddings would put embedding weights in the adapter, which vLLM refuses"
        )
    if not tokenizer.chat_template:
        raise ValueError(f"the tokenizer in {model_dir} has no chat template")
    return tokenizer


def load_peft_model(config: TrainConfig, model_dir: Path, dtype: ComputeDtype) -> Any:
    """Load the base model (bf16/fp32, or 4-bit for qlora) and add a fresh LoRA adapter.

    The adapter's initial weights come from torch's RNG, so seed before calling.

    Args:
        config: the run's configuration.
        model_dir: the base checkpoint.
        dtype: `config.loop.dtype` resolved for this machine (`ragdock.compute_dtype`); a qlora
            `quant.compute_dtype` of 'auto' follows it.

    Returns:
        A `peft.PeftModel` in train mode, with only LoRA parameters trainable.
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    device = resolve_device(config.loop.device)
    kwargs: dict[str, Any] = {"dtype": torch_dtype(dtype)}
    if config.method == "qlora":
        compute = dtype if config.quant.compute_dtype == "auto" else config.quant.compute_dtype
        kwargs["quantization_config"] = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
            load_in_4bit=True,
            bnb_4bit_quant_type=config.quant.quant_type,
            bnb_4bit_use_double_quant=config.quant.double_quant,
            bnb_4bit_compute_dtype=torch_dtype(compute),
        )
        # 4-bit weights are quantized as they are placed, so place them on the target at load.
        kwargs["device_map"] = {"": device}
    model: Any = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    if config.method != "qlora":
        model.to(device)
    if config.method == "qlora":
        # Freezes the base, upcasts norms/embeddings to fp32 for stability and, if asked,
        # enables gradient checkpointing with input grads (needed so checkpointed blocks see grads).
        model = prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
            model, use_gradient_checkpointing=config.loop.gradient_checkpointing
        )
    elif config.loop.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    lora = LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=config.lora.peft_target_modules(),
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    model.peft_config["default"].base_model_name_or_path = config.model
    model.train()
    return model


def assert_not_repacked(model: nn.Module) -> None:
    """Refuse to train a 4-bit model whose weights were repacked by an inference forward.

    Raises:
        QLoRATrapError: naming the first repacked layer.
    """
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        state = getattr(weight, "quant_state", None)
        if state is not None and getattr(state, "packing_format_for_cpu", False):
            raise QLoRATrapError(
                f"{name}: 4-bit weight was repacked by an eval-mode forward before training; "
                "gradients through it would be wrong. Load a fresh model and train before any "
                "inference (use training.model.no_grad_eval for validation)."
            )


@contextlib.contextmanager
def no_grad_eval(model: nn.Module) -> Iterator[None]:
    """Validation mode that is safe for 4-bit models: dropout off, no grad, no repacking.

    Dropout and friends go to eval mode; bitsandbytes' 4-bit layers stay in training mode (they have
    no dropout, and their eval mode is exactly what triggers the irreversible repacking).
    """
    was_training = model.training
    model.eval()
    for module in model.modules():
        if type(module).__name__.startswith("Linear4bit"):
            module.train(True)
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def label_loss(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
    """The summed cross-entropy over labelled positions, and how many there are.

    Only labelled positions get logits: with assistant-only loss that is a few percent of the
    sequence, and the output projection (262k vocabulary for Gemma) would otherwise dominate the
    step. `logits_to_keep` (the union of labelled columns over the rows) trims the hidden states
    the model hands to its head; a pre-hook on the head then gathers exactly the labelled
    (row, column) pairs, so rows do not pay for each other's positions. The model's own head and
    logit soft-capping stay in charge.

    Returns:
        (sum of token losses as a scalar tensor, number of label tokens).
    """
    device = next(model.parameters()).device
    labels = batch.shifted_labels.to(device)
    rows, cols = (labels != IGNORE_INDEX).nonzero(as_tuple=True)
    if rows.numel() == 0:
        return torch.zeros((), device=device), 0
    keep = torch.unique(cols)  # sorted
    col_in_keep = torch.searchsorted(keep, cols)

    def gather(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (args[0][rows, col_in_keep].unsqueeze(0), *args[1:])

    head = model.get_output_embeddings()  # type: ignore[operator]
    handle = head.register_forward_pre_hook(gather)
    try:
        out = model(
            input_ids=batch.input_ids.to(device),
            attention_mask=None
            if batch.attention_mask is None
            else batch.attention_mask.to(device),
            position_ids=None if batch.position_ids is None else batch.position_ids.to(device),
            logits_to_keep=keep,
            use_cache=False,
        )
    finally:
        handle.remove()
    logits = out.logits[0].float()  # (labelled tokens, vocabulary)
    loss = nn.functional.cross_entropy(logits, labels[rows, cols], reduction="sum")
    return loss, int(rows.numel())
