"""Keeps the engine's loaded LoRA adapters in step with what requests need.

Each adapter VERSION is loaded under its own engine name (`name@v3`), so moving an alias to a new
version never touches the weights that in-flight requests use: they finish on the old version while
new requests resolve to the new one. Loads go through vLLM's runtime API, one at a time per name
(concurrent first requests trigger one load). When more adapters are wanted than the engine holds
(`max_loras`), the least recently used adapter with no request in flight is unloaded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter, OrderedDict
from pathlib import Path

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


class LoraManager:
    def __init__(
        self,
        engine: EngineClient,
        *,
        capacity: int,
        metrics: GatewayMetrics,
        engine_resolves: bool = False,
    ) -> None:
        """
        Args:
            engine: the engine client.
            capacity: adapters the engine holds at once (its max_loras).
            metrics: where loads and unloads are counted.
            engine_resolves: the engine loads adapters by name itself (vLLM's filesystem
                resolver, for several replicas): the gateway then loads and unloads nothing.
        """
        self._engine = engine
        self._engine_resolves = engine_resolves
        self._capacity = capacity
        self._metrics = metrics
        self._loaded: OrderedDict[str, Path] = OrderedDict()  # engine name -> path, LRU first
        self._in_use: Counter[str] = Counter()
        self._locks: dict[str, asyncio.Lock] = {}
        self._room = asyncio.Lock()

    @property
    def loaded(self) -> list[str]:
        return list(self._loaded)

    async def ensure_loaded(self, engine_name: str, path: Path) -> None:
        """Make sure the engine serves `engine_name` from `path`.

        Raises:
            AdapterLoadError: the engine refused the adapter (nothing else is displaced).
            EngineUnavailableError: the engine is down.
        """
        if self._engine_resolves:
            return
        if engine_name in self._loaded:
            self._loaded.move_to_end(engine_name)
            return
        lock = self._locks.setdefault(engine_name, asyncio.Lock())
        async with lock:
            if engine_name in self._loaded:
                return
            async with self._room:
                await self._evict_if_full()
            await self._load(engine_name, path)

    def acquire(self, engine_name: str) -> None:
        """Mark a request in flight on the adapter (it will not be evicted meanwhile)."""
        self._in_use[engine_name] += 1

    def release(self, engine_name: str) -> None:
        self._in_use[engine_name] -= 1
        if self._in_use[engine_name] <= 0:
            del self._in_use[engine_name]

    def forget(self, engine_name: str) -> None:
        """The engine no longer knows the adapter (it restarted): load again on next use."""
        self._loaded.pop(engine_name, None)
        self._metrics.adapters_loaded.set(len(self._loaded))

    async def unload(self, engine_name: str) -> None:
        """Unload an adapter that is gone from the registry (no-op when it is not loaded)."""
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

    async def _evict_if_full(self) -> None:
        while len(self._loaded) >= self._capacity:
            victim = next((name for name in self._loaded if not self._in_use[name]), None)
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


def _engine_message(text: str) -> str:
    try:
        data = json.loads(text)
        return str(data.get("error", {}).get("message") or data.get("message") or text)
    except (ValueError, AttributeError):
        return text[:300]
