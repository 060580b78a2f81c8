"""`ragdock-build.json`: what `ragdock model build` records beside the checkpoint it built, so a
later run can verify the files instead of rebuilding, and adapters can name the weights they were
trained on."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import Field

from ragdock.contracts.base import Contract, ContractError, parse, read_json

BUILD_MANIFEST = "ragdock-build.json"
# Files that hold the model itself (not its tokenizer or chat template): the weights digest
# covers these, so refreshing a template does not change which adapters fit the checkpoint.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")
_WEIGHT_NAMES = ("config.json", "model.safetensors.index.json")


class BuildSource(Contract):
    package: str
    version: str
    gguf_sha256: str


class BuildManifest(Contract):
    builder_version: int
    model_id: str
    source: BuildSource
    dtype: str
    build_seconds: float
    files: dict[str, str] = Field(description="File name -> sha256 of every file of the build.")

    def weights_digest(self) -> str:
        """A short identity of the weights: a hash over the recorded sha256 of the config and
        weight files (no file is read again)."""
        return digest_of(
            {n: s for n, s in self.files.items() if _is_weights(n)} or dict(self.files)
        )


def digest_of(files: dict[str, str]) -> str:
    """16 hex digits over `name=sha256` lines, sorted by name."""
    lines = "".join(f"{name}={files[name]}\n" for name in sorted(files))
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


def _is_weights(name: str) -> bool:
    return name in _WEIGHT_NAMES or name.endswith(_WEIGHT_SUFFIXES)


def read_build_manifest(directory: Path) -> BuildManifest | None:
    """The build manifest of a checkpoint ragdock built; None for a checkpoint from elsewhere.

    Raises:
        ContractError: the file is there but is not a build manifest this version reads.
    """
    path = directory / BUILD_MANIFEST
    if not path.is_file():
        return None
    return parse(
        BuildManifest,
        read_json(path),
        source=str(path),
        fix="delete the checkpoint directory and run `ragdock model build` to rebuild it",
    )


__all__ = ["BUILD_MANIFEST", "BuildManifest", "ContractError", "read_build_manifest"]
