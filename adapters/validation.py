"""Checks an adapter directory before anything reaches the engine.

Every refusal names the problem and the fix. Weights are read from the safetensors header only:
nothing is deserialized, and pickle files (`.bin`, `.pt`, ...) are refused without being opened,
since unpickling runs arbitrary code.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.errors import AdapterValidationError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# The linear layers vLLM can apply LoRA to in Gemma's language model.
GEMMA_LORA_MODULES = frozenset(
    {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
)
# Weights vLLM rejects in an adapter: whole layers saved beside the LoRA matrices.
_FORBIDDEN_PARTS = ("lm_head", "embed_tokens", "modules_to_save", "lora_embedding")
_MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class AdapterLimits:
    """What the serving engine accepts.

    `module_shapes` maps each module to its (in_features, out_features) in the served base; when
    known, every LoRA matrix must fit it. vLLM accepts a mis-shaped adapter at load time and fails
    only when a request uses it, so this is checked here.
    """

    max_rank: int
    max_bytes: int = 512 * 1024 * 1024
    supported_modules: frozenset[str] = GEMMA_LORA_MODULES
    module_shapes: dict[str, tuple[int, int]] | None = None


def module_shapes_from_config(config: dict[str, Any]) -> dict[str, tuple[int, int]] | None:
    """(in, out) features of the LoRA-able linear layers of a decoder with Gemma/Llama layout,
    from its HF config.json (multimodal configs keep the language model's under text_config)."""
    text = config.get("text_config") or config
    try:
        hidden = int(text["hidden_size"])
        heads = int(text["num_attention_heads"])
        kv_heads = int(text.get("num_key_value_heads") or heads)
        head_dim = int(text.get("head_dim") or hidden // heads)
        intermediate = int(text["intermediate_size"])
    except (KeyError, TypeError, ValueError):
        return None
    q_out, kv_out = heads * head_dim, kv_heads * head_dim
    return {
        "q_proj": (hidden, q_out),
        "k_proj": (hidden, kv_out),
        "v_proj": (hidden, kv_out),
        "o_proj": (q_out, hidden),
        "gate_proj": (hidden, intermediate),
        "up_proj": (hidden, intermediate),
        "down_proj": (intermediate, hidden),
    }


@dataclass(frozen=True)
class AdapterInfo:
    rank: int
    alpha: float
    target_modules: list[str]
    base_model: str
    size_bytes: int
    tensors: int
    config: dict[str, Any] = field(repr=False)


def validate_adapter_dir(path: Path, limits: AdapterLimits) -> AdapterInfo:
    """Validate a PEFT LoRA adapter directory against the engine's limits.

    Args:
        path: directory holding adapter_config.json and adapter_model.safetensors.
        limits: the engine's max rank, size limit and supported modules.

    Returns:
        What the adapter is (rank, modules, base model, size).

    Raises:
        AdapterValidationError: with the problem and the fix.
    """
    if not path.is_dir():
        raise AdapterValidationError(f"{path} is not a directory")
    pickles = sorted(p.name for p in path.rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise AdapterValidationError(
            f"pickle files are refused ({', '.join(pickles)}): they can run code when loaded. "
            "Save it with safetensors (peft: save_pretrained(..., safe_serialization=True))"
        )
    config = _read_config(path / ADAPTER_CONFIG)
    weights = path / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise AdapterValidationError(f"{ADAPTER_WEIGHTS} is missing from {path}")
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    if size > limits.max_bytes:
        raise AdapterValidationError(
            f"the adapter is {size / 2**20:.0f} MiB, over the {limits.max_bytes / 2**20:.0f} MiB "
            "limit: a LoRA adapter is usually a few MB; check that no base weights were saved"
        )
    header = read_safetensors_header(weights)
    tensor_names = list(header)
    _check_config(config, limits)
    modules = _check_tensors(tensor_names, limits)
    if limits.module_shapes:
        _check_shapes(header, limits.module_shapes)
    return AdapterInfo(
        rank=int(config["r"]),
        alpha=float(config.get("lora_alpha", config["r"])),
        target_modules=sorted(modules),
        base_model=str(config.get("base_model_name_or_path") or ""),
        size_bytes=size,
        tensors=len(tensor_names),
        config=config,
    )


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """Tensor name -> {dtype, shape, data_offsets}, read from the header without loading data.

    Raises:
        AdapterValidationError: the file is not a valid safetensors file.
    """
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise AdapterValidationError(f"{path.name} is not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", prefix)
        if length > _MAX_HEADER_BYTES:
            raise AdapterValidationError(f"{path.name} has an implausible header; re-save it")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AdapterValidationError(f"{path.name} is not a safetensors file: {exc}") from exc
    if not isinstance(header, dict):
        raise AdapterValidationError(f"{path.name} is not a safetensors file")
    header.pop("__metadata__", None)
    return header


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise AdapterValidationError(f"{ADAPTER_CONFIG} is missing: push a PEFT adapter directory")
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterValidationError(f"{ADAPTER_CONFIG} does not parse: {exc}") from exc
    if not isinstance(config, dict):
        raise AdapterValidationError(f"{ADAPTER_CONFIG} must be a JSON object")
    return config


def _check_config(config: dict[str, Any], limits: AdapterLimits) -> None:
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise AdapterValidationError(
            f"peft_type is {config.get('peft_type')!r}; only LoRA adapters can be served"
        )
    rank = config.get("r")
    if not isinstance(rank, int) or rank < 1:
        raise AdapterValidationError(f"r must be a positive integer in {ADAPTER_CONFIG}")
    ranks = [rank, *(config.get("rank_pattern") or {}).values()]
    if max(ranks) > limits.max_rank:
        raise AdapterValidationError(
            f"LoRA rank {max(ranks)} is over the engine's max rank {limits.max_rank}: retrain with "
            f"r <= {limits.max_rank} or start the engine with a larger RAGDOCK_ENGINE_MAX_LORA_RANK"
        )
    if config.get("modules_to_save"):
        raise AdapterValidationError(
            f"modules_to_save={config['modules_to_save']} saves whole layers, which vLLM rejects; "
            "train without modules_to_save"
        )
    if config.get("use_dora"):
        raise AdapterValidationError("DoRA adapters are not supported by vLLM; train plain LoRA")


def _check_shapes(header: dict[str, Any], shapes: dict[str, tuple[int, int]]) -> None:
    for name, meta in header.items():
        parts = name.split(".")
        matrix = "lora_A" if "lora_A" in parts else "lora_B"
        module = parts[parts.index(matrix) - 1]
        if module not in shapes:
            continue
        in_features, out_features = shapes[module]
        shape = list(meta.get("shape", []))
        ok = (
            len(shape) == 2 and shape[1] == in_features
            if matrix == "lora_A"
            else len(shape) == 2 and shape[0] == out_features
        )
        if not ok:
            expected = f"[r, {in_features}]" if matrix == "lora_A" else f"[{out_features}, r]"
            raise AdapterValidationError(
                f"{name} has shape {shape}, but the served base needs {expected}: the adapter "
                "was trained on a model of another size; retrain on the served base"
            )


def _check_tensors(names: list[str], limits: AdapterLimits) -> set[str]:
    if not names:
        raise AdapterValidationError(f"{ADAPTER_WEIGHTS} holds no tensors")
    modules: set[str] = set()
    for name in names:
        forbidden = next((part for part in _FORBIDDEN_PARTS if part in name), None)
        if forbidden:
            raise AdapterValidationError(
                f"the adapter carries {forbidden} weights ({name}), which vLLM rejects: train "
                "without modules_to_save and without LoRA on embeddings or lm_head"
            )
        parts = name.split(".")
        lora_at = next((i for i, p in enumerate(parts) if p in ("lora_A", "lora_B")), None)
        if lora_at is None or lora_at == 0:
            raise AdapterValidationError(
                f"unexpected tensor {name}: only LoRA A/B matrices belong here"
            )
        modules.add(parts[lora_at - 1])
    unsupported = modules - limits.supported_modules
    if unsupported:
        raise AdapterValidationError(
            f"target modules {sorted(unsupported)} are not supported by the engine; use any of "
            f"{sorted(limits.supported_modules)}"
        )
    return modules
