"""The eval's view of a running gateway: the OpenAI API for answers, the admin API for adapters.

Evaluation goes through the same HTTP surface applications use, so what is measured is what is
served: the same retrieval, prompt, grounding gate and engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import httpx
from openai import AsyncOpenAI

T = TypeVar("T")
R = TypeVar("R")


class GatewayError(RuntimeError):
    """The gateway refused or failed a request the eval needs."""


class EvalGateway:
    """Async client for one gateway. Use as `async with EvalGateway(url, key) as gw:`."""

    def __init__(self, url: str, api_key: str | None, *, timeout_s: float = 300.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=f"{self.url}/v1", headers=headers, timeout=timeout_s
        )
        self.openai = AsyncOpenAI(
            base_url=f"{self.url}/v1", api_key=api_key or "none", timeout=timeout_s, max_retries=2
        )

    async def __aenter__(self) -> EvalGateway:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()
        await self.openai.close()

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call; a non-2xx answer raises GatewayError with the gateway's message."""
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise GatewayError(f"cannot reach the gateway at {self.url}: {exc}") from exc
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:300]
            raise GatewayError(f"{method} {path}: HTTP {response.status_code}: {message}")
        return response.json() if response.content else None

    async def base_model(self) -> str:
        """The served base model: the entry of /v1/models without a parent."""
        models = (await self.call("GET", "/models"))["data"]
        bases = [m["id"] for m in models if not m.get("parent")]
        if not bases:
            raise GatewayError("the gateway lists no base model")
        return str(bases[0])

    async def adapter_summary(self, name: str) -> dict[str, Any]:
        """The registry's summary of an adapter: its versions (in push order) and aliases."""
        return dict(await self.call("GET", f"/adapters/{name}"))

    async def adapter_version(
        self, name: str, selector: str, summary: dict[str, Any]
    ) -> dict[str, Any]:
        """The registry's record of NAME@SELECTOR: a version, an alias, or `latest` (the version
        pushed last), resolved against `summary`."""
        if selector == "latest" and summary["versions"]:
            selector = summary["versions"][-1]  # the registry lists versions in push order
        version = summary["aliases"].get(selector, selector)
        if version not in summary["versions"]:
            raise GatewayError(f"{name}@{selector}: no such version or alias")
        return dict(await self.call("GET", f"/adapters/{name}/{version}"))


async def bounded_map(
    items: Sequence[T],
    work: Callable[[T], Awaitable[R]],
    *,
    concurrency: int,
    on_done: Callable[[], None] | None = None,
) -> list[R]:
    """`work` over `items` with at most `concurrency` in flight; results in input order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(item: T) -> R:
        async with gate:
            result = await work(item)
        if on_done:
            on_done()
        return result

    return list(await asyncio.gather(*(one(item) for item in items)))
