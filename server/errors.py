"""Typed gateway errors and the one mapping from any exception to OpenAI's error JSON.

Every error a client sees has the shape `{"error": {"message", "type", "param", "code"}}` that the
openai SDK turns into its exception classes (BadRequestError, AuthenticationError, ...).
Handlers are registered once, in `build_app`, through `install_error_handlers`.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters.errors import RegistryError
from server.relay.framing import sse_event

log = logging.getLogger(__name__)


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""

    status_code = 500
    error_type = "server_error"
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code
        self.headers = headers or {}


class InvalidRequestError(GatewayError):
    status_code = 400
    error_type = "invalid_request_error"


class AuthenticationError(GatewayError):
    status_code = 401
    error_type = "invalid_request_error"
    default_code = "invalid_api_key"


class PermissionDeniedError(GatewayError):
    status_code = 403
    error_type = "permission_error"


class NotFoundError(GatewayError):
    status_code = 404
    error_type = "invalid_request_error"


class ModelNotFoundError(NotFoundError):
    default_code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model '{model}' does not exist; GET /v1/models lists the served models",
            param="model",
        )


class EngineUnavailableError(GatewayError):
    """The engine refused the connection, dropped it, or did not answer in time."""

    status_code = 503
    error_type = "server_error"
    default_code = "engine_unavailable"

    def __init__(self, message: str, *, retry_after_s: int, code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"Retry-After": str(retry_after_s)})


class PayloadTooLargeError(GatewayError):
    """A request body (or one document in it) is over its configured size limit."""

    status_code = 413
    error_type = "invalid_request_error"
    default_code = "payload_too_large"


class UnprocessableError(GatewayError):
    """Well-formed input that cannot be processed within its limits (e.g. a PDF that keeps
    extraction busy past its deadline)."""

    status_code = 422
    default_code = "unprocessable_entity"


class RateLimitError(GatewayError):
    """Too many requests in flight, for the caller's key or for the gateway as a whole.

    OpenAI answers rate limits with 429, type `requests` and code `rate_limit_exceeded`; the
    openai SDK raises `RateLimitError` and (by default) retries after `Retry-After`.
    """

    status_code = 429
    error_type = "requests"
    default_code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


def error_body(
    message: str, error_type: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_response(exc: GatewayError) -> JSONResponse:
    body = error_body(exc.message, exc.error_type, param=exc.param, code=exc.code)
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def sse_error_event(exc: GatewayError) -> bytes:
    """An error as one SSE event: the openai SDK raises APIError when a chunk carries `error`."""
    return sse_event(error_body(exc.message, exc.error_type, param=exc.param, code=exc.code))


def _describe_validation(exc: RequestValidationError) -> tuple[str, str | None]:
    problems = []
    first_param: str | None = None
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            detail = (err.get("ctx") or {}).get("error", "")
            return f"The request body is not valid JSON ({detail})", None
        # FastAPI prefixes locations with "body"; clients know the field path only.
        loc = [str(part) for part in err.get("loc", ()) if part != "body"]
        param = ".".join(loc) or None
        first_param = first_param or param
        problems.append(f"{param}: {err.get('msg')}" if param else str(err.get("msg")))
    return "Invalid request: " + "; ".join(problems), first_param


async def _handle_gateway_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GatewayError)
    return error_response(exc)


async def _handle_registry_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RegistryError)
    error_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
    body = error_body(exc.message, error_type, param=exc.param, code=exc.code)
    return JSONResponse(body, status_code=exc.status_code)


async def _handle_validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    message, param = _describe_validation(exc)
    return error_response(InvalidRequestError(message, param=param))


async def _handle_http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    error_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
    body = error_body(str(exc.detail), error_type)
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    # The traceback goes to the log, never to the client.
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    body = error_body("The server had an internal error; see the gateway log", "server_error")
    return JSONResponse(body, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(GatewayError, _handle_gateway_error)
    app.add_exception_handler(RegistryError, _handle_registry_error)
    app.add_exception_handler(RequestValidationError, _handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, _handle_http_error)
    app.add_exception_handler(Exception, _handle_unexpected)


class ConflictError(GatewayError):
    """The request conflicts with the resource's state (a sync while one is running)."""

    status_code = 409
    error_type = "invalid_request_error"


class TokenRateLimitError(RateLimitError):
    """A key's or tenant's tokens-per-minute budget is spent (OpenAI's type `tokens`)."""

    error_type = "tokens"


class InsufficientQuotaError(GatewayError):
    """A storage quota (collections, documents, stored bytes) would be exceeded: OpenAI's 429
    `insufficient_quota`, which the openai SDK raises as `RateLimitError`. No `Retry-After`:
    waiting frees nothing; dropping collections or documents does."""

    status_code = 429
    error_type = "insufficient_quota"
    default_code = "insufficient_quota"
