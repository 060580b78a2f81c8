"""Models of the collection, document, retrieve and embeddings APIs."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

from server.rag.protocol import MetadataValue, Source


class CollectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StrictStr = Field(min_length=1, max_length=64)


class CollectionOut(BaseModel):
    object: Literal["collection"] = "collection"
    name: str


class CollectionList(BaseModel):
    object: Literal["list"] = "list"
    data: list[CollectionOut]


class DocumentIn(BaseModel):
    """One document to ingest; re-sending an id with new text replaces it atomically."""

    model_config = ConfigDict(extra="forbid")

    id: StrictStr = Field(
        min_length=1,
        max_length=256,
        description="Any text, `/` included (GET/DELETE .../documents/{id} take it as is or "
        "percent-encoded); `.` and `..` segments are refused, since URLs drop them.",
    )
    text: StrictStr = Field(min_length=1)
    title: StrictStr = ""
    uri: StrictStr = ""
    updated_at: datetime | None = None
    version: StrictStr | None = Field(None, description="Default: derived from the content.")
    content_type: Literal["text/plain", "text/markdown", "text/html"] = "text/markdown"
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)

    @field_validator("id")
    @classmethod
    def _addressable(cls, value: str) -> str:
        if any(part in (".", "..") for part in value.split("/")):
            raise ValueError(
                f"{value[:80]!r} has a '.' or '..' path segment, which clients and proxies drop "
                "from URLs, so the document could never be fetched or deleted: rename it"
            )
        return value


class IngestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    documents: list[DocumentIn] = Field(min_length=1, max_length=1000)


class IngestResult(BaseModel):
    object: Literal["ingest.result"] = "ingest.result"
    added: int
    replaced: int
    unchanged: int
    chunks: int
    document_ids: list[str]


class DocumentOut(BaseModel):
    object: Literal["document"] = "document"
    id: str
    version: str
    chunk_count: int
    title: str
    uri: str
    updated_at: str


class DocumentPageOut(BaseModel):
    object: Literal["list"] = "list"
    data: list[DocumentOut]
    next_after: str | None = Field(None, description="Pass as ?after= for the next page.")


class DocumentDetail(DocumentOut):
    chunks: list[Source]


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    input: StrictStr | list[StrictStr] = Field(description="Text or texts to embed.")
    model: StrictStr
    encoding_format: Literal["float", "base64"] = "float"


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage
