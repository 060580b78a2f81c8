"""The configuration of one training run: a commented YAML file validated by pydantic.

A run is described by one YAML file (see `training/configs/`), optionally patched from the command
line with dotted `key=value` overrides (`optim.lr=1e-4 data.packing=true`). Validation happens
before anything heavy is loaded, and every error names the field and says how to fix it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ragdock.compute_dtype import DtypeSetting

# Attention projections share these names in Gemma 2/3/4, Llama, Mistral and Qwen checkpoints.
ATTENTION_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")


class ConfigError(ValueError):
    """The run configuration is invalid; the message says which field and how to fix it."""


class _Section(BaseModel):
    # A misspelt key is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid")


class LoraSettings(_Section):
    """The adapter's shape (peft LoraConfig)."""

    r: int = Field(8, ge=1, le=256, description="Rank: higher = more capacity and memory.")
    alpha: int = Field(16, ge=1, description="Scale; the update is multiplied by alpha / r.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the adapter input.")
    target_modules: str | list[str] = Field(
        "attention",
        description=(
            "'attention' (q/k/v/o projections), 'all-linear' (every linear layer but the output "
            "head), a list of module names, or a regular expression matched against full names."
        ),
    )

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not value:
            raise ValueError(
                "target_modules is empty; use 'attention', 'all-linear' or module names"
            )
        if isinstance(value, list) and any(name in {"lm_head", "embed_tokens"} for name in value):
            raise ValueError(
                "target_modules must not include lm_head or embed_tokens: vLLM refuses adapters "
                "that change them; use attention or MLP projections"
            )
        return value

    def peft_target_modules(self) -> str | list[str]:
        """The value for peft's `LoraConfig.target_modules`."""
        if self.target_modules == "attention":
            return list(ATTENTION_MODULES)
        return self.target_modules


class QuantSettings(_Section):
    """4-bit quantization of the frozen base model, used only when `method: qlora`."""

    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="NF4 suits normal weights.")
    double_quant: bool = Field(True, description="Quantize the scales too (~0.4 bit/param saved).")
    compute_dtype: DtypeSetting = Field(
        "auto", description="Matmul dtype of the dequantized blocks; auto = the loop's dtype."
    )


class DataSettings(_Section):
    """Where the examples come from and how they become token sequences."""

    train: Path = Field(..., description="Chat JSONL ({'messages': [...]}) or prompt/completion.")
    validation: Path | None = Field(None, description="Validation JSONL; else split from train.")
    validation_fraction: float = Field(
        0.0, ge=0.0, lt=0.5, description="Held out of `train` when `validation` is not given."
    )
    holdout: Path | None = Field(
        None, description="Frozen holdout JSONL: never trained on; its sha256 goes in the manifest."
    )
    max_seq_len: int = Field(1024, ge=16, description="Tokens per example (or packed row).")
    too_long: Literal["drop", "fail"] = Field(
        "drop", description="What to do with an example longer than max_seq_len."
    )
    duplicates: Literal["fail", "drop"] = Field(
        "fail", description="What to do with exact duplicates inside the training data."
    )
    near_duplicate_threshold: float = Field(
        0.8, gt=0.0, le=1.0, description="Character 5-gram Jaccard above which pairs are reported."
    )
    near_duplicates: Literal["warn", "fail"] = Field(
        "warn", description="'fail' refuses to train when a train example is near a holdout one."
    )
    packing: bool = Field(False, description="Pack several examples into each row (no padding).")
    prompt_completion_as: Literal["chat", "text"] = Field(
        "chat",
        description=(
            "How prompt/completion records are rendered: as a user/assistant chat through the "
            "model's template, or as plain text (base-model style)."
        ),
    )


class OptimSettings(_Section):
    """Optimizer, schedule and batch shape."""

    lr: float = Field(2e-4, gt=0.0, le=1.0, description="Peak learning rate of AdamW.")
    weight_decay: float = Field(0.0, ge=0.0)
    schedule: Literal["cosine", "linear", "constant"] = Field("cosine")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up optimizer steps.")
    max_grad_norm: float | None = Field(1.0, gt=0.0, description="Clip; null disables clipping.")
    epochs: float = Field(1.0, gt=0.0, description="Passes over the training data.")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps; overrides epochs.")
    batch_size: int = Field(4, ge=1, description="Sequences (or packed rows) per micro-batch.")
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")


class LoopSettings(_Section):
    """Evaluation, early stopping, checkpoints and the numeric setup."""

    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto = the GPU when torch sees one, else the CPU."
    )
    dtype: DtypeSetting = Field(
        "auto",
        description="Base weights and compute. auto = bf16 where this machine computes it fast "
        "(measured once, cached in RAGDOCK_HOME), else fp32: on CPUs with AVX2 only, bf16 "
        "is emulated and a LoRA step ran 60-70x slower than in fp32.",
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in backward: less memory, ~30% slower."
    )
    eval_every: int = Field(0, ge=0, description="Validation loss every N steps; 0 = at end only.")
    early_stopping_patience: int = Field(
        0, ge=0, description="Stop after N evals without improvement; 0 disables."
    )
    early_stopping_min_delta: float = Field(0.0, ge=0.0)
    checkpoint_every: int = Field(
        0, ge=0, description="Resumable checkpoint every N steps; 0 = off."
    )
    keep_checkpoints: int = Field(2, ge=1, description="Older checkpoints are deleted.")
    resume_from: Path | None = Field(
        None, description="A checkpoint directory, or 'latest' under output_dir/checkpoints."
    )
    log_every: int = Field(1, ge=1, description="Write a metrics line every N steps.")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; null = torch default.")
    save_best: bool = Field(
        True, description="Save the adapter with the best validation loss rather than the last."
    )


def resolve_device(setting: str) -> str:
    """`auto` becomes `cuda` when torch sees a GPU, else `cpu`."""
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class TrainConfig(_Section):
    """One training run."""

    model: str = Field(
        "gemma-3-270m", description="'gemma-3-270m' (built locally) or an HF checkpoint directory."
    )
    method: Literal["lora", "qlora"] = Field("lora", description="qlora = 4-bit NF4 base + LoRA.")
    output_dir: Path = Field(..., description="Adapter, manifest, metrics and plots go here.")
    seed: int = Field(0, description="Seeds data order, adapter init and dropout.")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    quant: QuantSettings = Field(default_factory=QuantSettings)
    data: DataSettings
    optim: OptimSettings = Field(default_factory=OptimSettings)
    loop: LoopSettings = Field(default_factory=LoopSettings)

    @model_validator(mode="after")
    def _coherent(self) -> TrainConfig:
        if self.data.validation is not None and self.data.validation_fraction > 0:
            raise ValueError(
                "give either data.validation (a file) or data.validation_fraction, not both"
            )
        has_validation = self.data.validation is not None or self.data.validation_fraction > 0
        if self.loop.early_stopping_patience and not (has_validation and self.loop.eval_every):
            raise ValueError(
                "loop.early_stopping_patience needs a validation set (data.validation or "
                "data.validation_fraction) and loop.eval_every > 0"
            )
        return self


def load_config(path: Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML run configuration, apply `key=value` overrides and validate it.

    Relative data and output paths are resolved against the current directory (where the command
    runs), so a config in the repository works from the repository root.

    Args:
        path: the YAML file.
        overrides: dotted `section.key=value` strings; values are parsed as YAML scalars/lists.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: the file is missing or not a mapping, an override is malformed, or a field is
            invalid (each problem named with its dotted path).
    """
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a YAML mapping of settings, got {type(raw).__name__}")
    for item in overrides or []:
        apply_override(raw, item)
    return validate_config(raw, source=str(path))


def validate_config(raw: dict[str, Any], *, source: str = "config") -> TrainConfig:
    """Validate a mapping as a `TrainConfig`, turning pydantic errors into one readable message.

    Raises:
        ConfigError: one line per invalid field, e.g. `optim.lr: Input should be > 0 (got -1)`.
    """
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "(top level)"
            got = f" (got {error['input']!r})" if error["type"] != "missing" else ""
            hint = (
                " -- unknown key: check its spelling" if error["type"] == "extra_forbidden" else ""
            )
            lines.append(f"  {where}: {error['msg']}{got}{hint}")
        raise ConfigError(f"invalid training config {source}:\n" + "\n".join(lines)) from None


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `a.b.c=value` in a nested mapping (creating sections as needed).

    Raises:
        ConfigError: the override has no `=` or an empty key.
    """
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(
            f"override {item!r} must look like section.key=value (e.g. optim.lr=1e-4)"
        )
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
        node = child
    # YAML parsing makes `true`, `3`, `1e-4`, `[q_proj, v_proj]` and `null` what they look like.
    node[parts[-1]] = yaml.safe_load(text) if text.strip() else None
