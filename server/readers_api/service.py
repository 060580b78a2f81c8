"""Reader administration over HTTP. Every gateway replica grounds every tenant's answers with
the one reader RAGDOCK_READER names, so changing the registry is the platform's business: tenant
admins may look, platform admins push, promote (forcing past the gate, audited), roll back and
delete. A promotion reaches a gateway when it next starts (the reader is loaded at start)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapters.errors import ReaderNotFoundError
from adapters.names import check_alias
from adapters.reader_registry import ReaderRegistry, ReaderVersion
from server.adapters_api.protocol import AliasOut
from server.adapters_api.service import actor_id
from server.auth import Principal
from server.readers_api.protocol import ReaderOut, ReaderVersionOut


class ReaderService:
    def __init__(self, registry: ReaderRegistry) -> None:
        self.registry = registry

    def list_all(self) -> list[ReaderOut]:
        return [self.summary(name) for name in self.registry.names()]

    def summary(self, name: str) -> ReaderOut:
        versions = [v.version for v in self.registry.versions(name)]
        if not versions:
            raise ReaderNotFoundError(f"reader {name!r} does not exist", param="name")
        aliases = {a: e["version"] for a, e in self.registry.aliases(name).items()}
        return ReaderOut(name=name, versions=versions, aliases=aliases)

    def show(self, name: str, version: str) -> ReaderVersionOut:
        return self._describe(self.registry.get(name, version))

    def audit(self, name: str) -> list[dict[str, Any]]:
        return self.registry.audit_entries(name)

    def push(
        self, source: Path, name: str, version: str | None, who: Principal
    ) -> ReaderVersionOut:
        pushed = self.registry.push(source, name, version=version, actor=actor_id(who))
        return self._describe(pushed)

    def promote(
        self, name: str, version: str, alias: str, force: bool, who: Principal, reason: str | None
    ) -> AliasOut:
        """Raises PromotionRefusedError: the gate did not pass and `force` is false."""
        entry = self.registry.promote(
            name, version, check_alias(alias), actor=actor_id(who), force=force, reason=reason
        )
        return AliasOut.from_entry(name, alias, entry)

    def rollback(self, name: str, alias: str, who: Principal) -> AliasOut:
        entry = self.registry.rollback(name, alias, actor=actor_id(who))
        return AliasOut.from_entry(name, alias, entry)

    def delete(self, name: str, version: str, who: Principal) -> None:
        self.registry.delete(name, version, actor=actor_id(who))

    def _describe(self, version: ReaderVersion) -> ReaderVersionOut:
        return ReaderVersionOut(
            name=version.name,
            version=version.version,
            ref=version.ref,
            record=version.record,
            manifest=self.registry.manifest(version),
            verdict=self.registry.verdict(version),
        )
