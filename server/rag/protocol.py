"""The `rag` request field, sources and the grounding verdict, as clients see them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

MetadataValue = StrictStr | StrictInt | StrictFloat | StrictBool
SearchModeName = Literal["hybrid", "dense", "sparse"]


class RagFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metadata: dict[str, MetadataValue] = Field(default_factory=dict)
    doc_ids: list[StrictStr] | None = None
    updated_from: datetime | None = None
    updated_before: datetime | None = None


class RagOptions(BaseModel):
    """`"rag": {...}` in a chat request (the openai SDK's `extra_body`)."""

    model_config = ConfigDict(extra="forbid")

    collection: StrictStr = Field(min_length=1)
    top_k: StrictInt | None = Field(None, ge=1, le=50)
    mode: SearchModeName = "hybrid"
    filter: RagFilter | None = None
    min_score: StrictFloat | StrictInt | None = Field(
        None, description="Retrieval gate threshold on dense cosine similarity, for this request."
    )


class Source(BaseModel):
    """One numbered source the answer may cite as [index]."""

    index: int
    chunk_id: str
    doc_id: str
    title: str
    uri: str
    score: float
    text: str
    updated_at: str


class Grounding(BaseModel):
    status: Literal["answered", "abstained"]
    reason: str = Field(
        description="retrieval_gate | model_abstained | cited | no_citation | invalid_citation"
    )
    top_score: float | None = Field(None, description="Best source's dense cosine similarity.")
    threshold: float | None = None
    citations: list[int] = Field(default_factory=list)
    invalid_citations: list[int] = Field(default_factory=list)


class RetrieveRequest(BaseModel):
    """POST /v1/retrieve: the search alone, as the gateway runs it for chat."""

    model_config = ConfigDict(extra="forbid")

    collection: StrictStr = Field(min_length=1)
    query: StrictStr = Field(min_length=1)
    top_k: StrictInt = Field(5, ge=1, le=100)
    mode: SearchModeName = "hybrid"
    filter: RagFilter | None = None
    min_score: StrictFloat | StrictInt | None = None


class RetrieveResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Source]
    top_score: float | None
    threshold: float
    passed_gate: bool
