"""A source's spec: where a collection's documents come from (API -> control plane -> worker).

The same models are the `/v1/sources` request body, the JSON stored in `sources.spec` and what
the worker reads back, so a spec the API accepted is one the worker can run. Credentials are
never part of a spec: a SQL source names an environment variable or a secret file that holds
its URL (or only the password), and the worker reads it when it connects.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from ragdock.contracts.base import Contract

SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# A column name as the query returns it: letters, digits and '_' (it is quoted nowhere).
_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
FOLDER_SUFFIXES = (".md", ".markdown", ".txt", ".text", ".html", ".htm", ".pdf")


class FolderSpec(Contract):
    """Files under `path` (a directory on the worker's machine, inside the allowed roots).

    `include` and `exclude` are globs matched against the path relative to `path` (`**`
    crosses directories); a file must match an include and no exclude, and have a supported
    suffix.
    """

    kind: Literal["folder"] = "folder"
    path: str = Field(min_length=1, max_length=4096)
    include: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=lambda: ["**/*"], max_length=64
    )
    exclude: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        default_factory=list, max_length=64
    )


class SqlSpec(Contract):
    """Rows of one SELECT over a SQLAlchemy URL, read in a read-only transaction.

    The URL is given by reference: `url_env` (an environment variable holding the whole URL) or
    `url_file` (a secret file holding it), or `url` without a password plus `password_env` or
    `password_file`. The query returns one row per document, with the named columns.
    """

    kind: Literal["sql"] = "sql"
    url: str | None = Field(default=None, max_length=2048)
    url_env: str | None = Field(default=None, max_length=128)
    url_file: str | None = Field(default=None, max_length=4096)
    password_env: str | None = Field(default=None, max_length=128)
    password_file: str | None = Field(default=None, max_length=4096)
    query: str = Field(min_length=1, max_length=20_000)
    id_column: str = "id"
    title_column: str | None = "title"
    text_column: str = "text"
    updated_at_column: str | None = "updated_at"
    metadata_columns: list[str] = Field(default_factory=list, max_length=32)
    full_every: int = Field(
        default=10, ge=1, le=10_000,
        description="Every N-th scheduled sync reads every row, so deleted rows are found; "
        "the others read only rows whose updated_at is at or past the last sync's.",
    )  # fmt: skip

    @field_validator("id_column", "title_column", "text_column", "updated_at_column")
    @classmethod
    def _column(cls, value: str | None) -> str | None:
        if value is not None and not _COLUMN.match(value):
            raise ValueError(f"{value!r} is not a column name (letters, digits, '_')")
        return value

    @field_validator("metadata_columns")
    @classmethod
    def _columns(cls, values: list[str]) -> list[str]:
        for value in values:
            cls._column(value)
        return values

    @model_validator(mode="after")
    def _one_url(self) -> SqlSpec:
        given = [n for n in ("url", "url_env", "url_file") if getattr(self, n)]
        if len(given) != 1:
            raise ValueError("give exactly one of url, url_env or url_file")
        if self.password_env and self.password_file:
            raise ValueError("give at most one of password_env or password_file")
        if (self.password_env or self.password_file) and not self.url:
            raise ValueError("password_env and password_file go with url")
        return self


SourceSpec = Annotated[FolderSpec | SqlSpec, Field(discriminator="kind")]
