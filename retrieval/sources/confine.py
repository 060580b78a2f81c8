"""What a tenant's source may read: folders under the operator's roots, its own secrets.

A source is created over HTTP by a tenant, and the worker that reads it runs with the
gateway's file system and environment. So a folder (or a SQLite file) must lie under a root
the operator allows (`RAGDOCK_SOURCE_ROOTS`; a root may contain `{tenant}`, so each tenant gets
its own tree), and a credential reference may only name the tenant's own environment variables
(`RAGDOCK_SECRET_<TENANT>_...`) or files under its own secrets directory
(`<secrets dir>/<tenant>/`). Paths are compared after resolving symlinks.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class ConfinementError(ValueError):
    """A source names something outside what its tenant may read."""


def tenant_token(tenant: str) -> str:
    """The tenant as it appears in environment variable names: upper case, `_` for the rest."""
    return re.sub(r"[^A-Z0-9]", "_", tenant.upper())


def _tenant_dir(tenant: str) -> str:
    """The tenant as one safe path component (never `..` nor a separator)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", tenant)
    return safe if safe.strip(".") else "_"


@dataclass(frozen=True)
class Confinement:
    """The operator's limits on sources.

    Args:
        roots: directories folder sources (and SQLite files) may lie under; each may contain
            `{tenant}`. Empty: no folder source can be created.
        secrets_dir: the directory whose `<tenant>/` subdirectory holds a tenant's secret files.
    """

    roots: Sequence[str] = ()
    secrets_dir: str = "/run/secrets/ragdock"

    @classmethod
    def from_env(cls, roots: str | None, secrets_dir: str | None) -> Confinement:
        parts = [r for r in (roots or "").split(os.pathsep) if r.strip()]
        return cls(tuple(parts), secrets_dir or cls.secrets_dir)

    def tenant_roots(self, tenant: str) -> list[Path]:
        return [Path(r.replace("{tenant}", _tenant_dir(tenant))).resolve() for r in self.roots]

    def folder(self, path: str, tenant: str) -> Path:
        """The resolved directory, if `tenant` may read it.

        Raises:
            ConfinementError: no roots are configured, the path is outside them, or it is not
                a directory.
        """
        if not self.roots:
            raise ConfinementError(
                "folder sources are off on this gateway: the operator allows directories with "
                "RAGDOCK_SOURCE_ROOTS"
            )
        resolved = Path(path).resolve()
        allowed = self.tenant_roots(tenant)
        if not any(resolved == root or resolved.is_relative_to(root) for root in allowed):
            raise ConfinementError(
                f"{path} is outside the directories this tenant may read "
                f"({', '.join(str(r) for r in allowed)})"
            )
        if not resolved.is_dir():
            raise ConfinementError(f"{path} is not a directory")
        return resolved

    def sqlite_file(self, path: str, tenant: str) -> Path:
        """A SQLite database file the tenant may read (under its roots, like a folder)."""
        resolved = Path(path).resolve()
        allowed = self.tenant_roots(tenant)
        if not any(resolved.is_relative_to(root) for root in allowed):
            raise ConfinementError(
                f"the SQLite file {path} is outside the directories this tenant may read"
                + ("" if self.roots else " (RAGDOCK_SOURCE_ROOTS is empty)")
            )
        if not resolved.is_file():
            raise ConfinementError(f"the SQLite file {path} does not exist")
        return resolved

    def check_env(self, name: str, tenant: str) -> str:
        """`name`, if it is one of the tenant's secret variables."""
        prefix = f"RAGDOCK_SECRET_{tenant_token(tenant)}_"
        if not (name.startswith(prefix) and re.fullmatch(r"[A-Z0-9_]+", name)):
            raise ConfinementError(
                f"credential variable {name!r}: this tenant's secret variables are named "
                f"{prefix}<NAME>"
            )
        return name

    def check_file(self, path: str, tenant: str) -> Path:
        """`path` resolved, if it lies in the tenant's secrets directory."""
        own = (Path(self.secrets_dir) / _tenant_dir(tenant)).resolve()
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(own):
            raise ConfinementError(f"credential file {path}: this tenant's secrets are in {own}/")
        return resolved

    def read_env(self, name: str, tenant: str) -> str:
        value = os.environ.get(self.check_env(name, tenant))
        if not value:
            raise ConfinementError(f"credential variable {name} is not set on this worker")
        return value

    def read_file(self, path: str, tenant: str) -> str:
        resolved = self.check_file(path, tenant)
        try:
            return resolved.read_text().strip()
        except OSError as exc:
            raise ConfinementError(
                f"credential file {path} cannot be read ({exc.strerror})"
            ) from None
