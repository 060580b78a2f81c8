"""The `rag` request field, sources and the grounding verdict, as clients see them."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

MetadataValue = StrictStr | StrictInt | StrictFloat | StrictBool
SearchModeName = Literal["hybrid", "dense", "sparse"]
AnswerModeName = Literal["auto", "generate", "extract"]


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
    min_answerability: StrictFloat | StrictInt | None = Field(
        None,
        ge=0,
        le=1,
        description="Answer only when the calibrated answerability score is at least this "
        "(default: the adapter's calibrated threshold, or the collection's setting).",
    )
    min_support: StrictFloat | StrictInt | None = Field(
        None,
        ge=0,
        le=1,
        description="Share of the answer's content words its cited sources must contain; below "
        "it the answer becomes an abstention (streams are flagged instead). 0 turns it off.",
    )
    answer_mode: AnswerModeName | None = Field(
        None,
        description="With the gateway's reader: auto (the generated answer when a source holds "
        "it, else the reader's span, else abstain), generate (generated or abstain), extract "
        "(the reader's span; the model is not asked). Default: the collection's, else the "
        "gateway's.",
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


class Answerability(BaseModel):
    """The answer-or-abstain decision: its signals, the calibrated score and the threshold."""

    score: float | None = Field(
        default=None, description="Calibrated probability that the sources answer the question "
        "(null when the model has no calibration)."
    )  # fmt: skip
    threshold: float | None = None
    decision: Literal["model", "answer", "abstain"] = Field(
        description="model: the model's own choice (no calibration, or one not enforced and no "
        "threshold asked for); answer / abstain: the score's."
    )
    reasked: bool = Field(
        default=False, description="The model began to abstain and was asked again to answer."
    )
    p_abstain: float = Field(description="Probability of the abstention's first token.")
    question_coverage: float = Field(
        description="Share of the question's content words in the best-covering source."
    )


class ReaderVerdict(BaseModel):
    """What the grounding reader found in the sources, and the decision it fed."""

    span: str = Field(description="The reader's best answer span (empty: none).")
    source: int | None = Field(None, description="The source it lies in (1-based).")
    chunk_id: str | None = None
    start: int | None = Field(None, description="Its first character in that source's text.")
    end: int | None = None
    span_score: float | None = None
    null_score: float | None = Field(None, description="The reader's no-answer score there.")
    margin: float | None = Field(None, description="span_score - null_score.")
    probability: float | None = Field(
        None, description="Calibrated probability that the sources answer the question."
    )
    threshold: float | None = Field(None, description="Answer at or above it.")
    calibrated: bool = Field(
        description="A fitted decision was applied (false: the reader's margin > 0 decided)."
    )


class Support(BaseModel):
    """How much of the answer the cited sources contain."""

    supported: bool
    overlap: float = Field(description="Share of the answer's content words in cited sources.")
    verbatim: bool = Field(description="The whole answer occurs in a cited source.")
    min_support: float


class Grounding(BaseModel):
    status: Literal["answered", "abstained"]
    reason: str = Field(
        description="retrieval_gate | model_abstained | low_answerability | unsupported | cited "
        "| no_citation | invalid_citation"
    )
    top_score: float | None = Field(None, description="Best source's dense cosine similarity.")
    threshold: float | None = None
    citations: list[int] = Field(default_factory=list)
    invalid_citations: list[int] = Field(default_factory=list)
    answerability: Answerability | None = None
    support: Support | None = Field(
        default=None, description="Support check of an answer (streams: flagged, not withdrawn)."
    )
    answer_mode: AnswerModeName | None = Field(
        None, description="The answer mode applied (null without a reader)."
    )
    outcome: Literal["answer", "extract", "abstain"] | None = Field(
        None, description="With a reader: the generated answer, the reader's span, or neither."
    )
    why: str | None = Field(
        None, description="With a reader, why: supported | citation_repaired | extracted | "
        "generated_unsupported | generator_abstained | not_answerable | no_span.",
    )  # fmt: skip
    reader: ReaderVerdict | None = None


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
