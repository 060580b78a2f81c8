"""Rate budgets per API key and per tenant, kept in the control plane so every replica charges
the same counters: requests and tokens in fixed 60 s windows.

A request is charged in ONE transaction, before any work: an atomic increment of each of its
subjects' rows (`key:<tenant>/<name>`, `tenant:<tenant>`) for the current window, read back in
the same statement. Past a limit the transaction rolls back (a refused request costs nothing)
and the caller gets 429 with `Retry-After` (seconds to the window's end) and OpenAI's error
JSON: type `requests` or `tokens`, code `rate_limit_exceeded`, a message naming the limit.

Completions are charged their worst case up front (`completion_cost`), not their usage after:
the engine's work must be refused before it starts, and a stream's usage is known only at its
end. With every limit 0 nothing is written (`RateBudget.active`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Connection, delete
from sqlalchemy.dialects import postgresql, sqlite
from starlette.types import ASGIApp, Receive, Scope, Send

from ragdock.controlplane import ControlPlane
from ragdock.controlplane.schema import rate_windows
from ragdock.settings import Settings
from server.auth import PLATFORM, Principal
from server.errors import RateLimitError, TokenRateLimitError, error_response
from server.metrics import GatewayMetrics
from server.openai_api.guard import prompt_chars
from server.openai_api.protocol import ChatCompletionRequest, CompletionRequest

WINDOW_S = 60
# Characters per token of the prompt estimate: about what English text averages in the Gemma
# and GPT tokenizers; the gateway does not tokenize (that is the engine's work to spend).
CHARS_PER_TOKEN = 4
# The completion routes charge their requests themselves, with their tokens, in one transaction.
_CHARGED_BY_ROUTE = {"/v1/chat/completions", "/v1/completions"}


@dataclass(frozen=True)
class RateLimits:
    """The limits per minute (0: unlimited); see the settings of the same names."""

    key_requests: int = 0
    key_tokens: int = 0
    tenant_requests: int = 0
    tenant_tokens: int = 0
    platform_exempt: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits:
        return cls(
            key_requests=settings.key_requests_per_minute,
            key_tokens=settings.key_tokens_per_minute,
            tenant_requests=settings.tenant_requests_per_minute,
            tenant_tokens=settings.tenant_tokens_per_minute,
            platform_exempt=settings.quota_platform_exempt,
        )


@dataclass(frozen=True)
class _Subject:
    key: str  # the row's subject
    who: str  # in messages: "API key acme/app", "tenant acme"
    requests: int
    tokens: int
    setting: str  # KEY or TENANT


class RateBudget:
    """Charges requests and tokens to the control plane's rate windows.

    Args:
        control: the control plane every replica shares.
        limits: the limits.
        metrics: where refusals are counted (`rate_requests`, `rate_tokens`), by key.
    """

    def __init__(
        self, control: ControlPlane, limits: RateLimits, metrics: GatewayMetrics | None = None
    ) -> None:
        self._control = control
        self.limits = limits
        self._metrics = metrics
        self._swept = 0  # the last window whose predecessors this process deleted

    @property
    def active(self) -> bool:
        """Whether any limit is set (else no request is charged, nothing is written)."""
        limits = self.limits
        return bool(
            limits.key_requests or limits.key_tokens or limits.tenant_requests
            or limits.tenant_tokens
        )  # fmt: skip

    def _subjects(self, principal: Principal, tokens: int) -> list[_Subject]:
        """The rows this request is charged to: none for an exempt key, and only those with a
        limit it can pass (a request of no tokens under token limits alone writes nothing)."""
        if not self.active or (self.limits.platform_exempt and principal.can(PLATFORM)):
            return []
        limits = self.limits
        subjects = [
            _Subject(f"key:{principal.tenant}/{principal.name}",
                     f"API key {principal.tenant}/{principal.name}", limits.key_requests,
                     limits.key_tokens, "KEY"),
            _Subject(f"tenant:{principal.tenant}", f"tenant {principal.tenant}",
                     limits.tenant_requests, limits.tenant_tokens, "TENANT"),
        ]  # fmt: skip
        return [s for s in subjects if s.requests or (tokens and s.tokens)]

    def charge(self, principal: Principal, *, tokens: int = 0) -> None:
        """Charge one request of `tokens` to the caller's key and tenant (blocking).

        Raises:
            RateLimitError: a requests-per-minute limit would be passed (type `requests`).
            TokenRateLimitError: a tokens-per-minute limit would be passed (type `tokens`).
        """
        subjects = self._subjects(principal, tokens)
        if not subjects:
            return
        with self._control.write() as conn:
            now = self._control.now(conn)
            start = int(now // WINDOW_S) * WINDOW_S
            retry_after_s = max(1, math.ceil(start + WINDOW_S - now))
            for subject in subjects:
                requests, charged = _increment(conn, subject.key, start, tokens)
                if subject.requests and requests > subject.requests:
                    raise RateLimitError(  # raised inside: the transaction rolls back
                        f"Rate limit reached: requests per minute for {subject.who}: "
                        f"{subject.requests} (RAGDOCK_{subject.setting}_REQUESTS_PER_MINUTE); "
                        f"retry in {retry_after_s} s",
                        retry_after_s=retry_after_s,
                    )
                if subject.tokens and charged > subject.tokens:
                    alone = (
                        "; this request alone is over it: lower max_tokens, n or best_of"
                        if tokens > subject.tokens
                        else f"; retry in {retry_after_s} s"
                    )
                    raise TokenRateLimitError(
                        f"Rate limit reached: tokens per minute for {subject.who}: "
                        f"{subject.tokens} (RAGDOCK_{subject.setting}_TOKENS_PER_MINUTE); "
                        f"this request is charged {tokens} (README, Quotas){alone}",
                        retry_after_s=retry_after_s,
                    )
            if start > self._swept:
                # Old windows are never read again; any replica may delete them.
                conn.execute(delete(rate_windows).where(rate_windows.c.window_start < start))
                self._swept = start

    async def acharge(self, principal: Principal, *, tokens: int = 0) -> None:
        """`charge`, off the event loop; nothing at all when no limit applies."""
        if not self._subjects(principal, tokens):
            return
        try:
            await run_in_threadpool(lambda: self.charge(principal, tokens=tokens))
        except RateLimitError as exc:
            if self._metrics is not None:
                reason = "rate_tokens" if isinstance(exc, TokenRateLimitError) else "rate_requests"
                key = self._metrics.key_label(principal.name)
                self._metrics.rejections.labels(reason, key).inc()
            raise


def _increment(conn: Connection, subject: str, start: int, tokens: int) -> tuple[int, int]:
    """Add one request and `tokens` to the row, creating it; its totals after, atomically."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    insert = dialect.insert(rate_windows).values(
        subject=subject, window_start=start, requests=1, tokens=tokens
    )
    statement = insert.on_conflict_do_update(
        index_elements=["subject", "window_start"],
        set_={
            "requests": rate_windows.c.requests + insert.excluded.requests,
            "tokens": rate_windows.c.tokens + insert.excluded.tokens,
        },
    ).returning(rate_windows.c.requests, rate_windows.c.tokens)
    requests, charged = conn.execute(statement).one()
    return int(requests), int(charged)


def completion_cost(request: ChatCompletionRequest | CompletionRequest, max_model_len: int) -> int:
    """The most tokens a completion can cost, charged up front (the rule in README, Quotas).

    prompt (characters / 4; a token-id prompt by its length) + max_tokens (absent: the whole
    context, `max_model_len`, the engine's own default) times max(n, best_of) candidates; the
    prompt once more when `echo` returns it; all of it doubled with `logprobs` /
    `top_logprobs` (each token comes back with its alternatives).
    """
    prompt = _prompt_tokens(request)
    if isinstance(request, ChatCompletionRequest):
        asked = request.max_completion_tokens or request.max_tokens
        wants_logprobs = bool(request.logprobs or request.top_logprobs)
        echo = False
    else:
        asked = request.max_tokens
        wants_logprobs = request.logprobs is not None
        echo = bool(request.echo)
    completion = min(asked or max_model_len, max_model_len)
    best_of = _int_field(request, "best_of")
    candidates = max(request.n or 1, best_of or 1)
    cost = prompt + completion * candidates + (prompt if echo else 0)
    return cost * 2 if wants_logprobs else cost


def _prompt_tokens(request: ChatCompletionRequest | CompletionRequest) -> int:
    chars, _ = prompt_chars(request)
    tokens = math.ceil(chars / CHARS_PER_TOKEN)
    if isinstance(request, CompletionRequest) and isinstance(request.prompt, list):
        for item in request.prompt:  # token ids count as themselves
            if isinstance(item, int):
                tokens += 1
            elif isinstance(item, list):
                tokens += len(item)
    return tokens


def _int_field(request: object, name: str) -> int | None:
    """A pass-through field (vLLM's `best_of`) as an int, when it is one."""
    value = (getattr(request, "model_extra", None) or {}).get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class RequestBudget:
    """ASGI middleware charging one request to the caller's budgets on every `/v1/` route but
    the completions (which charge themselves, with their tokens). Runs after `AdmissionControl`:
    only admitted requests are charged.

    Args:
        app: the application it guards.
        budget: the rate budget.
    """

    def __init__(self, app: ASGIApp, *, budget: RateBudget) -> None:
        self.app = app
        self._budget = budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = (scope.get("state") or {}).get("principal")
        if (
            scope["type"] == "http"
            and scope["path"].startswith("/v1/")
            and scope["path"].rstrip("/") not in _CHARGED_BY_ROUTE
            and isinstance(principal, Principal)
        ):
            try:
                await self._budget.acharge(principal)
            except RateLimitError as exc:
                await error_response(exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)
