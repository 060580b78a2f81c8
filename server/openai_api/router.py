"""Routes of the OpenAI-compatible API. No logic here: see serving.py."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from server.auth import CurrentPrincipal, current_principal
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

router = APIRouter(prefix="/v1", dependencies=[Depends(current_principal)], tags=["openai"])


@router.post("/chat/completions", response_model=None)
async def create_chat_completion(
    body: ChatCompletionRequest, principal: CurrentPrincipal, service: ServiceDep
) -> Response:
    return await service.chat(body, principal)


@router.post("/completions", response_model=None)
async def create_completion(
    body: CompletionRequest, principal: CurrentPrincipal, service: ServiceDep
) -> Response:
    return await service.complete(body, principal)


@router.get("/models")
async def list_models(catalog: CatalogDep) -> ModelList:
    return ModelList(data=catalog.cards())


@router.get("/models/{model:path}")
async def retrieve_model(model: str, catalog: CatalogDep) -> ModelCard:
    return catalog.card(model)
