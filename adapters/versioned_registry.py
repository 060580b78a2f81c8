"""The part of the adapter and reader registries that is the same over either's tables: look a
version up (by its label or through an alias), list a name's versions and aliases, read the
audit log, move an alias once the version is judged, roll one back, delete a version, and hold a
name's lock for a write.

A registry subclasses `VersionedRegistry` with its `VersionTables` (which names the not-found
error) and its version type. What differs stays in the subclass: what a push validates and
records, what promote judges, who owns a name, which files besides the version's own it writes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import Connection, select

from adapters.names import check_alias, check_name, check_version
from adapters.versioning import (
    VersionTables,
    lock_name,
    mark_deleted,
    moved_alias,
    read_aliases,
    read_audit,
    refuse_delete_under_alias,
    remove_version_files,
    rolled_back_alias,
    set_alias,
    version_record,
    write_audit,
)
from ragdock.controlplane import ControlPlane, open_control_plane


@dataclass(frozen=True)
class StoredVersion:
    """A live version: its files at `path`, and its record (registry.json) as pushed."""

    name: str
    version: str
    path: Path
    record: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


V = TypeVar("V", bound=StoredVersion)


class VersionedRegistry(Generic[V]):
    """Versions and aliases of one kind in the control plane, their files under `root`.

    Subclasses set:
        tables: their tables; `tables.kind` names the items in messages and the audit log.
        version_type: the version class `get`, `resolve` and `versions` return.
        missing_version_param: the `param` of the error for a missing version.
    """

    tables: ClassVar[VersionTables]
    version_type: type[V]
    missing_version_param: ClassVar[str]

    def __init__(self, root: Path, control: ControlPlane | None) -> None:
        """
        Args:
            root: the directory of the versions' files (created if missing).
            control: the control plane holding the records (shared by replicas); default: an
                embedded SQLite file under ROOT/.registry, for one process.
        """
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._owns_control = control is None
        self.control = control or open_control_plane(None, root / ".registry")
        # Test hook: called with a step name inside push and promote, to simulate a crash there
        # (raise a BaseException: the open transaction rolls back, as a crash's would).
        self.fault: Callable[[str], None] = lambda step: None

    # --- reads ------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Names with a live version."""
        with self.control.read() as conn:
            return sorted(self._live_names(conn))

    def versions(self, name: str) -> list[V]:
        """A name's live versions, oldest push first."""
        t = self.tables.versions
        query = (
            select(t.c.version, t.c.record)
            .where(t.c.name == self._checked_name(name), t.c.deleted_at.is_(None))
            .order_by(t.c.pushed_at, t.c.version)
        )
        with self.control.read() as conn:
            rows = conn.execute(query).all()
        return [self._version(name, version, record) for version, record in rows]

    def get(self, name: str, version: str) -> V:
        """Raises tables.not_found when the version does not exist (or was deleted)."""
        with self.control.read() as conn:
            return self._get(conn, name, version)

    def aliases(self, name: str) -> dict[str, dict[str, Any]]:
        """alias -> {"version": the version it names, "history": those it named before}."""
        with self.control.read() as conn:
            return read_aliases(conn, self.tables, self._checked_name(name))

    def resolve(self, name: str, selector: str) -> V:
        """A version by its label or through an alias (one consistent read).

        Raises:
            tables.not_found: neither a version nor an alias of `name`.
        """
        with self.control.read() as conn:
            alias = read_aliases(conn, self.tables, self._checked_name(name)).get(selector)
            return self._get(conn, name, alias["version"] if alias else selector)

    def audit_entries(self, name: str | None = None) -> list[dict[str, Any]]:
        return read_audit(self.control, self.tables.kind, name)

    # --- writes -----------------------------------------------------------------------------
    def rollback(self, name: str, alias: str, *, actor: str) -> dict[str, Any]:
        """Point `alias` back at the version it pointed at before.

        Raises:
            tables.not_found: the alias does not exist.
            AdapterConflictError: the alias has no earlier version, or it was deleted.
        """
        with self._transaction(name) as conn:
            entry, moved_from = rolled_back_alias(conn, self.tables, name, check_alias(alias))
            set_alias(conn, self.tables, name, alias, entry, self.control.now(conn))
            self._audit(conn, actor, "rollback", name, version=entry["version"], alias=alias,
                        detail={"from": moved_from})  # fmt: skip
        return entry

    def delete(self, name: str, version: str, *, actor: str) -> None:
        """Delete a version; its label stays taken. The record goes first, the files after.

        Raises:
            tables.not_found: the version does not exist.
            AdapterConflictError: an alias points at the version.
        """
        with self._transaction(name) as conn:
            target = self._get(conn, name, version)
            refuse_delete_under_alias(conn, self.tables, name, version)
            mark_deleted(conn, self.tables, name, version, self.control.now(conn))
            self._audit(conn, actor, "delete", name, version=version)
        # From here the row says deleted; a crash before the files go leaves files no record
        # points at, which the next push of this name sweeps.
        self._remove_files(target)

    def close(self) -> None:
        if self._owns_control:
            self.control.close()

    # --- for subclasses ---------------------------------------------------------------------
    @contextmanager
    def _transaction(self, name: str) -> Iterator[Connection]:
        """A write transaction holding the name's lock (see `lock_name`). The name is not
        checked here: adapters imported from old registry files come by directory name."""
        with self.control.write() as conn:
            lock_name(self.control, conn, self.tables.kind, name)
            yield conn

    def _promote_checked(
        self, conn: Connection, name: str, version: str, alias: str, *, actor: str,
        detail: dict[str, Any], reason: str | None,
    ) -> dict[str, Any]:  # fmt: skip
        """Move `alias` to `version` once the subclass's promote has judged it, in the same
        transaction, and audit it with `detail` (and `reason`). Returns the alias entry."""
        entry = moved_alias(conn, self.tables, name, alias, version)
        self.fault("checked")
        set_alias(conn, self.tables, name, alias, entry, self.control.now(conn))
        if reason:
            detail["reason"] = reason
        self._audit(conn, actor, "promote", name, version=version, alias=alias, detail=detail)
        self.fault("aliased")
        return entry

    def _remove_files(self, target: V) -> None:
        """Remove a deleted version's files (a subclass adds any it wrote elsewhere)."""
        remove_version_files(target.path)

    def _live_names(self, conn: Connection) -> list[str]:
        t = self.tables.versions
        query = select(t.c.name).where(t.c.deleted_at.is_(None)).distinct()
        return list(conn.execute(query).scalars())

    def _checked_name(self, name: str) -> str:
        return check_name(name, kind=self.tables.kind)

    def _get(self, conn: Connection, name: str, version: str) -> V:
        record = version_record(
            conn, self.tables, self._checked_name(name), check_version(version), live=True
        )
        if record is None:
            raise self.tables.not_found(
                f"{self.tables.kind} {name}@{version} does not exist",
                param=self.missing_version_param,
            )
        return self._version(name, version, record)

    def _version(self, name: str, version: str, record: str) -> V:
        return self.version_type(name, version, self.root / name / version, json.loads(record))

    def _audit(
        self, conn: Connection, actor: str, action: str, name: str, *, version: str | None = None,
        alias: str | None = None, detail: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        write_audit(conn, self.control, self.tables.kind, actor, action, name, version=version,
                    alias=alias, detail=detail)  # fmt: skip
