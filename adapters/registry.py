"""The adapter registry on a filesystem path (a shared volume when several replicas serve).

Layout:
    ROOT/audit.log                 append-only JSON lines: who did what, when
    ROOT/NAME/aliases.json         {"prod": {"version": "v2", "history": ["v1"]}, ...}
    ROOT/NAME/VERSION/             PEFT files, manifest.json, eval_report.json, registry.json
    ROOT/.resolver/NAME@VERSION/   the same adapter as vLLM's filesystem LoRA resolver wants it:
                                   named as requests name it, base_model_name_or_path = the
                                   engine's --model value (the resolver checks that)

A push copies into a hidden temporary directory and renames it into place, so a version is either
complete or absent. Mutations hold an exclusive lock on ROOT/.lock; readers need none because every
file is replaced by rename, never rewritten in place.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.base_match import BaseModelIdentity, check_base_model
from adapters.errors import (
    AdapterConflictError,
    AdapterNotFoundError,
    AdapterValidationError,
    PromotionRefusedError,
)
from adapters.names import check_alias, check_name, check_version
from adapters.validation import AdapterInfo, AdapterLimits, validate_adapter_dir

MANIFEST = "manifest.json"
EVAL_REPORT = "eval_report.json"
RECORD = "registry.json"
RESOLVER_DIR = ".resolver"
ALIASES = "aliases.json"
AUDIT_LOG = "audit.log"


@dataclass(frozen=True)
class AdapterVersion:
    name: str
    version: str
    path: Path
    record: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


class AdapterRegistry:
    def __init__(
        self,
        root: Path,
        limits: AdapterLimits,
        base: BaseModelIdentity,
        *,
        engine_base_name: str | None = None,
    ) -> None:
        """
        Args:
            root: the registry directory (created if missing).
            limits: what the engine accepts (rank, size, modules).
            base: the served base model, which adapters must match.
            engine_base_name: the engine's --model value; when given, every version is also
                published under ROOT/.resolver for vLLM's filesystem LoRA resolver.
        """
        self.root = root
        self.limits = limits
        self.base = base
        self.engine_base_name = engine_base_name
        root.mkdir(parents=True, exist_ok=True)

    # --- reads ----------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    def versions(self, name: str) -> list[AdapterVersion]:
        directory = self.root / check_name(name)
        if not directory.is_dir():
            return []
        found = [
            self._load_version(name, p.name)
            for p in directory.iterdir()
            if p.is_dir() and not p.name.startswith(".") and (p / RECORD).is_file()
        ]
        return sorted(found, key=lambda v: (v.record.get("pushed_at", 0), v.version))

    def get(self, name: str, version: str) -> AdapterVersion:
        """Raises AdapterNotFoundError when the version does not exist."""
        path = self.root / check_name(name) / check_version(version)
        if not (path / RECORD).is_file():
            raise AdapterNotFoundError(f"adapter {name}@{version} does not exist", param="model")
        return self._load_version(name, version)

    def aliases(self, name: str) -> dict[str, dict[str, Any]]:
        path = self.root / check_name(name) / ALIASES
        data: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.is_file() else {}
        return data

    def resolve(self, name: str, selector: str) -> AdapterVersion:
        """A version by its label or through an alias.

        Raises:
            AdapterNotFoundError: neither a version nor an alias of `name`.
        """
        alias = self.aliases(name).get(selector)
        return self.get(name, alias["version"] if alias else selector)

    def manifest(self, version: AdapterVersion) -> dict[str, Any] | None:
        return _read_json(version.path / MANIFEST)

    def eval_report(self, version: AdapterVersion) -> dict[str, Any] | None:
        return _read_json(version.path / EVAL_REPORT)

    def audit_entries(self) -> list[dict[str, Any]]:
        path = self.root / AUDIT_LOG
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    # --- writes ---------------------------------------------------------------------------
    def push(
        self, source: Path, name: str, *, version: str | None = None, actor: str
    ) -> AdapterVersion:
        """Validate and copy an adapter directory in as a new version.

        Raises:
            AdapterValidationError: the adapter is unsafe, malformed, or for another base model.
            AdapterConflictError: the version already exists.
        """
        check_name(name)
        info = validate_adapter_dir(source, self.limits)
        check_base_model(info.config, _read_json(source / MANIFEST), self.base)
        with self._lock():
            label = check_version(version) if version else self._next_version(name)
            target = self.root / name / label
            if target.exists():
                raise AdapterConflictError(
                    f"{name}@{label} already exists: push under a new version (or omit --version)",
                    param="version",
                )
            staging = self.root / name / f".staging-{uuid.uuid4().hex}"
            try:
                shutil.copytree(source, staging, ignore=shutil.ignore_patterns("checkpoint-*"))
                record = _record(info, actor)
                _write_json(staging / RECORD, record)
                staging.rename(target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            self._publish_for_resolver(name, label, info.config)
            self._audit(actor, "push", name, version=label, detail={"rank": info.rank})
        return self.get(name, label)

    def attach_eval_report(
        self, name: str, version: str, report: dict[str, Any], *, actor: str
    ) -> None:
        target = self.get(name, version)
        with self._lock():
            _write_json(target.path / EVAL_REPORT, report)
            passed = bool((report.get("gate") or {}).get("passed"))
            self._audit(actor, "eval_report", name, version=version, detail={"gate_passed": passed})

    def promote(
        self, name: str, version: str, alias: str, *, actor: str, force: bool = False
    ) -> dict[str, Any]:
        """Point `alias` at `version`; refused unless its eval report passed its gate.

        Raises:
            PromotionRefusedError: no eval report, or its gate failed, and `force` is false.
        """
        check_alias(alias)
        target = self.get(name, version)
        passed, why = gate_verdict(self.eval_report(target))
        if not passed and not force:
            raise PromotionRefusedError(
                f"{name}@{version} cannot be promoted to {alias}: {why}. Run `ragdock eval` and "
                "attach a passing report, or pass force (recorded in the audit log)",
                param="version",
            )
        with self._lock():
            aliases = self.aliases(name)
            entry = aliases.get(alias, {"version": None, "history": []})
            if entry["version"] and entry["version"] != version:
                entry["history"].append(entry["version"])
            entry["version"] = version
            aliases[alias] = entry
            _write_json(self.root / name / ALIASES, aliases)
            self._audit(
                actor, "promote", name, version=version, alias=alias,
                detail={"forced": force and not passed, "gate": why},
            )  # fmt: skip
        return entry

    def rollback(self, name: str, alias: str, *, actor: str) -> dict[str, Any]:
        """Point `alias` back at the version it pointed at before.

        Raises:
            AdapterNotFoundError: the alias does not exist.
            AdapterConflictError: the alias has no earlier version.
        """
        with self._lock():
            aliases = self.aliases(name)
            entry = aliases.get(check_alias(alias))
            if entry is None:
                raise AdapterNotFoundError(f"{name} has no alias {alias!r}", param="alias")
            if not entry["history"]:
                raise AdapterConflictError(
                    f"{name}@{alias} has no earlier version to roll back to", param="alias"
                )
            previous = entry["version"]
            entry["version"] = entry["history"].pop()
            _write_json(self.root / name / ALIASES, aliases)
            self._audit(
                actor, "rollback", name, version=entry["version"], alias=alias,
                detail={"from": previous},
            )  # fmt: skip
        return entry

    def delete(self, name: str, version: str, *, actor: str) -> None:
        """Raises AdapterConflictError while an alias points at the version."""
        target = self.get(name, version)
        with self._lock():
            pointing = [a for a, e in self.aliases(name).items() if e["version"] == version]
            if pointing:
                raise AdapterConflictError(
                    f"{target.ref} is still served by alias(es) {pointing}: promote another "
                    "version or roll back first",
                    param="version",
                )
            shutil.rmtree(self.root / RESOLVER_DIR / target.ref, ignore_errors=True)
            trash = target.path.with_name(f".deleted-{uuid.uuid4().hex}")
            target.path.rename(trash)
            shutil.rmtree(trash, ignore_errors=True)
            self._audit(actor, "delete", name, version=version)

    # --- internals ------------------------------------------------------------------------
    def _next_version(self, name: str) -> str:
        numbers = [int(v.version[1:]) for v in self.versions(name) if v.version[1:].isdigit()]
        return f"v{max(numbers, default=0) + 1}"

    def _publish_for_resolver(self, name: str, version: str, config: dict[str, Any]) -> None:
        if not self.engine_base_name:
            return
        view = self.root / RESOLVER_DIR / f"{name}@{version}"
        view.mkdir(parents=True, exist_ok=True)
        weights = view / "adapter_model.safetensors"
        if not weights.exists():
            weights.symlink_to(Path("..", "..", name, version, "adapter_model.safetensors"))
        _write_json(
            view / "adapter_config.json",
            {**config, "base_model_name_or_path": self.engine_base_name},
        )

    def _load_version(self, name: str, version: str) -> AdapterVersion:
        path = self.root / name / version
        return AdapterVersion(name, version, path, _read_json(path / RECORD) or {})

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with (self.root / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _audit(
        self, actor: str, action: str, name: str, *, version: str | None = None,
        alias: str | None = None, detail: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "actor": actor,
            "action": action,
            "name": name,
            "version": version,
            "alias": alias,
            **({"detail": detail} if detail else {}),
        }
        with (self.root / AUDIT_LOG).open("a") as log:
            log.write(json.dumps(entry) + "\n")
            log.flush()
            os.fsync(log.fileno())


def gate_verdict(report: dict[str, Any] | None) -> tuple[bool, str]:
    """Whether an eval report's gate passed, and a short reason."""
    if report is None:
        return False, "it has no eval report"
    gate = report.get("gate")
    if not isinstance(gate, dict) or "passed" not in gate:
        return False, "its eval report has no gate verdict"
    if gate["passed"] is True:
        return True, "gate passed"
    failed = [v.get("rule", "?") for v in gate.get("verdicts", []) if not v.get("passed")]
    return False, f"its gate failed ({', '.join(failed) or 'see the report'})"


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
    except json.JSONDecodeError as exc:
        raise AdapterValidationError(f"{path.name} does not parse: {exc}") from exc
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write by rename so readers never see a half-written file."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
