"""Who is calling and what it may do: bearer API keys, tenants, scopes, in one place.

Keys are compared by SHA-256 digest in constant time, and not kept in the clear after start-up.
`server.access.AccessControl` authenticates every `/v1/` request from its headers before one
byte of its body is read and leaves the `Principal` in the request's state; every route then
states the one scope it needs with `Authorized(...)` (tests walk the app to prove each does).

Scopes, and what each implies:
- `chat`: completions, chat (with RAG, whose sources show the tenant's chunks), retrieve,
  embeddings, and listing the models the caller may use;
- `ingest`: the tenant's documents: add, replace, delete, read;
- `admin`: the tenant's collections and adapters (implies ingest and chat);
- `platform`: what every tenant shares: shared adapters, dropping a collection outright
  (implies admin and metrics);
- `metrics`: `GET /metrics` only, which names every tenant's collections, adapters and keys
  (the `metrics_token` setting is a key with this scope alone, for Prometheus).
A key configured without scopes gets `chat` only. With no keys configured at all (loopback-only
mode) the caller is anonymous with `chat`, `ingest` and `metrics`: administration needs a
configured key.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request

from ragdock.settings import ApiKey
from server.errors import AuthenticationError, PermissionDeniedError

CHAT, INGEST, ADMIN, PLATFORM, METRICS = "chat", "ingest", "admin", "platform", "metrics"
_IMPLIES: dict[str, frozenset[str]] = {
    ADMIN: frozenset({INGEST, CHAT}),
    PLATFORM: frozenset({ADMIN, INGEST, CHAT, METRICS}),
}


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name, the tenant whose data it sees, and what it may do."""

    name: str
    tenant: str
    scopes: frozenset[str]
    granted: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        implied = set(self.scopes)
        for scope in self.scopes:
            implied |= _IMPLIES.get(scope, frozenset())
        object.__setattr__(self, "granted", frozenset(implied))

    def can(self, scope: str) -> bool:
        """Whether the key holds `scope`, directly or through a broader one."""
        return scope in self.granted


ANONYMOUS = Principal(name="anonymous", tenant="default", scopes=frozenset({CHAT, INGEST, METRICS}))
# Who presents the `metrics_token`: it may read /metrics and nothing else.
METRICS_READER = Principal(name="metrics", tenant="default", scopes=frozenset({METRICS}))


def viewer_of(principal: Principal) -> str | None:
    """Whose adapters the caller may see and use: its tenant's (and shared ones); None for a
    platform admin, who sees all."""
    return None if principal.can(PLATFORM) else principal.tenant


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class KeyRing:
    """The configured keys, by digest. No API keys means authentication is off (loopback only),
    whether or not a metrics token is set.

    Args:
        keys: the API keys.
        metrics_token: the token Prometheus sends for /metrics (`METRICS_READER`), if any.
    """

    def __init__(self, keys: list[ApiKey], metrics_token: str | None = None) -> None:
        # An unnamed key is named by its position: audit logs and per-key limits need a name.
        self._entries = [
            (
                _digest(k.key.get_secret_value()),
                Principal(k.name or f"key-{i + 1}", k.tenant, k.scopes),
            )
            for i, k in enumerate(keys)
        ]
        self._enabled = bool(self._entries)
        if metrics_token:
            self._entries.append((_digest(metrics_token), METRICS_READER))

    @property
    def enabled(self) -> bool:
        return self._enabled

    def authenticate(self, authorization: str | None) -> Principal:
        """Resolve an `Authorization` header value to a principal.

        Raises:
            AuthenticationError: keys are configured and the header is missing or wrong.
        """
        if not self.enabled:
            return ANONYMOUS
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise AuthenticationError(
                "Missing API key: send 'Authorization: Bearer <key>'", code="missing_api_key"
            )
        digest = _digest(presented.strip())
        match: Principal | None = None
        for known, principal in self._entries:
            if hmac.compare_digest(known, digest):
                match = principal
        if match is None:
            raise AuthenticationError("Incorrect API key provided")
        return match


def current_principal(request: Request) -> Principal:
    """The principal `AccessControl` authenticated (or, outside it, from the header)."""
    state: Any = request.scope.get("state") or {}
    principal = state.get("principal") if isinstance(state, dict) else None
    if isinstance(principal, Principal):
        return principal
    keyring: KeyRing = request.app.state.keyring
    return keyring.authenticate(request.headers.get("authorization"))


def require_scope(principal: Principal, scope: str) -> None:
    """Raises PermissionDeniedError when the principal's key lacks `scope`."""
    if not principal.can(scope):
        raise PermissionDeniedError(
            f"This API key lacks the '{scope}' scope needed for this route", code="missing_scope"
        )


def authorized(scope: str) -> Any:
    """The dependency a route declares: the caller, who must hold `scope`."""

    def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        require_scope(principal, scope)
        return principal

    check.required_scope = scope  # type: ignore[attr-defined]  # read by the route-table test
    return check


Chat = Annotated[Principal, Depends(authorized(CHAT))]
Ingest = Annotated[Principal, Depends(authorized(INGEST))]
Admin = Annotated[Principal, Depends(authorized(ADMIN))]
Platform = Annotated[Principal, Depends(authorized(PLATFORM))]
MetricsReader = Annotated[Principal, Depends(authorized(METRICS))]
