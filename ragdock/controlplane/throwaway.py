"""A throwaway PostgreSQL server for tests and benchmarks of the control plane: Debian's server
binaries (`scripts/install-tools.sh` installs the `postgresql` package when absent), a cluster in
a temporary directory, listening on loopback only, removed when the context ends."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from ragdock.ports import free_port


def server_bin() -> Path:
    """The newest installed server's bin directory."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_major)
    if not found:
        raise RuntimeError(
            "PostgreSQL server binaries are missing: run scripts/install-tools.sh "
            "(it installs Debian's postgresql package)"
        )
    return Path(found[-1]).parent


def _major(path: str) -> int:
    return int(Path(path).parent.parent.name)


def _as_server_user(argv: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root; CI runs as root, so use the package's user.
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


@contextmanager
def throwaway_cluster(base: Path) -> Iterator[str]:
    """Start a cluster under `base`; yields the admin URL of its `postgres` database."""
    binaries = server_bin()
    data = base / "pgdata"
    base.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(base, user.pw_uid, user.pw_gid)
    port = free_port()
    subprocess.run(
        _as_server_user([str(binaries / "initdb"), "-D", str(data), "-U", "ragdock",
                         "--auth=trust", "-E", "UTF8", "--no-sync"]),
        check=True, capture_output=True,
    )  # fmt: skip
    # fsync stays on: the registry's crash tests rely on a commit that returned being durable.
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c max_connections=200"
    subprocess.run(
        _as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-o", options,
                         "-l", str(base / "server.log"), "-w", "-t", "60", "start"]),
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        yield f"postgresql+psycopg://ragdock@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate",
                             "-w", "stop"]),
            check=False, capture_output=True,
        )  # fmt: skip
        shutil.rmtree(base, ignore_errors=True)


def fresh_database(admin_url: str) -> str:
    """Create an empty database on the server; returns its URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    plain = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


@contextmanager
def throwaway_database() -> Iterator[str]:
    """A server of its own with one empty database; yields the database's URL."""
    import tempfile

    # Not under a root-only temporary directory: the server runs as `postgres` when we are root.
    base = Path(tempfile.mkdtemp(prefix="ragdock-pg-"))
    with throwaway_cluster(base) as admin:
        yield fresh_database(admin)
