"""Routes of the OpenAI-compatible API. No logic here: see serving.py."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from server.auth import Chat, viewer_of
from server.model_catalog import ModelCatalog
from server.openai_api.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    ModelCard,
    ModelList,
)
from server.openai_api.serving import CompletionService


def _completion_service(request: Request) -> CompletionService:
    service: CompletionService = request.app.state.completion_service
    return service


def _catalog(request: Request) -> ModelCatalog:
    catalog: ModelCatalog = request.app.state.catalog
    return catalog


ServiceDep = Annotated[CompletionService, Depends(_completion_service)]
CatalogDep = Annotated[ModelCatalog, Depends(_catalog)]

router = APIRouter(prefix="/v1", tags=["openai"])


@router.post("/chat/completions", response_model=None)
async def create_chat_completion(
    body: ChatCompletionRequest, principal: Chat, service: ServiceDep
) -> Response:
    return await service.chat(body, principal)


@router.post("/completions", response_model=None)
async def create_completion(
    body: CompletionRequest, principal: Chat, service: ServiceDep
) -> Response:
    return await service.complete(body, principal)


# Plain functions: FastAPI runs them in the thread pool, off the event loop (registry reads).
@router.get("/models")
def list_models(who: Chat, catalog: CatalogDep) -> ModelList:
    return ModelList(data=catalog.cards(viewer_of(who)))


@router.get("/models/{model:path}")
def retrieve_model(model: str, who: Chat, catalog: CatalogDep) -> ModelCard:
    return catalog.card(model, viewer_of(who))
