"""Builds the gateway application from explicit settings: nothing is created at import time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from adapters.registry import AdapterRegistry
from adapters.validation import AdapterLimits
from ragdock.controlplane import ControlPlane, open_control_plane
from ragdock.settings import Settings
from retrieval.quotas import StorageQuota
from retrieval.service import Retriever
from retrieval.sources.confine import Confinement
from retrieval.sources.sync import SyncSettings
from retrieval.sources.worker import Worker
from server import health, status_api
from server.access import AccessControl
from server.adapter_loading import AdapterLoader, ResolverLoader, RuntimeApiLoader
from server.adapters_api import router as adapters_router
from server.adapters_api.judge import platform_judge
from server.adapters_api.service import AdapterService
from server.admission import AdmissionControl, AdmissionLimits
from server.auth import KeyRing
from server.base_model import engine_model_argument, served_base_identity, served_module_shapes
from server.console import mount_console
from server.documents_api import router as documents_router
from server.documents_api.service import DocumentService
from server.engine_client import EngineClient
from server.errors import install_error_handlers
from server.lora_manager import LoraManager
from server.metrics import GatewayMetrics
from server.model_catalog import ModelCatalog
from server.openai_api import router as openai_router
from server.openai_api.serving import CompletionService
from server.quotas import RateBudget, RateLimits, RequestBudget
from server.rag.judge import AnswerJudge
from server.rag.reader_watch import ReaderWatcher
from server.rag.reading import SourceReader, load_reader_model, reader_directory
from server.rag.service import RagService
from server.rag.step import GroundingStep
from server.reader_setup import open_reader_registry
from server.readers_api import router as readers_router
from server.sources_api import router as sources_router
from server.sources_api.service import SourceMetrics, SourceService

log = logging.getLogger(__name__)


def build_engine_client(settings: Settings) -> EngineClient:
    api_key = settings.engine_api_key.get_secret_value() if settings.engine_api_key else None
    return EngineClient(
        settings.engine_base_url(),
        connect_timeout_s=settings.engine_connect_timeout_s,
        read_timeout_s=settings.engine_read_timeout_s,
        max_connections=settings.engine_max_connections,
        retry_after_s=settings.retry_after_s,
        api_key=api_key,
    )


def adapter_loader(
    settings: Settings, engine: EngineClient, metrics: GatewayMetrics
) -> AdapterLoader:
    """The gateway loads adapters through the engine's runtime API, or (several engine
    replicas) each engine resolves them from the registry's folder itself."""
    if settings.adapter_loading == "resolver":
        return ResolverLoader()
    return RuntimeApiLoader(engine, capacity=settings.engine_max_loras, metrics=metrics)


def open_control(settings: Settings) -> ControlPlane:
    """The control plane every replica shares (PostgreSQL), or the embedded SQLite file."""
    url = settings.database_url.get_secret_value() if settings.database_url else None
    return open_control_plane(url, settings.store_dir)


def open_retrieval(settings: Settings, control: ControlPlane) -> Retriever | None:
    """The retriever over the embedded Qdrant engine (or a Qdrant server), or None when the
    retrieval extra is not installed (a gateway that only proxies the engine)."""
    try:
        from retrieval.dense import MiniLMEmbedder
        from retrieval.factory import open_retriever
    except ImportError as exc:
        log.warning("retrieval disabled: %s (install ragdock[retrieval])", exc)
        return None
    api_key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
    return open_retriever(
        settings.store_dir,
        control=control,
        grace_s=settings.freshness_grace_s,
        lease_s=settings.ingest_lease_s,
        qdrant_url=settings.qdrant_url,
        qdrant_api_key=api_key,
        qdrant_timeout_s=settings.qdrant_timeout_s,
        names_per_tenant=True,  # a collection a tenant may not see is no name to it
        quota=StorageQuota(
            max_collections=settings.max_collections,
            tenant_max_collections=settings.tenant_max_collections,
            tenant_max_documents=settings.tenant_max_documents,
            tenant_max_bytes=settings.tenant_max_bytes,
        ),
        embedder=MiniLMEmbedder(dtype=settings.embedder_dtype, dtype_cache=settings.home),
    )


def build_app(settings: Settings, *, engine: EngineClient | None = None) -> FastAPI:
    """Create the gateway.

    Args:
        settings: the process's settings.
        engine: the engine client to use; built from settings when omitted.

    Returns:
        The FastAPI application; its lifespan closes the engine client.
    """
    engine_client = engine or build_engine_client(settings)
    # For an engine ragdock starts, the base is served under the alias itself; an external
    # engine's name is discovered on first use unless configured.
    engine_name = settings.engine_model or (
        None if settings.engine_url else settings.served_model_name
    )
    control = open_control(settings)
    registry = AdapterRegistry(
        settings.registry_dir,
        AdapterLimits(
            max_rank=settings.engine_max_lora_rank, module_shapes=served_module_shapes(settings)
        ),
        served_base_identity(settings),
        control=control,
        engine_base_name=engine_model_argument(settings),
        judge=platform_judge(settings),
    )
    catalog = ModelCatalog(
        alias=settings.served_model_name,
        engine_name=engine_name,
        root=settings.model,
        max_model_len=settings.engine_max_model_len,
        registry=registry,
        default_adapter_alias=settings.adapters_default_alias,
    )
    metrics = GatewayMetrics(key_labels=settings.metrics_key_labels)
    loras = LoraManager(adapter_loader(settings, engine_client, metrics))

    retriever = open_retrieval(settings, control)
    rag = (
        RagService(
            retriever,
            default_top_k=settings.rag_top_k,
            default_min_score=settings.rag_min_score,
            collection_min_scores=settings.rag_collection_min_scores,
            collection_min_answerability=settings.rag_collection_min_answerability,
            default_min_support=settings.rag_min_support,
            collection_min_support=settings.rag_collection_min_support,
            model_defaults=settings.rag_models,
            metrics=metrics,
            retry_after_s=settings.retry_after_s,
            reader_min_score=settings.reader_min_score,
            default_answer_mode=settings.rag_answer_mode,
            collection_answer_modes=settings.rag_collection_answer_modes,
        )
        if retriever
        else None
    )
    readers = open_reader_registry(settings, control)
    reader_dir = reader_directory(settings.reader, readers) if retriever else None
    # Loaded here, not on the first request: seconds of work, and a wrong reader fails at start.
    reader = (
        SourceReader.load(reader_dir, metrics, threads=settings.reader_threads)
        if reader_dir
        else None
    )
    watcher = (
        ReaderWatcher(
            settings.reader,
            readers,
            reader,
            partial(load_reader_model, threads=settings.reader_threads),
            metrics,
        )
        if reader is not None and settings.reader_reload_s > 0
        else None
    )

    sources = source_service(settings, retriever)
    worker = sync_worker(settings, retriever, control, metrics) if settings.worker else None
    if worker is not None and sources is not None:
        sources.on_enqueue = worker.wake

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if retriever is not None:
            # Load the embedder now, not on the first user's request.
            await run_in_threadpool(retriever.embedder.embed_query, "warm up")
        if worker is not None:
            worker.start_thread()
        gauges = (
            asyncio.create_task(SourceMetrics(sources, metrics).run_forever())
            if sources is not None
            else None
        )
        if not settings.auth_enabled:
            log.warning(
                "NO API KEYS CONFIGURED: every request is accepted, so the gateway listens on "
                "127.0.0.1 only. Set RAGDOCK_API_KEYS to serve other hosts."
            )
        collector = asyncio.create_task(_collect_forever(retriever, settings.freshness_grace_s))
        reloads = (
            asyncio.create_task(watcher.run_forever(settings.reader_reload_s))
            if watcher is not None
            else None
        )
        try:
            yield
        finally:
            collector.cancel()
            if reloads is not None:
                reloads.cancel()
            if gauges is not None:
                gauges.cancel()
            if worker is not None:
                # The current batch ends and commits; the job is resumed by the next worker.
                worker.stop()
                await run_in_threadpool(worker.join, 30.0)
            await engine_client.aclose()
            if reader is not None:
                reader.close()
            if retriever is not None:
                retriever.close()
            control.close()

    app = FastAPI(
        title="ragdock gateway",
        version="0.1.0",
        summary="OpenAI-compatible gateway over vLLM with retrieval and LoRA adapters",
        lifespan=lifespan,
        docs_url="/docs" if settings.api_docs else None,
        redoc_url="/redoc" if settings.api_docs else None,
        openapi_url="/openapi.json" if settings.api_docs else None,
    )
    app.state.settings = settings
    app.state.engine = engine_client
    app.state.catalog = catalog
    token = settings.metrics_token
    app.state.keyring = KeyRing(settings.api_keys, token.get_secret_value() if token else None)
    app.state.metrics = metrics
    app.state.loras = loras
    judge = AnswerJudge(engine_client, catalog, metrics, settings.abstention_message)
    budget = RateBudget(control, RateLimits.from_settings(settings), metrics)
    app.state.completion_service = CompletionService(
        engine_client,
        catalog,
        loras,
        metrics,
        GroundingStep(rag, judge, metrics, reader),
        max_prompt_chars=settings.max_prompt_chars,
        budget=budget,
        max_model_len=settings.engine_max_model_len,
    )
    app.state.rag_service = rag
    app.state.reader = reader
    app.state.reader_registry = readers
    app.state.document_service = (
        DocumentService(
            retriever,
            max_document_bytes=settings.max_document_bytes,
            retry_after_s=settings.retry_after_s,
        )
        if retriever
        else None
    )
    app.state.source_service = sources
    app.state.adapter_service = AdapterService(registry, loras, settings.adapter_max_upload_bytes)

    # Added last, runs first: the door (who is calling, before any body byte), then admission
    # (slots and body limits, for authenticated callers only), then the rate budgets (admitted
    # requests only; completions charge theirs with their tokens in the route).
    app.add_middleware(RequestBudget, budget=budget)
    app.add_middleware(
        AdmissionControl, limits=AdmissionLimits.from_settings(settings), metrics=metrics
    )
    app.add_middleware(AccessControl, keyring=app.state.keyring)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(status_api.router)
    app.include_router(openai_router.router)
    app.include_router(adapters_router.router)
    app.include_router(readers_router.router)
    app.include_router(documents_router.router)
    app.include_router(sources_router.router)
    if settings.console:
        mount_console(app)
    return app


def source_service(settings: Settings, retriever: Retriever | None) -> SourceService | None:
    if retriever is None:
        return None
    return SourceService(
        retriever,
        Confinement.from_env(settings.source_roots, settings.source_secrets_dir),
        lease_s=settings.job_lease_s,
        per_tenant=settings.jobs_per_tenant,
    )


def sync_worker(
    settings: Settings, retriever: Retriever | None, control: ControlPlane, metrics: GatewayMetrics
) -> Worker | None:
    """The sync-job worker this process runs (the gateway's, or `ragdock worker`'s)."""
    if retriever is None:
        return None
    return Worker(
        retriever,
        control,
        SyncSettings(
            confinement=Confinement.from_env(settings.source_roots, settings.source_secrets_dir),
            max_document_bytes=settings.max_document_bytes,
            batch_size=settings.source_batch_size,
        ),
        lease_s=settings.job_lease_s,
        per_tenant=settings.jobs_per_tenant,
        observe=lambda outcome, count: metrics.source_documents.labels(outcome).inc(count),
    )


async def _collect_forever(retriever: Retriever | None, grace_s: float) -> None:
    """Delete retired document versions once their grace has passed (any replica may; the
    deletes are idempotent), so old points do not wait for the next write to be collected."""
    if retriever is None:
        return
    while True:
        await asyncio.sleep(max(grace_s / 2, 1.0))
        try:
            await run_in_threadpool(retriever.collect_all)
        except Exception:  # a store or database hiccup: the next pass retries
            log.exception("collecting retired document versions failed; retrying later")
