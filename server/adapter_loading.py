"""How adapters get into the engine: two ways behind one small interface.

`RuntimeApiLoader` loads through vLLM's runtime API (one engine): each adapter version under its own
engine name, one load at a time per name (concurrent first requests trigger one load), and when more
adapters are wanted than the engine holds (`max_loras`) the least recently used one that no request
holds is unloaded. `ResolverLoader` does nothing: each engine replica loads adapters by name itself
through vLLM's filesystem resolver (several replicas behind one URL).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Container
from pathlib import Path
from typing import Protocol

from server.engine_client import EngineClient
from server.errors import GatewayError
from server.metrics import GatewayMetrics

log = logging.getLogger(__name__)

LOAD_PATH = "/v1/load_lora_adapter"
UNLOAD_PATH = "/v1/unload_lora_adapter"


class AdapterLoadError(GatewayError):
    status_code = 500
    error_type = "server_error"
    default_code = "adapter_load_failed"


class AdapterLoader(Protocol):
    """Puts adapter versions into the engine and takes them out."""

    @property
    def loaded(self) -> list[str]:
        """Engine names of the adapters this loader put in the engine, least recently used first."""
        ...

    async def ensure_loaded(self, engine_name: str, path: Path, *, keep: Container[str]) -> None:
        """Make sure the engine serves `engine_name` from `path`; to make room, never unload an
        adapter named in `keep` (those requests are using).

        Raises:
            AdapterLoadError: the engine refused the adapter (nothing else is displaced).
            EngineUnavailableError: the engine is down.
        """
        ...

    def forget(self, engine_name: str) -> None:
        """The engine no longer holds the adapter (it restarted): load it again on next use."""
        ...

    async def unload(self, engine_name: str) -> None:
        """Take out an adapter gone from the registry (no-op when it is not loaded)."""
        ...


class RuntimeApiLoader:
    """Loads and unloads through vLLM's `/v1/load_lora_adapter` and `/v1/unload_lora_adapter`."""

    def __init__(self, engine: EngineClient, *, capacity: int, metrics: GatewayMetrics) -> None:
        """
        Args:
            engine: the engine client.
            capacity: adapters the engine holds at once (its max_loras).
            metrics: where loads and unloads are counted.
        """
        self._engine = engine
        self._capacity = capacity
        self._metrics = metrics
        self._loaded: OrderedDict[str, Path] = OrderedDict()  # engine name -> path, LRU first
        self._locks: dict[str, asyncio.Lock] = {}
        self._room = asyncio.Lock()

    @property
    def loaded(self) -> list[str]:
        return list(self._loaded)

    async def ensure_loaded(self, engine_name: str, path: Path, *, keep: Container[str]) -> None:
        if engine_name in self._loaded:
            self._loaded.move_to_end(engine_name)
            return
        lock = self._locks.setdefault(engine_name, asyncio.Lock())
        async with lock:
            if engine_name in self._loaded:
                return
            async with self._room:
                await self._evict_if_full(keep)
            await self._load(engine_name, path)

    def forget(self, engine_name: str) -> None:
        self._loaded.pop(engine_name, None)
        self._metrics.adapters_loaded.set(len(self._loaded))

    async def unload(self, engine_name: str) -> None:
        if engine_name in self._loaded:
            await self._engine.post(UNLOAD_PATH, json.dumps({"lora_name": engine_name}).encode())
            self.forget(engine_name)

    async def _load(self, engine_name: str, path: Path) -> None:
        started = time.perf_counter()
        body = json.dumps({"lora_name": engine_name, "lora_path": str(path)}).encode()
        reply = await self._engine.post(LOAD_PATH, body)
        text = reply.content.decode(errors="replace")
        # A gateway restarted beside a running engine finds its adapters already there.
        if reply.status_code != 200 and "already" not in text.lower():
            self._metrics.adapter_loads.labels(engine_name, "failure").inc()
            log.error(
                "loading %s from %s failed: %s %s", engine_name, path, reply.status_code, text
            )
            raise AdapterLoadError(
                f"The engine refused adapter {engine_name}: {_engine_message(text)}", param="model"
            )
        self._loaded[engine_name] = path
        self._metrics.adapter_loads.labels(engine_name, "success").inc()
        self._metrics.adapter_load_seconds.labels(engine_name).observe(
            time.perf_counter() - started
        )
        self._metrics.adapters_loaded.set(len(self._loaded))
        log.info("loaded adapter %s in %.0f ms", engine_name, (time.perf_counter() - started) * 1e3)

    async def _evict_if_full(self, keep: Container[str]) -> None:
        while len(self._loaded) >= self._capacity:
            victim = next((name for name in self._loaded if name not in keep), None)
            if victim is None:
                # Every resident adapter is serving; vLLM can register more than max_loras and
                # schedules them in turns, so serving beats refusing here.
                log.warning("all %d loaded adapters are busy; loading one more", len(self._loaded))
                return
            await self._engine.post(UNLOAD_PATH, json.dumps({"lora_name": victim}).encode())
            self._loaded.pop(victim, None)
            self._metrics.adapter_unloads.labels(victim).inc()
            self._metrics.adapters_loaded.set(len(self._loaded))
            log.info("unloaded least recently used adapter %s", victim)


class ResolverLoader:
    """The engine loads adapters by name itself (vLLM's filesystem resolver over the registry's
    `.resolver` folder), so the gateway loads and unloads nothing."""

    @property
    def loaded(self) -> list[str]:
        return []

    async def ensure_loaded(self, engine_name: str, path: Path, *, keep: Container[str]) -> None:
        return None

    def forget(self, engine_name: str) -> None:
        return None

    async def unload(self, engine_name: str) -> None:
        return None


def _engine_message(text: str) -> str:
    try:
        data = json.loads(text)
        return str(data.get("error", {}).get("message") or data.get("message") or text)
    except (ValueError, AttributeError):
        return text[:300]
