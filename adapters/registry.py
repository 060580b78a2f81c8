"""The adapter registry: records in the control plane, weights as files on a (shared) volume.

The control plane (`ragdock.controlplane`) holds every version ever pushed (a deleted one keeps its
row, so its label `NAME@vN` is never handed out again and no engine replica can cache other weights
under it), the aliases with their history, eval reports with the platform's verdict on them, and
the audit log. Each operation is one transaction, with the audit entry in it.

An eval report is evidence, not a verdict: the registry never reads a report's own `gate`. A
`Judge` (the platform's: `eval.verdict.PlatformJudge`, given by the gateway) computes the verdict
from a report the platform signed, against the platform's gate; promote asks it again, inside the
transaction that moves the alias. Without a judge nothing verifies, so nothing promotes unforced.

Files, written once and never changed:
    ROOT/NAME/VERSION/             PEFT files, manifest.json, registry.json (the record at push)
    ROOT/.resolver/NAME@VERSION/   the same adapter as vLLM's filesystem LoRA resolver wants it:
                                   named as requests name it, base_model_name_or_path = the
                                   engine's --model value (the resolver checks that)
A push copies into a hidden staging directory, fsyncs every file and directory, renames it into
place and fsyncs the parent, all before the transaction that records it commits: a record never
points at files a power loss could take back. A crash before that commit leaves an unrecorded
directory, which the next push of that label moves aside.

Registries from before the control plane (aliases.json, audit.log and registry.json files) are
imported on open, one adapter name at a time, the files left as they were.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, select, update

from adapters.base_match import BaseModelIdentity, check_base_model
from adapters.errors import (
    AdapterNotFoundError,
    AdapterValidationError,
    PromotionRefusedError,
    ReportNotVerifiedError,
)
from adapters.names import check_alias, check_name, check_version
from adapters.validation import AdapterInfo, AdapterLimits, validate_adapter_dir
from adapters.versioned_registry import StoredVersion, VersionedRegistry
from adapters.versioning import (
    VersionTables,
    fsync_dir,
    fsync_tree,
    has_live_version,
    label_number,
    new_staging,
    next_label,
    place_staged,
    refuse_taken_label,
    set_alias,
    sweep,
    write_json,
)
from ragdock.contracts.adapter_manifest import AdapterManifest, read_adapter_manifest
from ragdock.contracts.base import ContractError
from ragdock.contracts.eval_report import EvalReport, PlatformVerdict, parse_eval_report
from ragdock.controlplane import ControlPlane
from ragdock.controlplane.schema import (
    adapter_aliases,
    adapter_owners,
    adapter_versions,
    audit_log,
)

log = logging.getLogger(__name__)

EVAL_REPORT = "eval_report.json"
RECORD = "registry.json"
RESOLVER_DIR = ".resolver"
ALIASES = "aliases.json"
AUDIT_LOG = "audit.log"
ADAPTERS = VersionTables("adapter", adapter_versions, adapter_aliases, AdapterNotFoundError)


# (owner tenant, visibility) of a name, or None; whether it has a live version. Raises to refuse.
Authorize = Callable[[tuple[str, str] | None, bool], None]
# The platform's verdict on a report (None: none attached) as the report of NAME@VERSION.
Judge = Callable[[EvalReport | None, str, str], PlatformVerdict]


def no_platform_key(report: EvalReport | None, name: str, version: str) -> PlatformVerdict:
    """The judge of a registry given none: no report is the platform's, so none passes."""
    if report is None:
        return PlatformVerdict(status="missing", reason="it has no eval report")
    return PlatformVerdict(
        status="unverified",
        reason="its eval report is not platform-measured (this registry has no platform key to "
        "verify it with): kept as evidence, it cannot pass a gate",
    )


@dataclass(frozen=True)
class AdapterVersion(StoredVersion):
    """A live adapter version; `ref` is the model name that requests it."""


class AdapterRegistry(VersionedRegistry[AdapterVersion]):
    tables = ADAPTERS
    version_type = AdapterVersion
    # A missing version is reached through a request's `model` field.
    missing_version_param = "model"

    def __init__(
        self,
        root: Path,
        limits: AdapterLimits,
        base: BaseModelIdentity,
        *,
        control: ControlPlane | None = None,
        engine_base_name: str | None = None,
        judge: Judge = no_platform_key,
    ) -> None:
        """
        Args:
            root: the directory of adapter files (created if missing).
            limits: what the engine accepts (rank, size, modules).
            base: the served base model, which adapters must match.
            control: the control plane holding the records (shared by replicas); default:
                an embedded SQLite file `ROOT/.registry.sqlite`, for one process.
            engine_base_name: the engine's --model value; when given, every version is also
                published under ROOT/.resolver for vLLM's filesystem LoRA resolver.
            judge: the platform's verdict on a version's eval report (what promote reads);
                default: none verifies.
        """
        self.judge = judge
        self.limits = limits
        self.base = base
        self.engine_base_name = engine_base_name
        super().__init__(root, control)
        self._import_files()

    # --- reads ----------------------------------------------------------------------------
    def names(self, viewer: str | None = None) -> list[str]:
        """Adapter names with a live version; with `viewer` (a tenant), only those it may use."""
        with self.control.read() as conn:
            rows = self._live_names(conn)
            owners = _owners(conn)
        return sorted(n for n in rows if viewer is None or usable_by(owners.get(n), viewer))

    def ownership(self, name: str) -> tuple[str, str] | None:
        """(owner tenant, visibility) of an adapter name; None when it has no owner (pushed
        before owners were recorded: shared)."""
        with self.control.read() as conn:
            return _owners(conn, check_name(name)).get(name)

    def may_use(self, name: str, viewer: str | None) -> bool:
        """Whether tenant `viewer` may serve or see the adapter (None: a platform admin)."""
        return viewer is None or usable_by(self.ownership(name), viewer)

    def manifest(self, version: AdapterVersion) -> AdapterManifest | None:
        """The version's training manifest (migrated to the current shape); None when it was
        trained elsewhere, or when its stored manifest is not one this version reads (logged:
        it was pushed before manifests were checked, and the version still serves)."""
        try:
            return read_adapter_manifest(version.path)
        except ContractError as exc:
            log.warning("%s: served without its manifest", exc)
            return None

    def eval_report(self, version: AdapterVersion) -> EvalReport | None:
        with self.control.read() as conn:
            raw = conn.execute(
                select(adapter_versions.c.eval_report).where(
                    adapter_versions.c.name == version.name,
                    adapter_versions.c.version == version.version,
                )
            ).scalar_one_or_none()
        return _stored_report(raw, version.ref)

    def verdict(self, version: AdapterVersion) -> PlatformVerdict:
        """The platform's verdict on the version's eval report, as promote would reach it now."""
        return self.judge(self.eval_report(version), version.name, version.version)

    # --- writes ---------------------------------------------------------------------------
    def push(
        self,
        source: Path,
        name: str,
        *,
        version: str | None = None,
        actor: str,
        owner: str | None = None,
        visibility: str = "shared",
        authorize: Authorize | None = None,
    ) -> AdapterVersion:
        """Validate and copy an adapter directory in as a new version.

        An `eval_report.json` in `source` is attached with it. The first push of a name records
        its owner tenant and visibility (`tenant`: that tenant only; `shared`: every tenant);
        later pushes keep them.

        Args:
            authorize: called in the push's transaction, under the name's lock, with the name's
                ownership and whether it has live versions; it raises to refuse the push. So
                the check and the first push's owner are one transaction: two tenants racing
                for a new name cannot both land in it.

        Raises:
            AdapterValidationError: the adapter is unsafe, malformed, or for another base model.
            AdapterConflictError: the label was ever used (labels are never reused).
            Whatever `authorize` raises.
        """
        check_name(name)
        if version is not None:
            check_version(version)
        info = validate_adapter_dir(source, self.limits)
        check_base_model(info.config, _checked_manifest(source), self.base)
        report = _checked_report(_read_json(source / EVAL_REPORT), source / EVAL_REPORT)
        record = _record(info, actor)
        staging = new_staging(self.root, name)
        try:
            shutil.copytree(source, staging, ignore=shutil.ignore_patterns("checkpoint-*"))
            write_json(staging / RECORD, record)
            fsync_tree(staging)
            self.fault("copied")
            with self._transaction(name) as conn:
                ownership = _owners(conn, name).get(name)
                if authorize is not None:
                    authorize(ownership, has_live_version(conn, ADAPTERS, name))
                label = version or next_label(conn, ADAPTERS, name)
                refuse_taken_label(conn, ADAPTERS, name, label)
                place_staged(staging, self.root / name / label)
                self.fault("renamed")
                self._publish_for_resolver(name, label, info.config)
                self.fault("published")
                if owner is not None and ownership is None:
                    conn.execute(adapter_owners.insert().values(
                        name=name, owner=owner, visibility=visibility
                    ))  # fmt: skip
                conn.execute(adapter_versions.insert().values(
                    name=name, version=label, number=label_number(label),
                    record=json.dumps(record), pushed_at=record["pushed_at"], deleted_at=None,
                    eval_report=_report_json(report),
                    gate_passed=_gate_flag(report, self.judge(report, name, label)),
                ))  # fmt: skip
                self._audit(conn, actor, "push", name, version=label, detail={"rank": info.rank})
                self.fault("recorded")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        sweep(self.root / name)
        return self.get(name, label)

    def attach_eval_report(
        self, name: str, version: str, report: dict[str, Any] | EvalReport, *, actor: str
    ) -> None:
        """Store `report` as the version's eval report, whoever made it: the audit entry and
        `gate_passed` record the platform's verdict on it (see `Judge`), never its own claim.

        Raises:
            AdapterValidationError: `report` is not an eval report (the field named).
        """
        checked = _checked_report(report, f"the eval report for {name}@{version}")
        with self._transaction(name) as conn:
            self._get(conn, name, version)
            verdict = self.judge(checked, name, version)
            conn.execute(
                update(adapter_versions)
                .where(adapter_versions.c.name == name, adapter_versions.c.version == version)
                .values(eval_report=_report_json(checked), gate_passed=_gate_flag(checked, verdict))
            )
            self._audit(
                conn, actor, "eval_report", name, version=version,
                detail={"gate_passed": verdict.passed, "verdict": verdict.status},
            )  # fmt: skip

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
        """Point `alias` at `version`; refused unless the platform's verdict on its eval report
        is `passed`. The version's existence and the verdict are checked in the transaction
        that moves the alias.

        Args:
            force: move it whatever the verdict (the caller decides who may: the gateway lets
                platform admins only); audited as forced when the verdict did not pass.
            reason: why, recorded in the audit entry.

        Raises:
            AdapterNotFoundError: the version does not exist (or was deleted).
            ReportNotVerifiedError: its report is not the platform's measurement, and `force`
                is false.
            PromotionRefusedError: no eval report, or the platform's gate failed on it, and
                `force` is false.
        """
        check_alias(alias)
        with self._transaction(name) as conn:
            self._get(conn, name, version)
            raw = conn.execute(
                select(adapter_versions.c.eval_report).where(
                    adapter_versions.c.name == name, adapter_versions.c.version == version
                )
            ).scalar_one()
            verdict = self.judge(_stored_report(raw, f"{name}@{version}"), name, version)
            if not verdict.passed and not force:
                refused = (
                    ReportNotVerifiedError
                    if verdict.status == "unverified"
                    else PromotionRefusedError
                )
                raise refused(
                    f"{name}@{version} cannot be promoted to {alias}: {verdict.reason}. Have the "
                    "platform measure it (`ragdock eval SUITE --attach` signs the report with "
                    "the platform's key, RAGDOCK_SIGNING_KEY_FILE), or a platform admin force it "
                    "(recorded in the audit log)",
                    param="version",
                )
            detail = {"forced": force and not verdict.passed, "verdict": verdict.status,
                      "gate": verdict.reason}  # fmt: skip
            return self._promote_checked(
                conn, name, version, alias, actor=actor, detail=detail, reason=reason
            )

    # --- internals ------------------------------------------------------------------------
    def _remove_files(self, target: AdapterVersion) -> None:
        shutil.rmtree(self.root / RESOLVER_DIR / target.ref, ignore_errors=True)
        super()._remove_files(target)

    def _publish_for_resolver(self, name: str, version: str, config: dict[str, Any]) -> None:
        if not self.engine_base_name:
            return
        view = self.root / RESOLVER_DIR / f"{name}@{version}"
        view.mkdir(parents=True, exist_ok=True)
        weights = view / "adapter_model.safetensors"
        if not weights.is_symlink() and not weights.exists():
            weights.symlink_to(Path("..", "..", name, version, "adapter_model.safetensors"))
        write_json(
            view / "adapter_config.json",
            {**config, "base_model_name_or_path": self.engine_base_name},
        )
        fsync_dir(view)
        fsync_dir(view.parent)

    def _import_files(self) -> None:
        """Adopt adapters recorded by the file-only registry this one replaces."""
        with self.control.read() as conn:
            known = set(conn.execute(select(adapter_versions.c.name).distinct()).scalars())
        for directory in sorted(self.root.iterdir()):
            if not directory.is_dir() or directory.name.startswith(".") or directory.name in known:
                continue
            found = [
                p for p in sorted(directory.iterdir())
                if p.is_dir() and not p.name.startswith(".") and (p / RECORD).is_file()
            ]  # fmt: skip
            if found:
                self._import_name(directory.name, found)
        legacy_audit = self.root / AUDIT_LOG
        if legacy_audit.is_file():
            with self.control.write() as conn:
                adapter_entries = select(func.count()).where(audit_log.c.kind == ADAPTERS.kind)
                if conn.execute(adapter_entries).scalar_one() == 0:
                    for line in legacy_audit.read_text().splitlines():
                        if line.strip():
                            entry = json.loads(line)
                            conn.execute(audit_log.insert().values(
                                time=entry.get("time", ""), actor=entry.get("actor", ""),
                                action=entry.get("action", ""), name=entry.get("name", ""),
                                version=entry.get("version"), alias=entry.get("alias"),
                                detail=json.dumps(entry["detail"]) if entry.get("detail") else None,
                            ))  # fmt: skip
            legacy_audit.rename(legacy_audit.with_name(AUDIT_LOG + ".imported"))

    def _import_name(self, name: str, versions: list[Path]) -> None:
        with self._transaction(name) as conn:
            known = conn.execute(
                select(func.count()).where(adapter_versions.c.name == name)
            ).scalar_one()
            if known:
                return
            for path in versions:
                record = _read_json(path / RECORD) or {}
                try:
                    report = _checked_report(_read_json(path / EVAL_REPORT), path / EVAL_REPORT)
                except AdapterValidationError as exc:  # kept importable; it cannot promote
                    log.warning("%s: imported without its eval report", exc)
                    report = None
                conn.execute(adapter_versions.insert().values(
                    name=name, version=path.name, number=label_number(path.name),
                    record=json.dumps(record), pushed_at=float(record.get("pushed_at", 0.0)),
                    deleted_at=None, eval_report=_report_json(report),
                    gate_passed=_gate_flag(report, self.judge(report, name, path.name)),
                ))  # fmt: skip
            aliases = _read_json(self.root / name / ALIASES) or {}
            now = self.control.now(conn)
            for alias, entry in aliases.items():
                set_alias(conn, ADAPTERS, name, alias, entry, now)


def _owners(conn: Connection, name: str | None = None) -> dict[str, tuple[str, str]]:
    query = select(adapter_owners.c.name, adapter_owners.c.owner, adapter_owners.c.visibility)
    if name is not None:
        query = query.where(adapter_owners.c.name == name)
    return {n: (o, v) for n, o, v in conn.execute(query).all()}


def usable_by(ownership: tuple[str, str] | None, viewer: str) -> bool:
    """Whether tenant `viewer` may see and serve an adapter of this (owner, visibility)."""
    return ownership is None or ownership[1] == "shared" or ownership[0] == viewer


def _gate_flag(report: EvalReport | None, verdict: PlatformVerdict) -> int | None:
    """`gate_passed` as stored: the platform's verdict when the report came (read by no
    decision: promote asks the judge again)."""
    return None if report is None else int(verdict.passed)


def _checked_manifest(source: Path) -> AdapterManifest | None:
    try:
        return read_adapter_manifest(source)
    except ContractError as exc:
        raise AdapterValidationError(str(exc), param="manifest") from None


def _checked_report(
    report: dict[str, Any] | EvalReport | None, source: object
) -> EvalReport | None:
    if report is None or isinstance(report, EvalReport):
        return report
    try:
        return parse_eval_report(report, source=str(source))
    except ContractError as exc:
        raise AdapterValidationError(str(exc), param="eval_report") from None


def _report_json(report: EvalReport | None) -> str | None:
    return None if report is None else json.dumps(report.as_json())


def _stored_report(raw: str | None, ref: str) -> EvalReport | None:
    """A report as stored; one stored before reports were checked that this version cannot read
    counts as none (logged), so it cannot promote."""
    if not raw:
        return None
    try:
        return parse_eval_report(json.loads(raw), source=f"the stored eval report of {ref}")
    except (ContractError, ValueError) as exc:
        log.warning("%s", exc)
        return None


def _record(info: AdapterInfo, actor: str) -> dict[str, Any]:
    return {
        "pushed_at": time.time(),
        "pushed_by": actor,
        "rank": info.rank,
        "alpha": info.alpha,
        "target_modules": info.target_modules,
        "base_model": info.base_model,
        "size_bytes": info.size_bytes,
    }


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdapterValidationError(f"{path.name} does not parse: {exc}") from exc
    except RecursionError:
        raise AdapterValidationError(f"{path.name} nests too deeply") from None
    return data if isinstance(data, dict) else None
