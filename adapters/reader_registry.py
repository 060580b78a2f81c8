"""The reader registry: grounding readers versioned like adapters (v1, v2, ... and aliases such
as `prod` with their history), so every gateway replica loads the reader an alias names.

Records live in the control plane (`reader_versions`, `reader_aliases`, the shared audit log,
kind `reader`), files on the registry volume, written once and never changed:
    ROOT/NAME/VERSION/   manifest.json, the weights file it names, and eval_summary.json,
                         README.md, training_curve.png when the reader has them; registry.json
                         (the record at push)
A push copies into a hidden staging directory, checks the copied weights against the manifest's
sha256 and size, fsyncs the tree and renames it into place, all before the transaction that
records it commits: no version is visible that a crash or power loss could leave half-copied.

Promotion is judged by a `ReaderJudge` (the gateway's and the CLI's: the gate file
`eval/suites/reader.gate.yaml` through `eval.reader_gate`) on the manifest stored at push, inside
the transaction that moves the alias. Those figures are the reader's own training run's: see
`eval.reader_gate` for what that means for trust. Without a judge nothing promotes unforced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select

from adapters.errors import PromotionRefusedError, ReaderNotFoundError, ReaderValidationError
from adapters.names import check_alias, check_version
from adapters.versioned_registry import StoredVersion, VersionedRegistry
from adapters.versioning import (
    VersionTables,
    fsync_tree,
    label_number,
    new_staging,
    next_label,
    place_staged,
    refuse_taken_label,
    sweep,
    write_json,
)
from ragdock.contracts.base import ContractError
from ragdock.contracts.eval_report import GateVerdict, RuleVerdict
from ragdock.contracts.reader import READER_MANIFEST_FILE, ReaderManifest, read_reader_manifest
from ragdock.controlplane import ControlPlane
from ragdock.controlplane.schema import reader_aliases, reader_versions

log = logging.getLogger(__name__)

READERS = VersionTables("reader", reader_versions, reader_aliases, ReaderNotFoundError)
# The name `RAGDOCK_READER=auto` looks up (as `reader@prod`), and `ragdock up` pushes the shipped
# reader under.
DEFAULT_READER = "reader"
RECORD = "registry.json"
# Copied beside the manifest and its weights when present: the reader's report and curve.
REPORT_FILES = ("eval_summary.json", "README.md", "training_curve.png")
_BLOCK = 1 << 20

# The gate's verdict on a reader's stored manifest (what promote reads).
ReaderJudge = Callable[[ReaderManifest], GateVerdict]


def no_reader_gate(manifest: ReaderManifest) -> GateVerdict:
    """The judge of a registry given none: nothing passes."""
    rule = RuleVerdict(
        rule="a reader gate is configured", metric="gate", passed=False, observed="none",
        why="this registry was opened without a reader gate",
    )  # fmt: skip
    return GateVerdict(name="none", passed=False, verdicts=[rule])


@dataclass(frozen=True)
class ReaderVersion(StoredVersion):
    """A live reader version; `ref` is what RAGDOCK_READER names it by."""


class ReaderRegistry(VersionedRegistry[ReaderVersion]):
    """Reader versions, aliases and their audit log.

    Args:
        root: the directory of reader files (created if missing); a shared volume for replicas.
        control: the control plane holding the records (shared by replicas); default: an
            embedded SQLite file under ROOT/.registry, for one process.
        judge: the gate's verdict on a version's manifest; default: nothing passes.
    """

    tables = READERS
    version_type = ReaderVersion
    missing_version_param = "version"

    def __init__(
        self,
        root: Path,
        *,
        control: ControlPlane | None = None,
        judge: ReaderJudge = no_reader_gate,
    ) -> None:
        self.judge = judge
        super().__init__(root, control)

    # --- reads ------------------------------------------------------------------------------
    def manifest(self, version: ReaderVersion) -> ReaderManifest | None:
        """The manifest as validated and stored at push; None when this ragdock cannot read it
        any more (logged: it cannot promote)."""
        with self.control.read() as conn:
            return _stored_manifest(conn, version.name, version.version)

    def verdict(self, version: ReaderVersion) -> GateVerdict:
        """The gate's verdict on the version, as promote would reach it now."""
        manifest = self.manifest(version)
        return self.judge(manifest) if manifest is not None else _unreadable(version.ref)

    # --- writes -----------------------------------------------------------------------------
    def push(
        self, source: Path, name: str = DEFAULT_READER, *, version: str | None = None, actor: str
    ) -> ReaderVersion:
        """Validate and copy a reader directory in as a new version.

        Raises:
            ReaderValidationError: no valid manifest, or weights missing or not the ones the
                manifest records (sha256, size).
            AdapterConflictError: the label was ever used (labels are never reused).
        """
        self._checked_name(name)
        if version is not None:
            check_version(version)
        _checked_manifest(source)  # early: before a staging directory exists
        staging = new_staging(self.root, name)
        try:
            manifest = _copy_reader(source, staging)
            record = _record(manifest, actor)
            write_json(staging / RECORD, record)
            fsync_tree(staging)
            self.fault("copied")
            with self._transaction(name) as conn:
                label = version or next_label(conn, READERS, name)
                refuse_taken_label(conn, READERS, name, label)
                place_staged(staging, self.root / name / label)
                self.fault("renamed")
                conn.execute(reader_versions.insert().values(
                    name=name, version=label, number=label_number(label),
                    record=json.dumps(record), manifest=manifest.model_dump_json(),
                    pushed_at=record["pushed_at"], deleted_at=None,
                ))  # fmt: skip
                self._audit(conn, actor, "push", name, version=label,
                            detail={"weights_sha256": manifest.weights.sha256})  # fmt: skip
                self.fault("recorded")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        sweep(self.root / name)
        return self.get(name, label)

    def promote(
        self,
        name: str,
        version: str,
        alias: str,
        *,
        actor: str,
        force: bool = False,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """Point `alias` at `version`; refused unless the reader gate passes on its stored
        manifest. Existence and verdict are checked in the transaction that moves the alias.

        Args:
            force: move it whatever the verdict (the caller decides who may: platform admins
                only); audited as forced when the gate did not pass.
            reason: why, recorded in the audit entry.

        Raises:
            ReaderNotFoundError: the version does not exist (or was deleted).
            PromotionRefusedError: the gate did not pass, and `force` is false.
        """
        check_alias(alias)
        with self._transaction(name) as conn:
            target = self._get(conn, name, version)
            manifest = _stored_manifest(conn, name, version)
            gate = self.judge(manifest) if manifest is not None else _unreadable(target.ref)
            if not gate.passed and not force:
                raise PromotionRefusedError(
                    f"{target.ref} cannot be promoted to {alias}: its figures fail the reader "
                    f"gate `{gate.name}` ({', '.join(gate.failed_rules())}). Train or calibrate "
                    "it again, or have a platform admin force it (recorded in the audit log)",
                    param="version",
                )
            detail = {"forced": force and not gate.passed, "gate": gate.name,
                      "failed": gate.failed_rules()}  # fmt: skip
            return self._promote_checked(
                conn, name, version, alias, actor=actor, detail=detail, reason=reason
            )

    def rollback(self, name: str, alias: str, *, actor: str) -> dict[str, Any]:
        """Point `alias` back at the version it pointed at before.

        Raises:
            InvalidNameError: `name` is not a reader name (the adapter registry, unlike this
                one, reads such a name as having no such alias).
            ReaderNotFoundError: the alias does not exist.
            AdapterConflictError: the alias has no earlier version, or it was deleted.
        """
        return super().rollback(self._checked_name(name), alias, actor=actor)


def _checked_manifest(directory: Path) -> ReaderManifest:
    try:
        return read_reader_manifest(directory)
    except ContractError as exc:
        raise ReaderValidationError(str(exc), param="manifest") from None


def _copy_reader(source: Path, staging: Path) -> ReaderManifest:
    """Copy a reader's files into `staging` (created) and return the manifest as copied, once
    the copied weights are checked against it: what lands is what the manifest describes, even
    if the source changes meanwhile.

    Raises:
        ReaderValidationError: an invalid manifest, or weights missing, elsewhere, or not the
            manifest's (sha256, size).
    """
    staging.mkdir()
    shutil.copyfile(source / READER_MANIFEST_FILE, staging / READER_MANIFEST_FILE)
    manifest = _checked_manifest(staging)
    weights = manifest.weights.file
    if Path(weights).name != weights or weights.startswith(".") or weights in REPORT_FILES:
        raise ReaderValidationError(
            f"manifest weights.file {weights!r} must be a plain file name in the reader's "
            "directory",
            param="manifest",
        )
    if not (source / weights).is_file():
        raise ReaderValidationError(f"{source}: no {weights}, the manifest's weights file")
    digest, size = _copy_hashed(source / weights, staging / weights)
    if (digest, size) != (manifest.weights.sha256, manifest.weights.bytes):
        raise ReaderValidationError(
            f"{source / weights}: sha256 {digest[:16]}... ({size} bytes) is not the manifest's "
            f"{manifest.weights.sha256[:16]}... ({manifest.weights.bytes} bytes): the weights "
            "and the manifest are from different runs; copy both from one run's output",
            param="weights",
        )
    for name in REPORT_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, staging / name)
    return manifest


def _copy_hashed(source: Path, target: Path) -> tuple[str, int]:
    """Copy a file and return the sha256 and size of the bytes written (one read)."""
    digest, size = hashlib.sha256(), 0
    with source.open("rb") as reading, target.open("wb") as writing:
        for block in iter(lambda: reading.read(_BLOCK), b""):
            digest.update(block)
            size += len(block)
            writing.write(block)
    return digest.hexdigest(), size


def _stored_manifest(conn: Connection, name: str, version: str) -> ReaderManifest | None:
    t = reader_versions
    raw = conn.execute(
        select(t.c.manifest).where(t.c.name == name, t.c.version == version)
    ).scalar_one_or_none()
    if raw is None:
        return None
    try:
        return ReaderManifest.model_validate_json(raw)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        log.warning("the stored manifest of %s@%s does not parse: %s", name, version, exc)
        return None


def _unreadable(ref: str) -> GateVerdict:
    rule = RuleVerdict(
        rule="the stored manifest is readable", metric="manifest", passed=False,
        observed="unreadable", why=f"this ragdock cannot read the manifest stored for {ref}",
    )  # fmt: skip
    return GateVerdict(name="manifest", passed=False, verdicts=[rule])


def _record(manifest: ReaderManifest, actor: str) -> dict[str, Any]:
    return {
        "pushed_at": time.time(),
        "pushed_by": actor,
        "method": manifest.method,
        "base": f"{manifest.base.package} {manifest.base.version}",
        "weights_sha256": manifest.weights.sha256,
        "size_bytes": manifest.weights.bytes,
        "created_at": manifest.created_at,
        "calibrated": manifest.decision is not None,
    }
