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
from typing import Any, TypeGuard

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
# A LoRA's header holds one entry of ~150 bytes per matrix (a few hundred KB for the largest
# models); this leaves room for 100,000 matrices and bounds what parsing a hostile one costs.
_MAX_HEADER_BYTES = 16 * 1024 * 1024
# Bytes per element of the dtypes safetensors defines; anything else is not a safetensors file.
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
    "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip


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

    The whole header is checked as the safetensors loader would check it (every entry an object
    with a known dtype, a shape of non-negative integers and offsets that match it inside the
    file), so a malformed file is refused here and never reaches the engine.

    Raises:
        AdapterValidationError: the file is not a valid safetensors file.
    """
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise AdapterValidationError(f"{path.name} is not a safetensors file (too short)")
        (length,) = struct.unpack("<Q", prefix)
        if length > _MAX_HEADER_BYTES or length > size - 8:
            raise AdapterValidationError(
                f"{path.name} is not a safetensors file: its header claims {length} bytes "
                f"(the file has {size - 8} after the length, and headers are at most "
                f"{_MAX_HEADER_BYTES} bytes); re-save it with safetensors"
            )
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AdapterValidationError(f"{path.name} is not a safetensors file: {exc}") from exc
        except RecursionError:
            raise AdapterValidationError(
                f"{path.name} is not a safetensors file: its header nests too deeply"
            ) from None
    if not isinstance(header, dict):
        raise AdapterValidationError(f"{path.name} is not a safetensors file")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise AdapterValidationError(
            f"{path.name} is not a safetensors file: __metadata__ must map names to strings"
        )
    data_bytes = size - 8 - length
    for name, entry in header.items():
        problem = _entry_problem(entry, data_bytes)
        if problem:
            raise AdapterValidationError(
                f"{path.name} is not a safetensors file: tensor {name[:200]!r} {problem}; "
                "re-save it with safetensors"
            )
    return header


def _entry_problem(entry: object, data_bytes: int) -> str | None:
    """What is wrong with one tensor's header entry, or None."""
    if not isinstance(entry, dict):
        return f"is a JSON {type(entry).__name__}, not an object"
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in _DTYPE_BYTES:
        return f"has dtype {str(dtype)[:40]!r}, which safetensors does not define"
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        return "has a shape that is not a list of non-negative integers"
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_count(o) for o in offsets)
        or not offsets[0] <= offsets[1] <= data_bytes
    ):
        return f"has data_offsets outside the file's {data_bytes} data bytes"
    elements = 1
    for dim in shape:
        elements *= dim
    if offsets[1] - offsets[0] != elements * _DTYPE_BYTES[dtype]:
        return f"has {offsets[1] - offsets[0]} data bytes, not the {shape} of {dtype} it claims"
    return None


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise AdapterValidationError(f"{ADAPTER_CONFIG} is missing: push a PEFT adapter directory")
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterValidationError(f"{ADAPTER_CONFIG} does not parse: {exc}") from exc
    except RecursionError:
        raise AdapterValidationError(f"{ADAPTER_CONFIG} nests too deeply") from None
    if not isinstance(config, dict):
        raise AdapterValidationError(f"{ADAPTER_CONFIG} must be a JSON object")
    return config


def _check_config(config: dict[str, Any], limits: AdapterLimits) -> None:
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise AdapterValidationError(
            f"peft_type is {config.get('peft_type')!r}; only LoRA adapters can be served"
        )
    rank = config.get("r")
    if not _is_count(rank) or rank < 1:
        raise AdapterValidationError(f"r must be a positive integer in {ADAPTER_CONFIG}")
    pattern = config.get("rank_pattern") or {}
    if not isinstance(pattern, dict) or not all(_is_count(r) and r > 0 for r in pattern.values()):
        raise AdapterValidationError(
            f"rank_pattern must map module names to positive integers in {ADAPTER_CONFIG}"
        )
    alpha = config.get("lora_alpha", rank)
    if not isinstance(alpha, int | float) or isinstance(alpha, bool):
        raise AdapterValidationError(f"lora_alpha must be a number in {ADAPTER_CONFIG}")
    ranks = [rank, *pattern.values()]
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
