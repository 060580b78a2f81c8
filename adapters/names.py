"""Adapter names, versions and aliases: safe as path components, unambiguous in model names.

A request's model name is `name` (its default alias), `name@alias` or `name@version`. Versions are
`v1`, `v2`, ... (or any safe label); aliases must not look like versions so `@x` never means both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from adapters.errors import InvalidNameError

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_VERSION_LIKE = re.compile(r"^v\d+$")


def check_name(name: str, *, kind: str = "adapter") -> str:
    """Raises InvalidNameError unless `name` is lowercase letters, digits, '-' or '_'.

    Args:
        kind: what is named (`adapter`, `reader`), for the message.
    """
    if not _NAME.match(name):
        raise InvalidNameError(
            f"{kind} name {name!r} is not allowed: use 1-63 lowercase letters, digits, '-' or "
            "'_', starting with a letter or digit",
            param="name",
        )
    return name


def check_version(version: str) -> str:
    if not _LABEL.match(version) or ".." in version:
        raise InvalidNameError(
            f"version {version!r} is not allowed: use letters, digits, '.', '-' or '_' (e.g. v3)",
            param="version",
        )
    return version


def check_alias(alias: str) -> str:
    if not _LABEL.match(alias) or ".." in alias or _VERSION_LIKE.match(alias):
        raise InvalidNameError(
            f"alias {alias!r} is not allowed: use letters, digits, '.', '-' or '_', and not the "
            "form of a version (v<number>)",
            param="alias",
        )
    return alias


@dataclass(frozen=True)
class ModelRef:
    """A parsed model name: `name`, plus `@selector` (a version or an alias) when given."""

    name: str
    selector: str | None = None

    @classmethod
    def parse(cls, model: str) -> ModelRef:
        name, _, selector = model.partition("@")
        return cls(name=name, selector=selector or None)

    def __str__(self) -> str:
        return f"{self.name}@{self.selector}" if self.selector else self.name
