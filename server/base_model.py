"""The identity of the served base model, which adapters must match."""

from __future__ import annotations

import json
from pathlib import Path

from adapters.base_match import BaseModelIdentity
from adapters.validation import module_shapes_from_config
from engine.model_build import (
    DEFAULT_MODEL,
    build_manifest_digest,
    checkpoint_digest,
    default_model_dir,
    is_hf_checkpoint,
)
from ragdock.settings import Settings

DEFAULT_MODEL_ID = "google/gemma-3-270m"


def served_base_identity(settings: Settings) -> BaseModelIdentity:
    if settings.model == DEFAULT_MODEL:
        path = default_model_dir(settings.home)
        model_id = settings.base_model_id or DEFAULT_MODEL_ID
    else:
        path = Path(settings.model).expanduser()
        model_id = settings.base_model_id or settings.model
    if not is_hf_checkpoint(path):  # an external engine's model: checked by name
        return BaseModelIdentity(model_id=model_id, path=str(path))
    return BaseModelIdentity(
        model_id=model_id,
        path=str(path),
        digest=checkpoint_digest(path),
        build_digest=build_manifest_digest(path),
    )


def served_module_shapes(settings: Settings) -> dict[str, tuple[int, int]] | None:
    """The base's LoRA-able layer shapes, when its checkpoint is readable here."""
    identity = served_base_identity(settings)
    config = Path(identity.path) / "config.json"
    if not config.is_file():
        return None  # an external engine's model: the engine will check shapes itself
    return module_shapes_from_config(json.loads(config.read_text()))


def engine_model_argument(settings: Settings) -> str:
    """The engine's `--model` value: vLLM's filesystem LoRA resolver accepts an adapter only
    when its base_model_name_or_path equals exactly this."""
    if settings.model == DEFAULT_MODEL:
        return str(default_model_dir(settings.home))
    return settings.model
