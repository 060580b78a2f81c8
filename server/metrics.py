"""Prometheus metrics of the gateway, per route and per model (base or adapter version).

vLLM labels its own metrics with the base model only, so anything per adapter must come from here.
Each app gets its own CollectorRegistry (built in `build_app`, never a module global), so several
apps in one process (tests) never share counters.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from server.errors import GatewayError
from server.recent_activity import RecentActivity

# Buckets sized for LLM latencies on CPU and GPU: tens of milliseconds to minutes.
_LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20)
_LOAD_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class GatewayMetrics:
    def __init__(self, *, key_labels: bool = True) -> None:
        """
        Args:
            key_labels: label per-key series with the key's name (off: '-', for a /metrics
                that people other than the operator can scrape).
        """
        self._key_labels = key_labels
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "ragdock_requests", "Requests answered, by route, model and HTTP status.",
            ["route", "model", "status"], registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "ragdock_request_duration_seconds", "Time from request to the last byte sent.",
            ["route", "model"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.ttft = Histogram(
            "ragdock_time_to_first_token_seconds", "Time from request to the first streamed chunk.",
            ["model"], buckets=_TTFT_BUCKETS, registry=r,
        )  # fmt: skip
        self.prompt_tokens = Counter(
            "ragdock_prompt_tokens", "Prompt tokens processed, by model.", ["model"], registry=r
        )
        self.completion_tokens = Counter(
            "ragdock_completion_tokens", "Tokens generated, by model.", ["model"], registry=r
        )
        self.in_flight = Gauge(
            "ragdock_requests_in_flight", "Requests being answered now.", ["route", "model"],
            registry=r,
        )  # fmt: skip
        self.rejections = Counter(
            "ragdock_rejected_requests", "Requests refused before any work: in-flight caps "
            "(429), oversized bodies (413), overlong prompts (400).", ["reason", "key"],
            registry=r,
        )  # fmt: skip
        self.adapter_loads = Counter(
            "ragdock_adapter_loads", "Adapter loads into the engine, by adapter and result.",
            ["adapter", "result"], registry=r,
        )  # fmt: skip
        self.adapter_load_seconds = Histogram(
            "ragdock_adapter_load_duration_seconds", "Time to load an adapter into the engine.",
            ["adapter"], buckets=_LOAD_BUCKETS, registry=r,
        )  # fmt: skip
        self.adapter_unloads = Counter(
            "ragdock_adapter_unloads", "Adapters unloaded from the engine (LRU eviction).",
            ["adapter"], registry=r,
        )  # fmt: skip
        self.adapters_loaded = Gauge(
            "ragdock_adapters_loaded", "Adapters resident in the engine.", registry=r
        )

        self.retrieval_latency = Histogram(
            "ragdock_retrieval_duration_seconds", "Time to search a collection (embed + query).",
            ["collection"], buckets=_LOAD_BUCKETS, registry=r,
        )  # fmt: skip
        self.retrieval_errors = Counter(
            "ragdock_retrieval_errors", "Searches that failed in the vector store.",
            ["collection"], registry=r,
        )  # fmt: skip
        self.rag_answers = Counter(
            "ragdock_rag_answers", "Grounded chat outcomes: answered or abstained, and why.",
            ["collection", "status", "reason"], registry=r,
        )  # fmt: skip
        self.retrieval_top_score = Histogram(
            "ragdock_retrieval_top_score", "Dense similarity of the best source (gate input).",
            ["collection"], buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9), registry=r,
        )  # fmt: skip
        # Where calibrated scores fall against the threshold shows drift: a new corpus whose
        # questions score lower than the validation split's abstains more than it did there.
        self.answerability_score = Histogram(
            "ragdock_rag_answerability_score",
            "Calibrated probability that the sources answer the question (calibrated models).",
            ["collection", "model"], buckets=tuple(i / 10 for i in range(1, 10)), registry=r,
        )  # fmt: skip
        self.reader_latency = Histogram(
            "ragdock_reader_duration_seconds",
            "Time the grounding reader took over one request's sources (on its own thread).",
            buckets=_LOAD_BUCKETS, registry=r,
        )  # fmt: skip
        self.reader_outcomes = Counter(
            "ragdock_reader_outcomes", "Grounded replies with a reader, by outcome and why.",
            ["collection", "mode", "outcome", "why"], registry=r,
        )  # fmt: skip
        self.reader_reloads = Counter(
            "ragdock_reader_reloads", "Readers a promotion or rollback brought in, by outcome "
            "(loaded, failed: the old reader stays).", ["outcome"], registry=r,
        )  # fmt: skip
        # Sources and sync jobs. The gauges are read from the control plane every few
        # seconds (`server.sources_api.service.SourceMetrics`), so every replica reports the
        # same values: alert on their max.
        self.source_jobs = Gauge(
            "ragdock_source_jobs", "Sync jobs by state (from the control plane).", ["state"],
            registry=r,
        )  # fmt: skip
        self.source_documents = Counter(
            "ragdock_source_documents", "Documents sync jobs of this process recorded, by outcome.",
            ["outcome"], registry=r,
        )  # fmt: skip
        self.source_sync_lag = Gauge(
            "ragdock_source_sync_lag_seconds",
            "Seconds since the source's last successful sync (since its creation if none).",
            ["tenant", "source"], registry=r,
        )  # fmt: skip
        self.source_interval = Gauge(
            "ragdock_source_interval_seconds", "A scheduled source's sync interval.",
            ["tenant", "source"], registry=r,
        )  # fmt: skip
        self.source_jobs_overdue = Gauge(
            "ragdock_source_jobs_overdue",
            "Running sync jobs past their lease: their worker died or stalls.", registry=r,
        )  # fmt: skip
        # The last minute per tenant, for /v1/status (Prometheus series carry no tenant).
        self.recent = RecentActivity()

    def grounded_outcome(self, collection: str, tenant: str, status: str, reason: str) -> None:
        """A grounded chat answered or abstained: the Prometheus counter and the tenant's last
        minute, in one place so the two never disagree."""
        self.rag_answers.labels(collection, status, reason).inc()
        self.recent.outcome(tenant, status, reason)

    def request_without_engine(
        self, route: str, label: str, status: int, tenant: str, elapsed_s: float
    ) -> None:
        """A request answered before any engine call (`label` stands for the model: `_abstained`,
        `_unknown`), which no `RequestMeter` covers."""
        self.requests.labels(route, label, str(status)).inc()
        self.recent.request(tenant, elapsed_s, status)

    def key_label(self, name: str | None) -> str:
        """The `key` label value for a key's name."""
        return name if self._key_labels and name else "-"

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class RequestMeter:
    """One completion request's metrics: in flight from creation to close, then its status and
    latency; its first streamed chunk and the tokens it used as they become known.

    A context manager: leaving it with a `GatewayError` records that error's status; any other
    way out records `status` as set (500 until the engine's answer says otherwise).
    """

    def __init__(
        self,
        metrics: GatewayMetrics,
        route: str,
        model: str,
        started: float,
        *,
        tenant: str = "default",
    ) -> None:
        """
        Args:
            metrics: the gateway's metrics.
            route: `chat` or `completions`.
            model: the engine's name for the model (base or adapter version).
            started: `time.perf_counter()` when the request arrived.
            tenant: the caller's tenant, whose recent activity the request counts in.
        """
        self.status = 500
        self._metrics = metrics
        self._route = route
        self._model = model
        self._started = started
        self._tenant = tenant
        self._first_seen = False
        metrics.in_flight.labels(route, model).inc()
        metrics.recent.started(tenant)

    def __enter__(self) -> RequestMeter:
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, GatewayError):
            self.status = exc.status_code
        self.close()

    def first_chunk(self) -> None:
        """The stream's first chunk is on its way (observed once, however many streams follow)."""
        if not self._first_seen:
            self._first_seen = True
            elapsed = time.perf_counter() - self._started
            self._metrics.ttft.labels(self._model).observe(elapsed)

    def count_usage(self, usage: dict[str, Any]) -> None:
        """Add an engine answer's `usage` to the model's token counters."""
        self._metrics.prompt_tokens.labels(self._model).inc(usage.get("prompt_tokens") or 0)
        self._metrics.completion_tokens.labels(self._model).inc(usage.get("completion_tokens") or 0)

    def close(self) -> None:
        self._metrics.requests.labels(self._route, self._model, str(self.status)).inc()
        elapsed = time.perf_counter() - self._started
        self._metrics.latency.labels(self._route, self._model).observe(elapsed)
        self._metrics.in_flight.labels(self._route, self._model).dec()
        self._metrics.recent.ended(self._tenant)
        self._metrics.recent.request(self._tenant, elapsed, self.status)
