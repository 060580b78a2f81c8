"""What every source kind yields: items with a key, a cheap fingerprint and lazily read content.

A sync compares an item's fingerprint (a file's size and mtime; a row's content hash) with the
one recorded at the last sync and reads nothing when they match. Otherwise it loads the content
and compares its hash; only a changed hash is extracted and ingested.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from retrieval.types import Document


@dataclass(frozen=True)
class ItemContent:
    """An item's content, read: its hash, its size, and how to turn it into a document."""

    content_hash: str
    size: int
    document: Callable[[str], Document]  # called with the document id; may raise ItemError


@dataclass(frozen=True)
class SourceItem:
    """One document at its source. `load` raises `ItemError` for an unreadable item."""

    key: str
    fingerprint: str | None
    load: Callable[[], ItemContent]
    updated_at: object = None  # SQL: the row's updated_at value (the incremental watermark)


class SourceReader(Protocol):
    """A source kind, opened for one sync."""

    def count(self, since: object = None) -> int | None:
        """How many items `items(since)` will yield, when cheap to know (for the ETA)."""
        ...

    def items(self, since: object = None) -> Iterator[SourceItem]:
        """Every item (since=None), or those updated at or after `since` (SQL only)."""
        ...

    def close(self) -> None: ...
