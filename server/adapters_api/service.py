"""Adapter administration: the registry's rules plus the engine side (preload before an alias
moves, so a version that fails to load never displaces the one serving)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from adapters.errors import AdapterConflictError, AdapterNotFoundError, AdapterValidationError
from adapters.names import check_alias
from adapters.registry import AdapterRegistry, AdapterVersion, gate_verdict
from server.adapters_api.protocol import AdapterOut, AdapterVersionOut, AliasOut
from server.lora_manager import LoraManager


class AdapterService:
    def __init__(
        self, registry: AdapterRegistry, loras: LoraManager, max_upload_bytes: int
    ) -> None:
        self.registry = registry
        self._loras = loras
        self._max_upload_bytes = max_upload_bytes

    def list_all(self) -> list[AdapterOut]:
        return [self.summary(name) for name in self.registry.names()]

    def summary(self, name: str) -> AdapterOut:
        versions = [v.version for v in self.registry.versions(name)]
        if not versions:
            raise AdapterNotFoundError(f"adapter {name!r} does not exist", param="name")
        aliases = {a: e["version"] for a, e in self.registry.aliases(name).items()}
        return AdapterOut(name=name, versions=versions, aliases=aliases)

    def show(self, name: str, version: str) -> AdapterVersionOut:
        return self._describe(self.registry.get(name, version))

    def push_directory(
        self, source: Path, name: str, version: str | None, actor: str
    ) -> AdapterVersionOut:
        return self._describe(self.registry.push(source, name, version=version, actor=actor))

    def push_files(
        self, files: list[tuple[str, bytes]], name: str, version: str | None, actor: str
    ) -> AdapterVersionOut:
        """Push uploaded files (flat: file names only, no directories).

        Raises:
            AdapterValidationError: unsafe file names or too large an upload.
        """
        total = sum(len(content) for _, content in files)
        if total > self._max_upload_bytes:
            raise AdapterValidationError(
                f"upload of {total / 2**20:.0f} MiB is over the "
                f"{self._max_upload_bytes / 2**20:.0f} MiB limit"
            )
        staging = Path(tempfile.mkdtemp(prefix="ragdock-upload-"))
        try:
            for filename, content in files:
                if not filename or Path(filename).name != filename or filename.startswith("."):
                    raise AdapterValidationError(
                        f"file name {filename!r} is not allowed: upload plain file names only"
                    )
                (staging / filename).write_bytes(content)
            return self.push_directory(staging, name, version, actor)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def attach_eval_report(
        self, name: str, version: str, report: dict[str, Any], actor: str
    ) -> AdapterVersionOut:
        self.registry.attach_eval_report(name, version, report, actor=actor)
        return self.show(name, version)

    async def promote(
        self, name: str, version: str, alias: str, force: bool, actor: str
    ) -> AliasOut:
        check_alias(alias)
        target = self.registry.get(name, version)
        passed, _ = gate_verdict(self.registry.eval_report(target))
        if passed or force:
            # Load first: if the engine refuses it, the alias stays where it was.
            await self._loras.ensure_loaded(target.ref, target.path)
        entry = self.registry.promote(name, version, alias, actor=actor, force=force)
        return AliasOut(name=name, alias=alias, version=entry["version"], history=entry["history"])

    async def rollback(self, name: str, alias: str, actor: str) -> AliasOut:
        entry = self.registry.aliases(name).get(check_alias(alias))
        if entry is None:
            raise AdapterNotFoundError(f"{name} has no alias {alias!r}", param="alias")
        if not entry["history"]:
            raise AdapterConflictError(f"{name}@{alias} has no earlier version", param="alias")
        previous = self.registry.get(name, entry["history"][-1])
        await self._loras.ensure_loaded(previous.ref, previous.path)
        moved = self.registry.rollback(name, alias, actor=actor)
        return AliasOut(name=name, alias=alias, version=moved["version"], history=moved["history"])

    async def delete(self, name: str, version: str, actor: str) -> None:
        target = self.registry.get(name, version)
        self.registry.delete(name, version, actor=actor)
        await self._loras.unload(target.ref)

    def _describe(self, version: AdapterVersion) -> AdapterVersionOut:
        return AdapterVersionOut(
            name=version.name,
            version=version.version,
            model=version.ref,
            record=version.record,
            manifest=self.registry.manifest(version),
            eval_report=self.registry.eval_report(version),
        )
