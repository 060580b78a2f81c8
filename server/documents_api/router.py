"""Routes of the collection, document, retrieve and embeddings APIs. No logic here.

Every route names its scope with one of `server.auth`'s `Chat`, `Ingest`, `Admin`; what it
touches is always the caller's tenant's."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request, UploadFile, status

from server.auth import Admin, Chat, Ingest
from server.documents_api.protocol import (
    CollectionIn,
    CollectionList,
    CollectionOut,
    DocumentDetail,
    DocumentPageOut,
    EmbeddingRequest,
    EmbeddingResponse,
    IngestRequest,
    IngestResult,
)
from server.documents_api.service import DocumentService
from server.errors import InvalidRequestError, NotFoundError
from server.rag.protocol import RetrieveRequest, RetrieveResponse
from server.rag.service import RagService


def _documents(request: Request) -> DocumentService:
    service: DocumentService | None = request.app.state.document_service
    if service is None:
        raise NotFoundError("Retrieval is not enabled on this gateway", code="retrieval_disabled")
    return service


def _rag(request: Request) -> RagService:
    service: RagService | None = request.app.state.rag_service
    if service is None:
        raise NotFoundError("Retrieval is not enabled on this gateway", code="retrieval_disabled")
    return service


Documents = Annotated[DocumentService, Depends(_documents)]
Rag = Annotated[RagService, Depends(_rag)]

router = APIRouter(prefix="/v1", tags=["retrieval"])


@router.post("/collections", status_code=status.HTTP_201_CREATED)
async def create_collection(body: CollectionIn, who: Ingest, docs: Documents) -> CollectionOut:
    await docs.create_collection(body.name, who.tenant)
    return CollectionOut(name=body.name)


@router.get("/collections")
async def list_collections(who: Ingest, docs: Documents) -> CollectionList:
    names = await docs.list_collections(who.tenant)
    return CollectionList(data=[CollectionOut(name=n) for n in names])


@router.delete("/collections/{collection}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_collection(collection: str, who: Admin, docs: Documents) -> None:
    await docs.delete_collection(collection, who)


@router.post("/collections/{collection}/documents")
async def ingest_documents(
    collection: str, body: IngestRequest, who: Ingest, docs: Documents
) -> IngestResult:
    return await docs.ingest(collection, who.tenant, body.documents)


@router.post("/collections/{collection}/documents/upload")
async def upload_documents(
    collection: str,
    files: list[UploadFile],
    who: Ingest,
    docs: Documents,
    doc_id: Annotated[str | None, Form(description="Only with a single file.")] = None,
    title: Annotated[str | None, Form()] = None,
    metadata: Annotated[str | None, Form(description="JSON object of metadata.")] = None,
) -> IngestResult:
    if doc_id and len(files) > 1:
        raise InvalidRequestError(
            "doc_id names one document: upload one file with it", param="doc_id"
        )
    extra = _metadata(metadata)
    documents = []
    for upload in files:
        name = upload.filename or "upload.txt"
        docs.check_upload_size(name, upload.size)  # before the file is read into memory
        document = await docs.document_from_upload(
            name, await upload.read(), doc_id=doc_id, title=title
        )
        documents.append(document.model_copy(update={"metadata": extra}))
    return await docs.ingest(collection, who.tenant, documents)


@router.get("/collections/{collection}/documents")
async def list_documents(
    collection: str,
    who: Ingest,
    docs: Documents,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    after: str | None = None,
) -> DocumentPageOut:
    return await docs.list_documents(collection, who.tenant, limit, after)


# `:path`: a document id may hold `/` (ingest names files by their relative path), sent
# as is or percent-encoded.
@router.get("/collections/{collection}/documents/{doc_id:path}")
async def get_document(
    collection: str, doc_id: str, who: Ingest, docs: Documents
) -> DocumentDetail:
    return await docs.get_document(collection, who.tenant, doc_id)


@router.delete(
    "/collections/{collection}/documents/{doc_id:path}", status_code=status.HTTP_204_NO_CONTENT
)
async def delete_document(collection: str, doc_id: str, who: Ingest, docs: Documents) -> None:
    await docs.delete_document(collection, who.tenant, doc_id)


@router.post("/retrieve")
async def retrieve(body: RetrieveRequest, who: Chat, rag: Rag) -> RetrieveResponse:
    outcome = await rag.retrieve(
        who.tenant, body.collection, body.query, top_k=body.top_k, mode=body.mode,
        filter=body.filter, min_score=body.min_score,
    )  # fmt: skip
    return RetrieveResponse(
        data=outcome.sources, top_score=outcome.top_score, threshold=outcome.threshold,
        passed_gate=outcome.passed_gate,
    )  # fmt: skip


@router.post("/embeddings")
async def create_embeddings(body: EmbeddingRequest, _: Chat, docs: Documents) -> EmbeddingResponse:
    texts = [body.input] if isinstance(body.input, str) else body.input
    return await docs.embed(body.model, texts, body.encoding_format)


def _metadata(raw: str | None) -> dict[str, str | int | float | bool]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(f"metadata is not JSON: {exc}", param="metadata") from exc
    if not isinstance(value, dict) or not all(
        isinstance(v, str | int | float | bool) for v in value.values()
    ):
        raise InvalidRequestError("metadata must be a flat JSON object", param="metadata")
    return value
