"""Does an adapter belong to the base model the engine serves?

A LoRA trained on another base loads without complaint and produces garbage, so the registry checks
before it accepts one: by the base's weights digest when the adapter's manifest records it
(ragdock's own training does), otherwise by the base model name in adapter_config.json.

Manifests of version 1 recorded a digest of the base's build manifest instead, which also changes
when only the chat template is refreshed: such an adapter passes when that digest still matches,
and is otherwise matched by name, with a warning that says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.errors import AdapterValidationError
from ragdock.contracts.adapter_manifest import AdapterManifest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BaseModelIdentity:
    """The base the engine serves: its model id (e.g. google/gemma-3-270m), its checkpoint path,
    its weights digest (engine.model_build.checkpoint_digest) and the version-1 digest of its
    build manifest (engine.model_build.build_manifest_digest)."""

    model_id: str
    path: str = ""
    digest: str = ""
    build_digest: str = ""

    def names(self) -> set[str]:
        found = {_short(self.model_id)}
        if self.path:
            found.add(_short(self.path))
        return {n for n in found if n}


def _short(name: str) -> str:
    return Path(name.rstrip("/")).name.lower()


def check_base_model(
    config: dict[str, Any], manifest: AdapterManifest | None, served: BaseModelIdentity
) -> None:
    """Raises AdapterValidationError when the adapter was trained on another base model."""
    recorded = manifest.base_model if manifest is not None else None
    if recorded is not None and recorded.digest and served.digest:
        if recorded.digest != served.digest:
            raise AdapterValidationError(
                f"the adapter was trained on base weights {recorded.digest}, but the engine "
                f"serves {served.model_id} with weights {served.digest}: retrain on the served "
                "base (or serve the base it was trained on)",
                param="base_model",
            )
        return
    if recorded is not None and recorded.build_digest and served.build_digest:
        if recorded.build_digest == served.build_digest:
            return
        log.warning(
            "adapter manifest (version 1) records base build %s, the engine serves build %s; "
            "version 1 cannot tell a refreshed chat template from other weights, so the base "
            "is checked by name only: retrain to record the weights digest",
            recorded.build_digest,
            served.build_digest,
        )
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
