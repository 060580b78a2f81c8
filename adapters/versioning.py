"""What the adapter and reader registries share: version labels, aliases with their history,
the audit log, the per-name lock, and files written so that a crash never shows half of them.

Each registry keeps its versions and aliases in tables of its own (`VersionTables`); the audit
log is one table, told apart by `kind`. The functions here run inside the caller's transaction,
so a registry's operation stays one transaction with its audit entry in it.

Files: a version is copied into a hidden staging directory next to its final place, fsynced,
and renamed into place (`place_staged`) before the transaction that records it commits. A crash
before the commit leaves an unrecorded directory, moved aside by the next push of that label.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table, func, select, text, update

from adapters.errors import AdapterConflictError, RegistryError
from ragdock.controlplane import ControlPlane
from ragdock.controlplane.schema import audit_log

# A staging directory older than this belongs to a push that died (pushes take seconds).
STALE_STAGING_S = 3600.0


@dataclass(frozen=True)
class VersionTables:
    """One registry's tables, and what its errors and audit entries call its items.

    Args:
        kind: `adapter` or `reader`: the audit log's kind and the name lock's namespace.
        versions: every version ever pushed (name, version, number, record, pushed_at,
            deleted_at, ...).
        aliases: (name, alias) -> version, with the versions it pointed at before.
        not_found: the error a missing version or alias raises (its HTTP status is 404).
    """

    kind: str
    versions: Table
    aliases: Table
    not_found: type[RegistryError]


def lock_name(control: ControlPlane, conn: Connection, kind: str, name: str) -> None:
    """Hold the name's lock until the transaction ends (PostgreSQL: an advisory transaction
    lock; SQLite's write transaction locks the whole database anyway)."""
    if not control.is_sqlite:
        key = zlib.crc32(f"{kind}:{name}".encode())
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def version_record(
    conn: Connection, tables: VersionTables, name: str, version: str, *, live: bool = False
) -> str | None:
    """The version's record (JSON), or None; `live` excludes deleted versions."""
    t = tables.versions
    query = select(t.c.record).where(t.c.name == name, t.c.version == version)
    if live:
        query = query.where(t.c.deleted_at.is_(None))
    value = conn.execute(query).scalar_one_or_none()
    return str(value) if value is not None else None


def has_live_version(conn: Connection, tables: VersionTables, name: str) -> bool:
    t = tables.versions
    query = select(t.c.version).where(t.c.name == name, t.c.deleted_at.is_(None))
    return conn.execute(query.limit(1)).first() is not None


def label_number(label: str) -> int | None:
    return int(label[1:]) if label.startswith("v") and label[1:].isdigit() else None


def next_label(conn: Connection, tables: VersionTables, name: str) -> str:
    """`v<N+1>` over every label ever pushed, deleted ones included."""
    t = tables.versions
    highest = conn.execute(
        select(func.max(t.c.number)).where(t.c.name == name)
    ).scalar_one_or_none()
    return f"v{(highest or 0) + 1}"


def refuse_taken_label(conn: Connection, tables: VersionTables, name: str, label: str) -> None:
    """Raises AdapterConflictError when `name@label` was ever pushed (even if deleted)."""
    if version_record(conn, tables, name, label) is not None:
        raise AdapterConflictError(
            f"{name}@{label} was already pushed (labels are never reused, even after a "
            "delete): push under a new version, or omit --version",
            param="version",
        )


def read_aliases(conn: Connection, tables: VersionTables, name: str) -> dict[str, dict[str, Any]]:
    t = tables.aliases
    rows = conn.execute(
        select(t.c.alias, t.c.version, t.c.history).where(t.c.name == name).order_by(t.c.alias)
    ).all()
    return {alias: {"version": v, "history": json.loads(h)} for alias, v, h in rows}


def moved_alias(
    conn: Connection, tables: VersionTables, name: str, alias: str, version: str
) -> dict[str, Any]:
    """The alias entry as it is once pointed at `version` (not written: `set_alias` does)."""
    entry = read_aliases(conn, tables, name).get(alias, {"version": None, "history": []})
    if entry["version"] and entry["version"] != version:
        entry["history"].append(entry["version"])
    entry["version"] = version
    return entry


def rolled_back_alias(
    conn: Connection, tables: VersionTables, name: str, alias: str
) -> tuple[dict[str, Any], str]:
    """The alias entry once pointed back at its previous version (not written), and the
    version it pointed at.

    Raises:
        tables.not_found: the alias does not exist.
        AdapterConflictError: it has no earlier version, or that one was deleted.
    """
    entry = read_aliases(conn, tables, name).get(alias)
    if entry is None:
        raise tables.not_found(f"{name} has no alias {alias!r}", param="alias")
    if not entry["history"]:
        raise AdapterConflictError(
            f"{name}@{alias} has no earlier version to roll back to", param="alias"
        )
    previous = entry["history"][-1]
    if version_record(conn, tables, name, previous, live=True) is None:
        raise AdapterConflictError(
            f"{name}@{alias} would roll back to {previous}, which was deleted: promote a "
            "version instead",
            param="alias",
        )
    moved_from = str(entry["version"])
    entry["version"] = entry["history"].pop()
    return entry, moved_from


def set_alias(
    conn: Connection,
    tables: VersionTables,
    name: str,
    alias: str,
    entry: dict[str, Any],
    now: float,
) -> None:
    t = tables.aliases
    values = {"version": entry["version"], "history": json.dumps(entry["history"]),
              "updated_at": now}  # fmt: skip
    changed = conn.execute(
        update(t).where(t.c.name == name, t.c.alias == alias).values(**values)
    ).rowcount
    if not changed:
        conn.execute(t.insert().values(name=name, alias=alias, **values))


def refuse_delete_under_alias(
    conn: Connection, tables: VersionTables, name: str, version: str
) -> None:
    """Raises AdapterConflictError when an alias points at the version."""
    pointing = [a for a, e in read_aliases(conn, tables, name).items() if e["version"] == version]
    if pointing:
        raise AdapterConflictError(
            f"{name}@{version} is still served by alias(es) {pointing}: promote another "
            "version or roll back first",
            param="version",
        )


def mark_deleted(
    conn: Connection, tables: VersionTables, name: str, version: str, now: float
) -> None:
    t = tables.versions
    conn.execute(update(t).where(t.c.name == name, t.c.version == version).values(deleted_at=now))


def write_audit(
    conn: Connection, control: ControlPlane, kind: str, actor: str, action: str, name: str, *,
    version: str | None = None, alias: str | None = None, detail: dict[str, Any] | None = None,
) -> None:  # fmt: skip
    conn.execute(audit_log.insert().values(
        time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(control.now(conn))),
        actor=actor, action=action, name=name, version=version, alias=alias,
        detail=json.dumps(detail) if detail else None, kind=kind,
    ))  # fmt: skip


def read_audit(control: ControlPlane, kind: str, name: str | None = None) -> list[dict[str, Any]]:
    """The audit entries of one kind (of one name), oldest first."""
    query = select(audit_log).where(audit_log.c.kind == kind).order_by(audit_log.c.id)
    if name is not None:
        query = query.where(audit_log.c.name == name)
    with control.read() as conn:
        rows = conn.execute(query).mappings().all()
    return [_audit_view(row) for row in rows]


def _audit_view(row: Any) -> dict[str, Any]:
    entry = {key: row[key] for key in ("time", "actor", "action", "name", "version", "alias")}
    if row["detail"]:
        entry["detail"] = json.loads(row["detail"])
    return entry


# --- files ----------------------------------------------------------------------------------
def new_staging(root: Path, name: str) -> Path:
    """A fresh staging path under ROOT/NAME (not created); the name's directory is created,
    and its entry fsynced, so it survives a power loss too."""
    if not (root / name).is_dir():
        (root / name).mkdir(parents=True, exist_ok=True)
        fsync_dir(root)
    return root / name / f".staging-{uuid.uuid4().hex}"


def place_staged(staging: Path, target: Path) -> None:
    """Rename a fsynced staging directory to its version's place, in the transaction that
    records it. Files already there belong to a push that died before its commit (no record
    points at them): they are moved aside first."""
    if target.exists():
        target.rename(target.with_name(f".orphan-{uuid.uuid4().hex}"))
    staging.rename(target)
    fsync_dir(target.parent)


def remove_version_files(path: Path) -> None:
    """Remove a deleted version's files (renamed first, so no one reads a half-removed tree)."""
    if path.exists():
        trash = path.with_name(f".deleted-{uuid.uuid4().hex}")
        path.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)


def sweep(directory: Path) -> None:
    """Remove what crashed pushes and deletes left in a name's directory (never a recorded
    version; a staging directory only when it is old enough that no live push can own it)."""
    for leftover in [*directory.glob(".orphan-*"), *directory.glob(".deleted-*")]:
        shutil.rmtree(leftover, ignore_errors=True)
    for staging in directory.glob(".staging-*"):
        try:
            stale = time.time() - staging.stat().st_mtime > STALE_STAGING_S
        except FileNotFoundError:  # its push just finished
            continue
        if stale:
            shutil.rmtree(staging, ignore_errors=True)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write by rename, fsynced, so readers and a power loss never see a half-written file."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    with tmp.open("w") as handle:
        handle.write(json.dumps(data, indent=2) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file, then every directory bottom-up, so the tree survives a power loss."""
    for directory, _dirs, files in os.walk(root, topdown=False):
        for file in files:
            path = Path(directory) / file
            if path.is_symlink():
                continue
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
        fsync_dir(Path(directory))
