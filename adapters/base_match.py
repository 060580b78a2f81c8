"""Does an adapter belong to the base model the engine serves?

A LoRA trained on another base loads without complaint and produces garbage, so the registry checks
before it accepts one: by checkpoint digest when the adapter's manifest records it (ragdock's own
training does), otherwise by the base model name in adapter_config.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.errors import AdapterValidationError


@dataclass(frozen=True)
class BaseModelIdentity:
    """The base the engine serves: its model id (e.g. google/gemma-3-270m), its checkpoint path
    and a digest of the checkpoint (see engine.model_build.checkpoint_digest)."""

    model_id: str
    path: str = ""
    digest: str = ""

    def names(self) -> set[str]:
        found = {_short(self.model_id)}
        if self.path:
            found.add(_short(self.path))
        return {n for n in found if n}


def _short(name: str) -> str:
    return Path(name.rstrip("/")).name.lower()


def check_base_model(
    config: dict[str, Any], manifest: dict[str, Any] | None, served: BaseModelIdentity
) -> None:
    """Raises AdapterValidationError when the adapter was trained on another base model."""
    recorded = (manifest or {}).get("base_model") or {}
    digest = recorded.get("checksum") if isinstance(recorded, dict) else None
    if digest and served.digest:
        if digest != served.digest:
            raise AdapterValidationError(
                f"the adapter was trained on base checkpoint {digest}, but the engine serves "
                f"{served.model_id} ({served.digest}): retrain on the served base",
                param="base_model",
            )
        return
    claimed = str(config.get("base_model_name_or_path") or "")
    if not claimed:
        raise AdapterValidationError(
            "adapter_config.json names no base_model_name_or_path, so the base cannot be checked: "
            f"set it to {served.model_id}",
            param="base_model",
        )
    if _short(claimed) not in served.names():
        raise AdapterValidationError(
            f"the adapter was trained on {claimed!r}, but the engine serves {served.model_id!r}: "
            "retrain on the served base",
            param="base_model",
        )
