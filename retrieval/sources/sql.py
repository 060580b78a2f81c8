"""A SQL source: the rows of one SELECT, read in a read-only transaction.

Three guards keep a source from writing: the query must be one statement and runs as a subquery
(`SELECT * FROM (<query>)`, where PostgreSQL refuses data-modifying statements), the
connection's transactions are read-only (PostgreSQL's `default_transaction_read_only` and
`SET TRANSACTION READ ONLY`; SQLite opened `mode=ro` with `query_only`), and only those two
backends are accepted, since the read-only guarantee is per database.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from ragdock.contracts.source_spec import SqlSpec
from ragdock.redact import mask_credentials
from retrieval.sources.confine import Confinement, ConfinementError
from retrieval.sources.files import ItemError
from retrieval.sources.items import ItemContent, SourceItem
from retrieval.types import Document, MetadataValue

_BACKENDS = ("postgresql", "sqlite")
STATEMENT_TIMEOUT_MS = 120_000


class SqlSourceError(ValueError):
    """The source's database cannot be read as specified (the message names no secret)."""


def _error(exc: BaseException) -> str:
    cause = getattr(exc, "orig", None) or exc
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return mask_credentials(first)[:300]


def source_url(spec: SqlSpec, tenant: str, confinement: Confinement) -> URL:
    """The URL to connect with, credentials read from the references the spec names.

    Raises:
        ConfinementError: a reference outside the tenant's secrets, or a SQLite file outside
            its roots.
        SqlSourceError: a URL that does not parse, an unsupported backend, or a password
            written into the spec's `url`.
    """
    if spec.url_env:
        raw = confinement.read_env(spec.url_env, tenant)
    elif spec.url_file:
        raw = confinement.read_file(spec.url_file, tenant)
    else:
        raw = spec.url or ""
    try:
        url = make_url(raw)
    except ArgumentError:
        raise SqlSourceError("the source's database URL does not parse") from None
    if spec.url and url.password:
        raise SqlSourceError(
            "the url holds a password: give it as a reference (password_env or "
            "password_file), or the whole URL as url_env or url_file"
        )
    if url.get_backend_name() not in _BACKENDS:
        raise SqlSourceError(
            f"unsupported database {url.get_backend_name()!r}: sources read "
            f"{' or '.join(_BACKENDS)}"
        )
    if spec.password_env:
        url = url.set(password=confinement.read_env(spec.password_env, tenant))
    elif spec.password_file:
        url = url.set(password=confinement.read_file(spec.password_file, tenant))
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            raise SqlSourceError("a SQLite source names a database file")
        path = confinement.sqlite_file(url.database, tenant)
        url = url.set(
            drivername="sqlite", database=f"file:{path}", query={"mode": "ro", "uri": "true"}
        )
    return url


def read_only_engine(url: URL) -> Engine:
    """An engine whose every transaction is read-only (and bounded in time on PostgreSQL)."""
    if url.get_backend_name() == "sqlite":
        engine = create_engine(url, poolclass=None)

        @event.listens_for(engine, "connect")
        def _sqlite_read_only(dbapi: Any, _record: Any) -> None:
            dbapi.execute("PRAGMA query_only = ON")

        return engine
    engine = create_engine(
        url,
        pool_pre_ping=True,
        connect_args={
            "options": "-c default_transaction_read_only=on "
            f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
            "connect_timeout": 10,
        },
    )

    @event.listens_for(engine, "begin")
    def _pg_read_only(conn: Any) -> None:
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")

    return engine


def _one_statement(query: str) -> str:
    body = query.strip().rstrip(";").strip()
    if ";" in body:
        raise SqlSourceError("the query must be one SELECT statement (it holds a ';')")
    return body


def _metadata_value(value: object) -> MetadataValue | None:
    if value is None:
        return None
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _as_datetime(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


class SqlReader:
    """The rows of a SQL source.

    Args:
        spec: the source's query and columns.
        url: from `source_url`.
        metadata: added to every document (with the row's metadata columns and its id).
    """

    def __init__(self, spec: SqlSpec, url: URL, *, metadata: Mapping[str, MetadataValue]) -> None:
        self.spec = spec
        self._query = _one_statement(spec.query)
        self._metadata = metadata
        self._engine = read_only_engine(url)

    def _select(self, since: object, *, count: bool = False, first_row: bool = False) -> Any:
        head = "SELECT count(*)" if count else "SELECT *"
        sql = f"{head} FROM ({self._query}) AS ragdock_source"
        params: dict[str, object] = {}
        if since is not None and self.spec.updated_at_column:
            sql += f" WHERE {self.spec.updated_at_column} >= :since"
            params["since"] = since
        if first_row:
            sql += " LIMIT 1"
        return text(sql).bindparams(**params) if params else text(sql)

    def check(self) -> None:
        """Run the query for its first row: it must read, be allowed, and return the named columns.

        Raises:
            SqlSourceError: the query fails (a write refused, a syntax error, no connection)
                or lacks a named column.
        """
        try:
            with self._engine.connect() as conn:
                # One row, not none: a query that writes per row (nextval(), a function with
                # side effects) is evaluated, and refused by the read-only transaction, now.
                result = conn.execute(self._select(None, first_row=True))
                columns = set(result.keys())
                result.fetchall()
        except SQLAlchemyError as exc:
            raise SqlSourceError(f"the query cannot be run read-only: {_error(exc)}") from None
        spec = self.spec
        wanted = [spec.id_column, spec.text_column, spec.title_column, spec.updated_at_column]
        missing = [c for c in [*wanted, *spec.metadata_columns] if c and c not in columns]
        if missing:
            raise SqlSourceError(
                f"the query returns no column {', '.join(missing)} (it returns "
                f"{', '.join(sorted(columns)) or 'none'})"
            )

    def count(self, since: object = None) -> int | None:
        try:
            with self._engine.connect() as conn:
                return int(conn.execute(self._select(since, count=True)).scalar_one())
        except SQLAlchemyError as exc:
            raise SqlSourceError(f"counting the rows failed: {_error(exc)}") from None

    def items(self, since: object = None) -> Iterator[SourceItem]:
        try:
            with self._engine.connect() as conn:
                # The statement's options, not the connection's: with those, the begin
                # event's SET TRANSACTION ran as a server-side cursor (a syntax error).
                result = conn.execute(
                    self._select(since).execution_options(stream_results=True, yield_per=500)
                )
                for row in result.mappings():
                    yield self._item(dict(row))
        except SQLAlchemyError as exc:
            raise SqlSourceError(f"reading the rows failed: {_error(exc)}") from None

    def _item(self, row: Mapping[str, Any]) -> SourceItem:
        spec = self.spec
        key = str(row[spec.id_column])
        title = str(row[spec.title_column] or "") if spec.title_column else ""
        body = row[spec.text_column]
        updated = row[spec.updated_at_column] if spec.updated_at_column else None
        extra = {c: _metadata_value(row[c]) for c in spec.metadata_columns}
        metadata = {
            **{c: v for c, v in extra.items() if v is not None}, **self._metadata, "source_id": key,
        }  # fmt: skip
        canonical = json.dumps([title, body, metadata], sort_keys=True, default=str)
        digest = hashlib.sha256(canonical.encode()).hexdigest()

        def load() -> ItemContent:
            if not isinstance(body, str) or not body.strip():
                raise ItemError(f"column {spec.text_column} holds no text")

            def document(doc_id: str) -> Document:
                return Document(
                    doc_id=doc_id, text=body, title=title or key, uri="", version=digest[:32],
                    updated_at=_as_datetime(updated), content_type="text/markdown",
                    metadata=metadata,
                )  # fmt: skip

            return ItemContent(digest, len(canonical), document)

        return SourceItem(key=key, fingerprint=digest, load=load, updated_at=updated)

    def close(self) -> None:
        self._engine.dispose()


__all__ = ["ConfinementError", "SqlReader", "SqlSourceError", "read_only_engine", "source_url"]
