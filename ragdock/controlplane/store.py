"""`ControlPlane`: the engine, its transactions, its clock and the migrations run on open."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url

_MIGRATIONS = Path(__file__).with_name("migrations")
# Any constant: the key of the PostgreSQL advisory lock that serializes migrations.
_MIGRATION_LOCK = 0x7261_6764_6F63


class ControlPlane:
    """A connection pool over one control-plane database.

    Use `open_control_plane`; it applies the migrations. Every method that changes state opens
    one transaction with `write()`; readers use `read()`.

    Args:
        url: a SQLAlchemy URL (`sqlite:///path` or `postgresql+psycopg://...`).
    """

    def __init__(self, url: str) -> None:
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        # Who holds a lease: unique per process start, readable in the tables.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        if self.is_sqlite:
            self._reader = self._sqlite_engine(immediate=False)
            self._writer = self._sqlite_engine(immediate=True)
        else:
            engine = create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=8)
            self._reader = self._writer = engine

    def _sqlite_engine(self, *, immediate: bool) -> Engine:
        database = self.url.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # A pool: opening a connection (and its pragmas) costs more than the lookups it serves.
        # check_same_thread is off because pooled connections move between threads; each is
        # used by one thread at a time.
        engine = create_engine(
            self.url,
            pool_size=8,
            max_overflow=16,
            connect_args={"timeout": 60, "check_same_thread": False},
        )

        @event.listens_for(engine, "connect")
        def _configure(dbapi: Any, _record: Any) -> None:
            dbapi.isolation_level = None  # we issue BEGIN ourselves, below
            dbapi.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
            dbapi.execute("PRAGMA synchronous=FULL")  # a commit that returned survives a crash
            dbapi.execute("PRAGMA busy_timeout=60000")

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            # A write transaction takes the write lock at BEGIN, so two writers queue instead
            # of both reading and then failing to upgrade their locks (SQLITE_BUSY).
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One read-write transaction: committed on exit, rolled back on an exception."""
        with self._writer.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """One read-only transaction (a consistent snapshot for each statement at least)."""
        with self._reader.begin() as conn:
            yield conn

    def now(self, conn: Connection) -> float:
        """The database's clock in epoch seconds: every replica measures leases against it."""
        if self.is_sqlite:
            return time.time()  # one machine: its clock is the database's
        return float(
            conn.execute(text("SELECT EXTRACT(EPOCH FROM clock_timestamp())")).scalar_one()
        )

    def migrate(self) -> None:
        """Bring the schema to the newest migration (a no-op when it is there already)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        with self._writer.connect() as conn:
            if not self.is_sqlite:
                conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _MIGRATION_LOCK})
            try:
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
                conn.commit()
            finally:
                if not self.is_sqlite:
                    conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _MIGRATION_LOCK})
                    conn.commit()

    def schema_version(self) -> str | None:
        """The alembic revision the database is at (None before the first migration)."""
        from alembic.runtime.migration import MigrationContext

        with self._reader.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def describe(self) -> str:
        """The URL without its password, for banners and logs."""
        return self.url.render_as_string(hide_password=True)

    def close(self) -> None:
        """Release every pooled connection."""
        self._reader.dispose()
        if self._writer is not self._reader:
            self._writer.dispose()


def sqlite_url(path: Path) -> str:
    """The URL of the embedded control plane at `path`."""
    return f"sqlite:///{Path(path).resolve()}"


def open_control_plane(url: str | None, data_dir: Path) -> ControlPlane:
    """The control plane at `url`, or the embedded SQLite file `data_dir/control.sqlite`.

    Raises:
        sqlalchemy.exc.OperationalError: the database cannot be reached.
    """
    plane = ControlPlane(url or sqlite_url(Path(data_dir) / "control.sqlite"))
    plane.migrate()
    return plane
