"""The reader registry as the gateway, `ragdock readers` and `ragdock up` open it, and how `up`
registers the reader shipped in the repo so a fresh machine has a promoted one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from adapters.errors import PromotionRefusedError
from adapters.reader_registry import DEFAULT_READER, ReaderRegistry
from eval.reader_gate import evaluate_reader_gate, load_reader_gate
from ragdock.contracts.eval_report import GateVerdict
from ragdock.contracts.reader import ReaderManifest, read_reader_manifest
from ragdock.controlplane import ControlPlane
from ragdock.settings import Settings
from server.rag.reading import PROMOTED_ALIAS, SHIPPED_READER


def open_reader_registry(settings: Settings, control: ControlPlane) -> ReaderRegistry:
    """The reader registry over the shared control plane, judged by the reader gate file.

    Raises:
        SuiteError: the configured `reader_promotion_gate` cannot be read or is not valid.
    """
    gate = load_reader_gate(settings.reader_promotion_gate)

    def judge(manifest: ReaderManifest) -> GateVerdict:
        return evaluate_reader_gate(manifest, gate)

    return ReaderRegistry(settings.reader_registry_dir, control=control, judge=judge)


def register_shipped_reader(
    registry: ReaderRegistry, *, actor: str, shipped: Path = SHIPPED_READER
) -> str:
    """Push the shipped reader unless the registry's newest `reader` version is it already,
    and point `reader@prod` at it when its gate passes and no one else moved the alias.

    An operator's own promotion or rollback of `reader@prod` is never undone: `up` moves the
    alias only when it is missing or `actor` (up itself) moved it last. So a repo that ships a
    retrained reader reaches prod on the next `up`, unless someone chose a reader by hand.

    Returns:
        One line saying what happened, for the start-up output.

    Raises:
        ReaderValidationError: the shipped reader's manifest or weights are broken.
    """
    if not (shipped / "manifest.json").is_file():
        return f"no shipped reader in {shipped}"
    versions = registry.versions(DEFAULT_READER)
    latest = versions[-1] if versions else None
    if latest is None or registry.manifest(latest) != read_reader_manifest(shipped):
        latest = registry.push(shipped, DEFAULT_READER, actor=actor)
    prod = registry.aliases(DEFAULT_READER).get(PROMOTED_ALIAS)
    served = f"{DEFAULT_READER}@{PROMOTED_ALIAS}"
    if prod is not None and prod["version"] == latest.version:
        return f"{served} is the shipped reader ({latest.ref})"
    if prod is not None and _last_move(registry.audit_entries(DEFAULT_READER)) != actor:
        return f"{served} stays {prod['version']} (an operator chose it); shipped: {latest.ref}"
    try:
        registry.promote(DEFAULT_READER, latest.version, PROMOTED_ALIAS, actor=actor)
    except PromotionRefusedError as exc:
        return f"shipped reader {latest.ref} not promoted: {exc.message}"
    return f"{served} -> {latest.ref} (the shipped reader; its gate passed)"


def _last_move(entries: list[dict[str, Any]]) -> str | None:
    """Who last promoted or rolled back the prod alias."""
    moves = [
        e for e in entries
        if e["alias"] == PROMOTED_ALIAS and e["action"] in ("promote", "rollback")
    ]  # fmt: skip
    return moves[-1]["actor"] if moves else None
