"""Adapter administration: the registry's rules plus the engine side (preload before an alias
moves, so a version that fails to load never displaces the one serving), and who may do what.

A tenant admin sees its tenant's adapters and the shared ones, and manages its tenant's; an
adapter it pushes is its tenant's alone. Shared adapters (and those pushed before owners were
recorded) are managed by platform admins. Another tenant's adapter does not exist for a caller:
404, never 403, so names do not leak.

Promotion goes by the platform's verdict (`registry.verdict`), never a report's own claim; only
a platform admin may force it past that verdict, and the audit log says so. Every record names
its actor as TENANT/KEY-NAME (`actor_id`): key names are unique within a tenant only."""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from adapters.errors import AdapterConflictError, AdapterNotFoundError, AdapterValidationError
from adapters.names import check_alias
from adapters.registry import AdapterRegistry, AdapterVersion, usable_by
from adapters.training_history import read_training_history
from server.adapters_api.protocol import AdapterOut, AdapterVersionOut, AliasOut
from server.auth import PLATFORM, Principal, viewer_of
from server.errors import PermissionDeniedError
from server.lora_manager import LoraManager


def actor_id(who: Principal) -> str:
    """How the registry's records and audit log name a caller: its tenant and its key's name."""
    return f"{who.tenant}/{who.name}"


class AdapterService:
    def __init__(
        self, registry: AdapterRegistry, loras: LoraManager, max_upload_bytes: int
    ) -> None:
        self.registry = registry
        self._loras = loras
        self._max_upload_bytes = max_upload_bytes

    # --- who may do what ----------------------------------------------------------------------
    def _visible(self, name: str, who: Principal) -> None:
        if not self.registry.may_use(name, viewer_of(who)):
            raise AdapterNotFoundError(f"adapter {name!r} does not exist", param="name")

    def _manageable(self, name: str, who: Principal) -> None:
        """Raises unless `who` may change `name` (a name nobody pushed yet is free to take)."""
        _check_manageable(
            name, who, self.registry.ownership(name), bool(self.registry.versions(name))
        )

    # --- reads ------------------------------------------------------------------------------
    def list_all(self, who: Principal) -> list[AdapterOut]:
        return [self.summary(name, who) for name in self.registry.names(viewer_of(who))]

    def audit(self, name: str, who: Principal) -> list[dict[str, Any]]:
        self._visible(name, who)
        return self.registry.audit_entries(name)

    def summary(self, name: str, who: Principal) -> AdapterOut:
        self._visible(name, who)
        versions = [v.version for v in self.registry.versions(name)]
        if not versions:
            raise AdapterNotFoundError(f"adapter {name!r} does not exist", param="name")
        aliases = {a: e["version"] for a, e in self.registry.aliases(name).items()}
        return AdapterOut(name=name, versions=versions, aliases=aliases)

    def show(self, name: str, version: str, who: Principal) -> AdapterVersionOut:
        self._visible(name, who)
        return self._describe(self.registry.get(name, version))

    # --- writes -----------------------------------------------------------------------------
    def push_directory(
        self, source: Path, name: str, version: str | None, who: Principal
    ) -> AdapterVersionOut:
        """A new version; a new name becomes the caller's tenant's (a platform admin's:
        shared)."""
        self._manageable(name, who)  # early, before the files are validated and copied

        def authorize(ownership: tuple[str, str] | None, has_versions: bool) -> None:
            # Again in the push's transaction: another tenant may have taken the name since.
            _check_manageable(name, who, ownership, has_versions)

        pushed = self.registry.push(
            source, name, version=version, actor=actor_id(who), owner=who.tenant,
            visibility="shared" if who.can(PLATFORM) else "tenant", authorize=authorize,
        )  # fmt: skip
        return self._describe(pushed)

    def push_files(
        self,
        files: Sequence[tuple[str, BinaryIO | bytes]],
        name: str,
        version: str | None,
        who: Principal,
    ) -> AdapterVersionOut:
        """Push uploaded files (flat: file names only, no directories), copied in pieces.

        Raises:
            AdapterValidationError: unsafe file names or too large an upload.
        """
        self._manageable(name, who)  # before copying anything
        staging = Path(tempfile.mkdtemp(prefix="ragdock-upload-"))
        try:
            total = 0
            for filename, content in files:
                if not filename or Path(filename).name != filename or filename.startswith("."):
                    raise AdapterValidationError(
                        f"file name {filename!r} is not allowed: upload plain file names only"
                    )
                source = io.BytesIO(content) if isinstance(content, bytes) else content
                with (staging / filename).open("wb") as target:
                    while piece := source.read(1 << 20):
                        total += len(piece)
                        if total > self._max_upload_bytes:
                            raise AdapterValidationError(
                                f"upload is over the {self._max_upload_bytes / 2**20:.0f} MiB limit"
                            )
                        target.write(piece)
            return self.push_directory(staging, name, version, who)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def attach_eval_report(
        self, name: str, version: str, report: dict[str, Any], who: Principal
    ) -> AdapterVersionOut:
        self._manageable(name, who)
        self.registry.attach_eval_report(name, version, report, actor=actor_id(who))
        return self.show(name, version, who)

    async def promote(
        self,
        name: str,
        version: str,
        alias: str,
        force: bool,
        who: Principal,
        reason: str | None = None,
    ) -> AliasOut:
        """Move `alias` to `version` when the platform's verdict on its report passed, or when
        a platform admin forces it.

        Raises:
            PermissionDeniedError: `force` from a key without the platform scope.
            PromotionRefusedError: the verdict did not pass (ReportNotVerifiedError: the report
                is not the platform's measurement), unforced.
        """
        self._manageable(name, who)
        check_alias(alias)
        if force and not who.can(PLATFORM):
            raise PermissionDeniedError(
                "only a platform admin (scope 'platform') may force a promotion past the "
                "platform's verdict; promote without force, on a report the platform measured",
                code="missing_scope",
            )
        target = self.registry.get(name, version)
        if force or self.registry.verdict(target).passed:
            # Load first: if the engine refuses it, the alias stays where it was.
            await self._loras.ensure_loaded(target.ref, target.path)
        entry = self.registry.promote(
            name, version, alias, actor=actor_id(who), force=force, reason=reason
        )
        return AliasOut.from_entry(name, alias, entry)

    async def rollback(self, name: str, alias: str, who: Principal) -> AliasOut:
        self._manageable(name, who)
        entry = self.registry.aliases(name).get(check_alias(alias))
        if entry is None:
            raise AdapterNotFoundError(f"{name} has no alias {alias!r}", param="alias")
        if not entry["history"]:
            raise AdapterConflictError(f"{name}@{alias} has no earlier version", param="alias")
        previous = self.registry.get(name, entry["history"][-1])
        await self._loras.ensure_loaded(previous.ref, previous.path)
        moved = self.registry.rollback(name, alias, actor=actor_id(who))
        return AliasOut.from_entry(name, alias, moved)

    async def delete(self, name: str, version: str, who: Principal) -> None:
        self._manageable(name, who)
        target = self.registry.get(name, version)
        self.registry.delete(name, version, actor=actor_id(who))
        await self._loras.unload(target.ref)

    def _describe(self, version: AdapterVersion) -> AdapterVersionOut:
        return AdapterVersionOut(
            name=version.name,
            version=version.version,
            model=version.ref,
            record=version.record,
            manifest=self.registry.manifest(version),
            eval_report=self.registry.eval_report(version),
            verdict=self.registry.verdict(version),
            training_history=read_training_history(version.path),
        )


def _check_manageable(
    name: str, who: Principal, ownership: tuple[str, str] | None, has_versions: bool
) -> None:
    """Whether `who` may change adapter `name`, given its (owner, visibility) and whether it
    has live versions.

    Raises:
        AdapterNotFoundError: the name is another tenant's (it does not exist for `who`).
        PermissionDeniedError: the name is shared and `who` is not a platform admin.
    """
    viewer = viewer_of(who)
    if viewer is not None and not usable_by(ownership, viewer):
        raise AdapterNotFoundError(f"adapter {name!r} does not exist", param="name")
    if who.can(PLATFORM) or ownership == (who.tenant, "tenant"):
        return
    if ownership is None and not has_versions:
        return
    raise PermissionDeniedError(
        f"adapter {name!r} is shared by every tenant: only a platform admin (scope "
        "'platform') may change it",
        code="missing_scope",
    )
