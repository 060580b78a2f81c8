"""Structure-aware chunking sized in the embedder's tokens, with stable chunk ids."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from retrieval.chunking.blocks import Block, BlockKind, parse_blocks
from retrieval.chunking.pack import PackedChunk, pack_blocks
from retrieval.chunking.split import TokenCounter
from retrieval.types import Chunk, Document

__all__ = [
    "Block",
    "BlockKind",
    "ChunkingConfig",
    "PackedChunk",
    "TokenCounter",
    "chunk_document",
    "chunk_id",
    "content_version",
    "iso_utc",
    "pack_blocks",
    "parse_blocks",
]

# Fixed namespace: chunk ids must be the same in every process and every release.
CHUNK_NAMESPACE = uuid.UUID("5f0c4d3e-7b1a-4c2e-9a8d-2f6b1e0c9d47")


@dataclass(frozen=True)
class ChunkingConfig:
    """How documents are cut.

    Attributes:
        max_tokens: budget of one chunk in wordpiece tokens; all-MiniLM-L6-v2 reads 256 at
            most, and the title/heading line the encoders also see takes some of that.
        overlap_tokens: trailing prose repeated at the start of the next chunk.
    """

    max_tokens: int = 200
    overlap_tokens: int = 32


def chunk_id(doc_id: str, version: str, index: int) -> str:
    """The stable id of a chunk: UUID5 over (doc id, version, position)."""
    return str(uuid.uuid5(CHUNK_NAMESPACE, f"{doc_id}\x1f{version}\x1f{index}"))


def content_version(document: Document) -> str:
    """A version derived from what is indexed, so unchanged content keeps its chunk ids."""
    digest = hashlib.sha256()
    for part in (document.title, document.uri, document.content_type, document.text):
        digest.update(part.encode("utf-8"))
        digest.update(b"\x1f")
    return digest.hexdigest()[:16]


def iso_utc(moment: datetime) -> str:
    """RFC 3339 in UTC, the form both Qdrant engines filter on (naive means UTC)."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def chunk_document(
    document: Document,
    text: str,
    count: TokenCounter,
    *,
    version: str,
    now: datetime,
    config: ChunkingConfig = ChunkingConfig(),
    markdown: bool = True,
) -> list[Chunk]:
    """Cut one document's extracted text into chunks carrying its metadata.

    Args:
        document: the document (ids, title, uri, updated_at, metadata come from it).
        text: its body after extraction.
        count: the embedder's token counter.
        version: the document version the chunk ids are derived from.
        now: the timestamp used when the document has no `updated_at`.
        config: chunk budget and overlap.
        markdown: whether `text` is markdown (else plain prose).

    Returns:
        Chunks with positions 0..n-1; empty text gives no chunks.
    """
    packed = pack_blocks(
        parse_blocks(text, markdown=markdown), config.max_tokens, config.overlap_tokens, count
    )
    updated = iso_utc(document.updated_at or now)
    return [
        Chunk(
            chunk_id=chunk_id(document.doc_id, version, index),
            doc_id=document.doc_id,
            version=version,
            index=index,
            text=piece.text,
            title=document.title,
            heading_path=piece.heading_path,
            uri=document.uri,
            updated_at=updated,
            token_count=piece.token_count,
            metadata=dict(document.metadata),
        )
        for index, piece in enumerate(packed)
    ]
