"""Bearer API keys: compared by SHA-256 digest in constant time, mapped to a principal.

Keys are not kept in the clear after start-up, only their digests. A presented key is compared
with every configured digest (no early exit), so timing reveals neither which key matched nor how
much of it.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from ragdock.settings import ALL_SCOPES, ApiKey
from server.errors import AuthenticationError, PermissionDeniedError


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's name, the tenant whose data it sees, and what it may do."""

    name: str
    tenant: str
    scopes: frozenset[str]


ANONYMOUS = Principal(name="anonymous", tenant="default", scopes=ALL_SCOPES)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class KeyRing:
    """The configured keys, by digest. Empty means authentication is off (loopback only)."""

    def __init__(self, keys: list[ApiKey]) -> None:
        # An unnamed key is named by its position: audit logs and per-key limits need a name.
        self._entries = [
            (
                _digest(k.key.get_secret_value()),
                Principal(k.name or f"key-{i + 1}", k.tenant, k.scopes),
            )
            for i, k in enumerate(keys)
        ]

    @property
    def enabled(self) -> bool:
        return bool(self._entries)

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
    keyring: KeyRing = request.app.state.keyring
    return keyring.authenticate(request.headers.get("authorization"))


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_scope(principal: Principal, scope: str) -> None:
    """Raises PermissionDeniedError when the principal's key lacks `scope`."""
    if scope not in principal.scopes:
        raise PermissionDeniedError(
            f"This API key lacks the '{scope}' scope needed for this route", code="missing_scope"
        )
