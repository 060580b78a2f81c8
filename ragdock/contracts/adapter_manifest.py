"""`manifest.json` of an adapter: what `ragdock train` records about a run, and what the registry,
the gateway's answerability calibration, the eval runner and the base-model check read from it.

Version 2 (this one) records the base model's *weights* digest (`base_model.digest`, see
`engine.model_build.checkpoint_digest`). Version 1 recorded a hash of the base's build manifest
under the same key, which also changes when only the tokenizer's chat template is refreshed; it is
read as `base_model.build_digest`, and such an adapter is matched to the served base by name (with
a warning) unless its build digest still matches.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ragdock.contracts.base import Contract, ContractError, parse, read_json, write_json_atomic

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION: Literal[2] = 2
_FIX = (
    "this file is written by `ragdock train` (and its `calibration` block by `ragdock eval "
    "calibrate`): correct the field named, or retrain to write a current manifest"
)


class BaseModelRef(Contract):
    name: str = Field(description="The model the training config named (e.g. gemma-3-270m).")
    id: str = Field(description="Its model id (e.g. google/gemma-3-270m).")
    digest: str | None = Field(
        None, description="Digest of the base checkpoint's weights (checkpoint_digest)."
    )
    build_digest: str | None = Field(
        None, description="Version 1's digest: a hash of the base's build manifest (legacy)."
    )


class AdapterShape(Contract):
    r: int
    alpha: int | float
    target_modules: list[str] | str
    files: dict[str, str] = Field(description="File name -> sha256 of the PEFT files.")
    weights_from_step: int


class DataFile(Contract):
    path: str
    sha256: str
    examples: int


class Leakage(Contract):
    status: str
    exact: int = 0
    near: int = 0
    threshold: float = 0.0
    pairs: list[dict[str, Any]] = Field(default_factory=list)


class DataRecord(Contract):
    files: dict[str, DataFile] = Field(description="Role (train, validation, holdout) -> file.")
    train_examples: int
    validation_examples: int
    duplicates_dropped: int
    too_long_dropped: int
    train_tokens: int
    train_label_tokens: int
    leakage: Leakage


class Hardware(Contract):
    device: str
    torch_threads: int
    dtype: dict[str, Any] | None = Field(
        None, description="The compute dtype chosen and why (ragdock.compute_dtype)."
    )


class TrainMetrics(Contract):
    steps: int
    epochs: float
    first_train_loss: float | None
    final_train_loss: float | None
    best_eval_loss: float | None
    best_step: int | None
    stopped_early: bool
    tokens_seen: int
    tokens_per_second: float
    train_seconds: float
    wall_seconds: float


class CalibrationFit(Contract):
    """Where a calibration was fitted: the articles, corpus and model it asked."""

    articles: list[str]
    at: str
    corpus: str
    model: str
    top_k: int


class CalibrationBlock(Contract):
    """Answerability calibration: logistic weights over named signals and a threshold on the
    probability, fitted on validation articles for a target hallucination rate."""

    features: list[str]
    weights: list[float]
    bias: float
    threshold: float
    target_hallucination: float
    validation: dict[str, Any] = Field(default_factory=dict)
    enforced: bool = True
    fitted: CalibrationFit | None = None


class AdapterManifest(Contract):
    manifest_version: Literal[2] = MANIFEST_VERSION
    kind: Literal["lora-adapter"] = "lora-adapter"
    created_at: str
    base_model: BaseModelRef
    method: Literal["lora", "qlora"]
    adapter: AdapterShape
    data: DataRecord
    seed: int
    config: dict[str, Any] = Field(description="The training config as run (TrainConfig).")
    libraries: dict[str, str]
    hardware: Hardware
    metrics: TrainMetrics
    calibration: CalibrationBlock | None = None

    def write(self, directory: Path) -> Path:
        path = directory / MANIFEST_FILE
        write_json_atomic(path, self)
        return path


def migrate(data: Mapping[str, Any]) -> dict[str, Any]:
    """An older manifest in the current shape (a copy; the input is left as it was).

    Version 1 -> 2: `base_model.digest` hashed the base's build manifest, so it moves to
    `base_model.build_digest`.
    """
    migrated = dict(data)
    version = migrated.get("manifest_version")
    if version == 1:
        base = dict(migrated.get("base_model") or {})
        if "digest" in base:
            base["build_digest"] = base.pop("digest")
        migrated["base_model"] = base
        migrated["manifest_version"] = 2
    return migrated


def parse_adapter_manifest(data: object, *, source: str) -> AdapterManifest:
    """Validate a manifest (of any version this code knows), migrated to the current shape.

    Raises:
        ContractError: not a manifest, an unknown version, or a field missing, unknown or wrong.
    """
    if not isinstance(data, Mapping):
        raise ContractError(source, [("(root)", "is not a JSON object")], _FIX)
    version = data.get("manifest_version")
    if version not in (1, MANIFEST_VERSION):
        raise ContractError(
            source,
            [("manifest_version", f"{version!r} is not a version this ragdock reads (1, 2)")],
            "upgrade ragdock, or retrain the adapter with this version",
        )
    return parse(AdapterManifest, migrate(data), source=source, fix=_FIX)


def read_adapter_manifest(directory: Path) -> AdapterManifest | None:
    """The manifest in an adapter directory; None when it has none (adapters trained elsewhere).

    Raises:
        ContractError: the file is there but is not a valid manifest.
    """
    path = directory / MANIFEST_FILE
    if not path.is_file():
        return None
    return parse_adapter_manifest(read_json(path), source=str(path))
