"""HTTP client for the vLLM engine: pooled connections, bounded waits, errors the gateway can map.

The gateway relays the engine's bytes rather than parsing and re-serializing them: on a 2-core
machine every cycle spent per streamed chunk in the gateway is a cycle the engine does not get.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import httpx

from ragdock.redact import mask_credentials
from server.errors import EngineUnavailableError


@dataclass(frozen=True)
class EngineReply:
    status_code: int
    content: bytes
    content_type: str


class EngineClient:
    """Talks to one OpenAI-compatible engine (vLLM) by base URL."""

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
        max_connections: int,
        retry_after_s: int,
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.read_timeout_s = read_timeout_s
        self.retry_after_s = retry_after_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(
                connect=connect_timeout_s,
                read=read_timeout_s,
                write=connect_timeout_s + 10.0,
                pool=connect_timeout_s + 10.0,
            ),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def post(self, path: str, body: bytes) -> EngineReply:
        """POST a JSON body and read the whole answer.

        Raises:
            EngineUnavailableError: connection refused or dropped, or no answer in time.
        """
        try:
            response = await self._http.post(
                path, content=body, headers={"Content-Type": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from exc
        return EngineReply(
            response.status_code,
            response.content,
            response.headers.get("content-type", "application/json"),
        )

    async def open_stream(self, path: str, body: bytes) -> httpx.Response:
        """POST and return the response with its body unread; the caller must `aclose()` it.

        Raises:
            EngineUnavailableError: as for `post`, for the wait until the response headers.
        """
        request = self._http.build_request(
            "POST", path, content=body, headers={"Content-Type": "application/json"}
        )
        try:
            return await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from exc

    async def relay(self, response: httpx.Response) -> AsyncGenerator[bytes, None]:
        """The engine's body bytes as they arrive; closing the iterator closes the connection.

        Closing the engine connection is what makes vLLM abort the request, so a client that
        disconnects from the gateway stops the generation upstream too.

        Raises:
            EngineUnavailableError: the engine dropped the stream or went silent too long.
        """
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            raise self._unavailable(exc) from exc
        finally:
            await response.aclose()

    async def get_json(self, path: str, *, timeout_s: float) -> Any:
        """GET a small JSON document (health, model list).

        Raises:
            EngineUnavailableError: unreachable, not 2xx, or not JSON.
        """
        try:
            response = await self._http.get(path, timeout=timeout_s)
            response.raise_for_status()
            return response.json() if response.content else None
        except (httpx.HTTPError, ValueError) as exc:
            raise self._unavailable(exc) from exc

    async def is_healthy(self, *, timeout_s: float = 2.0) -> bool:
        try:
            await self.get_json("/health", timeout_s=timeout_s)
        except EngineUnavailableError:
            return False
        return True

    def _unavailable(self, exc: Exception) -> EngineUnavailableError:
        if isinstance(exc, httpx.TimeoutException):
            reason = f"the engine did not answer within its timeout ({type(exc).__name__})"
            code = "engine_timeout"
        elif isinstance(exc, httpx.HTTPStatusError):
            reason = f"the engine answered {exc.response.status_code}"
            code = "engine_unavailable"
        else:
            where = mask_credentials(self.base_url)
            reason = f"the engine at {where} is not reachable ({type(exc).__name__})"
            code = "engine_unavailable"
        return EngineUnavailableError(
            f"Model engine unavailable: {reason}; retry later",
            retry_after_s=self.retry_after_s,
            code=code,
        )
