"""Retrieval for the gateway: run the hybrid search a request asks for, score the retrieval gate,
and map store failures to clear errors (never a fabricated answer)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from grounding.policy import AnswerMode
from retrieval.service import Retriever
from retrieval.types import ScoredChunk, SearchFilter, SearchMode
from server.errors import EngineUnavailableError, InvalidRequestError, NotFoundError
from server.metrics import GatewayMetrics
from server.rag.protocol import RagFilter, RagOptions, Source


class RetrievalUnavailableError(EngineUnavailableError):
    default_code = "retrieval_unavailable"


@dataclass(frozen=True)
class RetrievalOutcome:
    sources: list[Source]
    top_score: float | None
    threshold: float

    @property
    def passed_gate(self) -> bool:
        return (
            bool(self.sources) and self.top_score is not None and self.top_score >= self.threshold
        )


class RagService:
    def __init__(
        self,
        retriever: Retriever,
        *,
        default_top_k: int,
        default_min_score: float,
        collection_min_scores: dict[str, float],
        collection_min_answerability: dict[str, float] | None = None,
        default_min_support: float = 0.0,
        collection_min_support: dict[str, float] | None = None,
        model_defaults: dict[str, dict[str, Any]],
        metrics: GatewayMetrics,
        retry_after_s: int,
        reader_min_score: float | None = None,
        default_answer_mode: AnswerMode = "auto",
        collection_answer_modes: dict[str, AnswerMode] | None = None,
    ) -> None:
        self.retriever = retriever
        self._top_k = default_top_k
        self._min_score = default_min_score
        self._collection_min_scores = collection_min_scores
        self._collection_min_answerability = collection_min_answerability or {}
        self._min_support = default_min_support
        self._collection_min_support = collection_min_support or {}
        self._model_defaults = model_defaults
        self._metrics = metrics
        self._retry_after_s = retry_after_s
        self._reader_min_score = reader_min_score
        self._answer_mode: AnswerMode = default_answer_mode
        self._collection_answer_modes = collection_answer_modes or {}

    def options_for(self, model: str, raw: Any) -> RagOptions | None:
        """The request's `rag` field, else the RAG defaults configured for its model, else None.

        Raises:
            InvalidRequestError: the `rag` field is malformed.
        """
        if raw is None:
            raw = self._model_defaults.get(model)
            if raw is None:
                return None
        try:
            return RagOptions.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InvalidRequestError(
                f"Invalid rag.{where}: {first['msg']}", param=f"rag.{where}"
            ) from None

    def threshold(
        self, collection: str, override: float | None, *, with_reader: bool = False
    ) -> float:
        """The retrieval gate: the request's, else the collection's, else the gateway's (lower
        with a reader, whose calibrated decision judges what passes)."""
        if override is not None:
            return float(override)
        default = self._min_score
        if with_reader and self._reader_min_score is not None:
            default = self._reader_min_score
        return self._collection_min_scores.get(collection, default)

    def answer_mode(self, collection: str, override: AnswerMode | None) -> AnswerMode:
        if override is not None:
            return override
        return self._collection_answer_modes.get(collection, self._answer_mode)

    def min_answerability(self, collection: str, override: float | None) -> float | None:
        """The request's threshold on the answerability score, else the collection's, else None
        (the served adapter's calibrated threshold applies)."""
        if override is not None:
            return float(override)
        return self._collection_min_answerability.get(collection)

    def min_support(self, collection: str, override: float | None) -> float:
        if override is not None:
            return float(override)
        return self._collection_min_support.get(collection, self._min_support)

    async def retrieve(
        self,
        tenant: str,
        collection: str,
        query: str,
        *,
        top_k: int | None = None,
        mode: str = "hybrid",
        filter: RagFilter | None = None,
        min_score: float | None = None,
        with_reader: bool = False,
    ) -> RetrievalOutcome:
        """Search the tenant's chunks and score the gate.

        Raises:
            NotFoundError: the collection does not exist.
            RetrievalUnavailableError: the vector store failed.
        """
        started = time.perf_counter()
        search_filter = _search_filter(filter)
        try:
            chunks, top_score = await run_in_threadpool(
                self._search,
                tenant,
                collection,
                query,
                top_k or self._top_k,
                SearchMode(mode),
                search_filter,
            )
        except KeyError:
            raise NotFoundError(
                f"Collection '{collection}' does not exist; create it with POST /v1/collections",
                param="collection", code="collection_not_found",
            ) from None  # fmt: skip
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from exc
        except Exception as exc:  # the store's own errors: never answer without the sources
            self._metrics.retrieval_errors.labels(collection).inc()
            raise RetrievalUnavailableError(
                f"Retrieval failed ({type(exc).__name__}); no answer is given without its sources",
                retry_after_s=self._retry_after_s,
                code="retrieval_unavailable",
            ) from exc
        self._metrics.retrieval_latency.labels(collection).observe(time.perf_counter() - started)
        sources = numbered_sources(chunks)
        threshold = self.threshold(collection, min_score, with_reader=with_reader)
        return RetrievalOutcome(sources, top_score, threshold)

    def _search(
        self,
        tenant: str,
        collection: str,
        query: str,
        top_k: int,
        mode: SearchMode,
        flt: SearchFilter,
    ) -> tuple[list[ScoredChunk], float | None]:
        chunks = self.retriever.search(
            collection, tenant, query, top_k=top_k, mode=mode, filter=flt
        )
        # Fused scores are rank-based and say nothing absolute; the gate reads the best cosine
        # similarity among the hits, which the same query returned.
        similarities = [c.similarity for c in chunks if c.similarity is not None]
        return chunks, (max(similarities) if similarities else None)


def _search_filter(flt: RagFilter | None) -> SearchFilter:
    if flt is None:
        return SearchFilter()
    return SearchFilter(
        metadata=flt.metadata,
        doc_ids=tuple(flt.doc_ids) if flt.doc_ids is not None else None,
        updated_from=flt.updated_from,
        updated_before=flt.updated_before,
    )


def numbered_sources(chunks: list[ScoredChunk]) -> list[Source]:
    """Chunks as the sources a client sees, numbered from 1 as the prompt cites them."""
    return [_source(i, chunk) for i, chunk in enumerate(chunks, start=1)]


def _source(index: int, chunk: ScoredChunk) -> Source:
    return Source(
        index=index,
        chunk_id=chunk.chunk_id,
        doc_id=chunk.doc_id,
        title=chunk.title,
        uri=chunk.uri,
        score=chunk.score,
        text=chunk.text,
        updated_at=chunk.updated_at,
    )
