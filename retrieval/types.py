"""Plain data shared by every part of the retrieval package (no I/O, no heavy imports)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

MetadataValue = str | int | float | bool


class SearchMode(StrEnum):
    """Which encoders a search uses."""

    HYBRID = "hybrid"
    DENSE = "dense"
    SPARSE = "sparse"


@dataclass(frozen=True)
class Document:
    """A document as a caller hands it in for ingestion.

    `version` names the content: when omitted it is derived from the content, so ingesting the
    same text twice is a no-op and changed text is a new version. `content_type` picks the
    extractor (`text/plain`, `text/markdown`, `text/html`).
    """

    doc_id: str
    text: str
    title: str = ""
    uri: str = ""
    updated_at: datetime | None = None
    version: str | None = None
    content_type: str = "text/markdown"
    metadata: Mapping[str, MetadataValue] = field(default_factory=dict)


@dataclass(frozen=True)
class Chunk:
    """One indexed passage of a document; `chunk_id` is stable for (doc id, version, index)."""

    chunk_id: str
    doc_id: str
    version: str
    index: int
    text: str
    title: str
    heading_path: tuple[str, ...]
    uri: str
    updated_at: str
    token_count: int
    metadata: Mapping[str, MetadataValue] = field(default_factory=dict)

    @property
    def index_text(self) -> str:
        """The text the encoders see: title and headings give a passage its context."""
        # A top heading that repeats the title adds nothing but weight on its words.
        headings = self.heading_path
        if headings and headings[0].strip().lower() == self.title.strip().lower():
            headings = headings[1:]
        context = [part for part in (self.title, *headings) if part]
        return "\n".join([" / ".join(context), self.text]) if context else self.text


@dataclass(frozen=True)
class ScoredChunk:
    """A search hit with what the gateway shows as a source."""

    chunk_id: str
    doc_id: str
    title: str
    uri: str
    score: float
    text: str
    updated_at: str
    heading_path: tuple[str, ...] = ()
    metadata: Mapping[str, MetadataValue] = field(default_factory=dict)
    similarity: float | None = None  # cosine with the query's embedding (None: sparse search)


@dataclass(frozen=True)
class SearchFilter:
    """Caller-side filters; the tenant is never part of this, it is always applied separately.

    Attributes:
        metadata: exact matches on document metadata fields (all must hold).
        doc_ids: restrict to these documents when given.
        updated_from: inclusive lower bound on the document's `updated_at`.
        updated_before: exclusive upper bound on `updated_at`.
    """

    metadata: Mapping[str, MetadataValue] = field(default_factory=dict)
    doc_ids: tuple[str, ...] | None = None
    updated_from: datetime | None = None
    updated_before: datetime | None = None


@dataclass(frozen=True)
class DocumentInfo:
    """What the catalog knows of a live document."""

    doc_id: str
    version: str
    chunk_count: int
    title: str
    uri: str
    updated_at: str


@dataclass(frozen=True)
class DocumentPage:
    """A page of documents; pass `next_after` back as `after` for the next page."""

    documents: list[DocumentInfo]
    next_after: str | None
