"""`AccessControl`: the gateway's door. Every `/v1/` request, and `/metrics`, is authenticated
from its headers before one byte of its body is read, so an unauthenticated caller can neither
make the gateway buffer and parse a body nor hold an admission slot: it gets its 401 (or 403) at
once.

Without configured keys (loopback-only mode) nobody is authenticated, so the door checks instead
that a browser page cannot drive the gateway: the `Host` header must name the loopback interface
(a DNS-rebinding page reaches 127.0.0.1 under its own host name) and an `Origin` header, which
browsers send on cross-site requests, must be a loopback origin too (a plain HTML form on any
site could otherwise post an upload, a CORS-simple request that needs no preflight).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from server.auth import KeyRing
from server.errors import AuthenticationError, PermissionDeniedError, error_response

_GUARDED_PREFIX = "/v1/"
_METRICS = "/metrics"
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}


class AccessControl:
    """Pure ASGI middleware in front of everything else on `/v1/`.

    Args:
        app: the application it guards.
        keyring: the configured keys (empty: loopback-only mode, with the browser checks).
    """

    def __init__(self, app: ASGIApp, *, keyring: KeyRing) -> None:
        self.app = app
        self._keyring = keyring

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _guarded(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        if not self._keyring.enabled:
            refusal = _browser_refusal(headers)
            if refusal is not None:
                await error_response(PermissionDeniedError(refusal, code="forbidden_origin"))(
                    scope, receive, send
                )
                return
        try:
            principal = self._keyring.authenticate(headers.get("authorization"))
        except AuthenticationError as exc:
            await error_response(exc)(scope, receive, send)  # the body is never read
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


def _guarded(path: str) -> bool:
    return path.startswith(_GUARDED_PREFIX) or path.rstrip("/") == _METRICS


def _headers(scope: Scope) -> dict[str, str]:
    # Last one wins; the names are lower case in ASGI.
    return {bytes(k).decode("latin-1"): bytes(v).decode("latin-1") for k, v in scope["headers"]}


def _browser_refusal(headers: dict[str, str]) -> str | None:
    """Why a keyless request looks like a browser page driving the gateway, or None."""
    host = _hostname(headers.get("host", ""))
    if host not in _LOOPBACK_HOSTS:
        return (
            f"Host {headers.get('host')!r} is not this machine's loopback name; without API keys "
            "the gateway answers only requests addressed to localhost (set RAGDOCK_API_KEYS to "
            "serve other names)"
        )
    origin = headers.get("origin")
    if origin is not None and _hostname(urlsplit(origin).netloc) not in _LOOPBACK_HOSTS:
        return (
            f"Origin {origin!r} is another site; without API keys the gateway refuses requests "
            "from web pages that are not on localhost"
        )
    return None


def _hostname(netloc: str) -> str:
    """`host` of `host:port` (IPv6 in brackets kept whole), lower case."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        return netloc[: netloc.find("]") + 1] if "]" in netloc else netloc
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc
