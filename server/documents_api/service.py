"""Documents and embeddings over the retriever. The retriever's calls block (embedding, the
embedded Qdrant engine), so each runs in the thread pool, off the event loop."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from pathlib import PurePath
from typing import TypeVar

import numpy as np
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from retrieval.quotas import QuotaExceededError
from retrieval.service import Retriever
from retrieval.sources.files import CONTENT_TYPES, first_heading
from retrieval.types import Document, DocumentInfo
from retrieval.untrusted import (
    ExtractError,
    ExtractLimits,
    TooLargeError,
    TooSlowError,
    UnreadableError,
    extract_pdf_text,
    html_to_markdown_isolated,
)
from server.auth import PLATFORM, Principal
from server.documents_api.protocol import (
    DocumentDetail,
    DocumentIn,
    DocumentOut,
    DocumentPageOut,
    EmbeddingData,
    EmbeddingResponse,
    EmbeddingUsage,
    IngestResult,
)
from server.errors import (
    InsufficientQuotaError,
    InvalidRequestError,
    ModelNotFoundError,
    NotFoundError,
    PayloadTooLargeError,
    UnprocessableError,
)
from server.rag.service import RetrievalUnavailableError, numbered_sources

EMBEDDING_MODEL = "all-minilm-l6-v2"
T = TypeVar("T")
log = logging.getLogger(__name__)


# The limits OpenAI documents for its own embeddings endpoint: inputs per request, tokens per
# input, tokens per request. They bound the work (and memory) one request can ask for.
MAX_EMBEDDING_INPUTS = 2048
MAX_EMBEDDING_INPUT_TOKENS = 8192
MAX_EMBEDDING_REQUEST_TOKENS = 300_000


class DocumentService:
    def __init__(
        self, retriever: Retriever, *, max_document_bytes: int, retry_after_s: int = 5
    ) -> None:
        self.retriever = retriever
        self._max_bytes = max_document_bytes
        # The text a PDF or HTML file may expand to is bounded like a document's bytes.
        self._extract_limits = ExtractLimits(max_chars=max_document_bytes)
        self._retry_after_s = retry_after_s

    async def _store(
        self, collection: str, call: Callable[[], T], *, param: str | None = None
    ) -> T:
        """Run one blocking retriever call in the thread pool and map its failures.

        Raises:
            NotFoundError: the collection does not exist.
            InvalidRequestError: the retriever refused the input (names, content types).
            InsufficientQuotaError: a storage quota would be exceeded (429, nothing done).
            RetrievalUnavailableError: the vector store or the catalog failed: a 503 the client
                may retry, never a 500 or a silently partial answer.
        """
        try:
            return await run_in_threadpool(call)
        except KeyError:
            raise _no_collection(collection) from None
        except QuotaExceededError as exc:
            raise InsufficientQuotaError(f"Quota exceeded: {exc}") from exc
        except ValueError as exc:
            raise InvalidRequestError(str(exc), param=param) from exc
        except Exception as exc:
            log.warning("vector store call on %r failed", collection, exc_info=exc)
            raise RetrievalUnavailableError(
                f"The document store failed ({type(exc).__name__}); nothing was changed by "
                "this request unless it was acknowledged",
                retry_after_s=self._retry_after_s,
                code="retrieval_unavailable",
            ) from exc

    # --- collections -----------------------------------------------------------------------
    async def create_collection(self, name: str, tenant: str) -> None:
        await self._store(
            name, lambda: self.retriever.create_collection(name, tenant=tenant), param="name"
        )

    async def list_collections(self, tenant: str | None) -> list[str]:
        """The collection names `tenant` may see (None: all of them)."""
        return await self._store("", lambda: self.retriever.list_collections(tenant))

    async def delete_collection(self, name: str, principal: Principal) -> None:
        """A platform admin drops the collection for everyone. A tenant admin drops it whole
        when its tenant created it and no other tenant uses it (the store's collection and its
        threads are freed); otherwise it removes its own tenant's documents, and other
        tenants' documents stay."""
        if name not in await self.list_collections(
            None if principal.can(PLATFORM) else principal.tenant
        ):
            raise _no_collection(name)
        if principal.can(PLATFORM):
            await self._store(name, lambda: self.retriever.delete_collection(name))
        elif not await self._store(
            name, lambda: self.retriever.drop_own_collection(name, principal.tenant)
        ):
            await self._store(
                name, lambda: self.retriever.delete_tenant_documents(name, principal.tenant)
            )

    # --- documents -------------------------------------------------------------------------
    async def ingest(
        self, collection: str, tenant: str, documents: list[DocumentIn]
    ) -> IngestResult:
        documents = [await self._html_converted(d) for d in documents]
        docs = [
            Document(
                doc_id=d.id,
                text=d.text,
                title=d.title,
                uri=d.uri,
                updated_at=d.updated_at,
                version=d.version,
                content_type=d.content_type,
                metadata=d.metadata,
            )
            for d in documents
        ]
        for doc in docs:
            if len(doc.text.encode()) > self._max_bytes:
                raise PayloadTooLargeError(
                    f"document {doc.doc_id!r} is over the {self._max_bytes} byte limit",
                    param="text",
                )
        report = await self._store(
            collection, lambda: self.retriever.ingest(collection, tenant, docs)
        )
        return IngestResult(
            added=report.added, replaced=report.replaced, unchanged=report.unchanged,
            chunks=report.chunks, document_ids=[d.doc_id for d in docs],
        )  # fmt: skip

    async def _html_converted(self, document: DocumentIn) -> DocumentIn:
        """An HTML document becomes markdown here, in the bounded child process, so the
        retriever never parses untrusted HTML in the gateway."""
        kind = document.content_type.split(";")[0].strip().lower()
        if kind not in ("text/html", "application/xhtml+xml"):
            return document
        markdown = await run_in_threadpool(
            _html_markdown, document.id, document.text, self._extract_limits
        )
        return document.model_copy(update={"text": markdown, "content_type": "text/markdown"})

    def check_upload_size(self, filename: str, size: int | None) -> None:
        """Raises PayloadTooLargeError for a file over the limit, from its spooled size."""
        if size is not None and size > self._max_bytes:
            raise PayloadTooLargeError(
                f"{filename} is {size} bytes, over the {self._max_bytes} byte limit"
            )

    async def document_from_upload(
        self, filename: str, content: bytes, *, doc_id: str | None, title: str | None
    ) -> DocumentIn:
        """Turn an uploaded file into a document (txt, md, html, pdf).

        Raises:
            PayloadTooLargeError: the file, or the text a PDF expands to, is over a limit.
            InvalidRequestError: an unsupported type, content that cannot be read, or a
                document id (`doc_id`, else the file's stem) that is not one.
            UnprocessableError: a PDF whose extraction outran its deadline.
        """
        if len(content) > self._max_bytes:
            raise PayloadTooLargeError(
                f"{filename} is {len(content)} bytes, over the {self._max_bytes} byte limit"
            )
        suffix = PurePath(filename).suffix.lower()
        content_type = CONTENT_TYPES.get(suffix)
        if content_type is None:
            raise InvalidRequestError(
                f"{filename}: unsupported file type {suffix or '(none)'}; upload "
                f"{', '.join(sorted(CONTENT_TYPES))}",
                param="files",
            )
        if content_type == "application/pdf":
            text = await run_in_threadpool(_pdf_text, filename, content, self._extract_limits)
            content_type = "text/plain"
        else:
            try:
                text = content.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidRequestError(f"{filename} is not UTF-8 text", param="files") from exc
        if not text.strip():
            raise InvalidRequestError(f"{filename} has no text to index", param="files")
        stem = PurePath(filename).stem
        title = title or first_heading(text) if content_type == "text/markdown" else title
        try:
            return DocumentIn.model_validate(
                {"id": doc_id or stem, "text": text, "title": title or stem, "uri": filename,
                 "content_type": content_type}
            )  # fmt: skip
        except ValidationError as exc:  # the id (from doc_id or the file name), as JSON ingest
            problem = exc.errors()[0]
            field = ".".join(str(p) for p in problem["loc"])
            message = f"{filename}: {field}: {problem['msg']}"
            param = "doc_id" if field == "id" else "files"
            raise InvalidRequestError(message, param=param) from None

    async def list_documents(
        self, collection: str, tenant: str, limit: int, after: str | None
    ) -> DocumentPageOut:
        page = await self._store(
            collection,
            lambda: self.retriever.list_documents(collection, tenant, limit=limit, after=after),
        )
        return DocumentPageOut(
            data=[_document_out(d) for d in page.documents], next_after=page.next_after
        )

    async def get_document(self, collection: str, tenant: str, doc_id: str) -> DocumentDetail:
        found = await self._store(
            collection, lambda: self.retriever.get_document(collection, tenant, doc_id)
        )
        if found is None:
            raise NotFoundError(
                f"Document '{doc_id}' not found in '{collection}'", code="document_not_found"
            )
        info, chunks = found
        return DocumentDetail(
            **_document_out(info).model_dump(),
            chunks=numbered_sources(chunks),
        )

    async def delete_document(self, collection: str, tenant: str, doc_id: str) -> None:
        existed = await self._store(
            collection, lambda: self.retriever.delete_document(collection, tenant, doc_id)
        )
        if not existed:
            raise NotFoundError(
                f"Document '{doc_id}' not found in '{collection}'", code="document_not_found"
            )

    # --- embeddings ------------------------------------------------------------------------
    async def embed(self, model: str, texts: list[str], encoding_format: str) -> EmbeddingResponse:
        if model != EMBEDDING_MODEL:
            raise ModelNotFoundError(model)
        if not texts or any(not t for t in texts):
            raise InvalidRequestError("input must be non-empty text", param="input")
        if len(texts) > MAX_EMBEDDING_INPUTS:
            raise InvalidRequestError(
                f"input has {len(texts)} items; at most {MAX_EMBEDDING_INPUTS} per request",
                param="input",
            )
        embedder = self.retriever.embedder
        counts = await run_in_threadpool(lambda: [embedder.count_tokens(t) for t in texts])
        longest = max(range(len(counts)), key=counts.__getitem__)
        if counts[longest] > MAX_EMBEDDING_INPUT_TOKENS:
            raise InvalidRequestError(
                f"input[{longest}] has {counts[longest]} tokens; at most "
                f"{MAX_EMBEDDING_INPUT_TOKENS} per input",
                param="input",
            )
        tokens = sum(counts)
        if tokens > MAX_EMBEDDING_REQUEST_TOKENS:
            raise InvalidRequestError(
                f"input has {tokens} tokens in all; at most {MAX_EMBEDDING_REQUEST_TOKENS} "
                "per request: split it",
                param="input",
            )
        vectors = await run_in_threadpool(embedder.embed_documents, texts)
        data = [
            EmbeddingData(
                index=i, embedding=_encode(np.asarray(v, dtype=np.float32), encoding_format)
            )
            for i, v in enumerate(vectors)
        ]
        return EmbeddingResponse(
            data=data,
            model=EMBEDDING_MODEL,
            usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
        )


def _encode(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return [float(x) for x in vector]


def _pdf_text(filename: str, content: bytes, limits: ExtractLimits) -> str:
    """The PDF's text, extracted in a bounded child process (see `retrieval.untrusted`)."""
    try:
        return extract_pdf_text(content, limits)
    except ExtractError as exc:
        raise _extract_failure(filename, exc, "files") from exc


def _html_markdown(name: str, html: str, limits: ExtractLimits) -> str:
    """The HTML document as markdown, converted in the bounded child process."""
    try:
        return html_to_markdown_isolated(html, limits)
    except ExtractError as exc:
        raise _extract_failure(name, exc, "documents") from exc


def _extract_failure(name: str, exc: ExtractError, param: str) -> Exception:
    if isinstance(exc, TooLargeError):
        return PayloadTooLargeError(f"{name}: {exc.reason}")
    if isinstance(exc, TooSlowError):
        return UnprocessableError(f"{name}: {exc.reason}", param=param)
    assert isinstance(exc, UnreadableError)
    return InvalidRequestError(f"{name} is {exc.reason}", param=param)


def _document_out(info: DocumentInfo) -> DocumentOut:
    return DocumentOut(
        id=info.doc_id,
        version=info.version,
        chunk_count=info.chunk_count,
        title=info.title,
        uri=info.uri,
        updated_at=info.updated_at,
    )


def _no_collection(name: str) -> NotFoundError:
    return NotFoundError(
        f"Collection '{name}' does not exist; create it with POST /v1/collections",
        param="collection", code="collection_not_found",
    )  # fmt: skip
