"""Keeps the engine's loaded LoRA adapters in step with what requests need.

Each adapter VERSION is loaded under its own engine name (`name@v3`), so moving an alias to a new
version never touches the weights that in-flight requests use: they finish on the old version while
new requests resolve to the new one. A request holds its adapter through a lease: while any lease
on an adapter is open, no other load evicts it. How adapters get into the engine (runtime API or
the engine's own resolver) is the `AdapterLoader`'s business.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from server.adapter_loading import AdapterLoader
from server.model_catalog import ResolvedModel


@dataclass(frozen=True)
class AdapterLease:
    """A request's hold on its model's adapter (None for the base model)."""

    manager: LoraManager
    model: ResolvedModel

    async def reload(self) -> bool:
        """The engine answered 404 for the model: for an adapter, it restarted and lost what was
        loaded at runtime, so load it again.

        Returns:
            Whether asking the engine once more can help (False for the base model).

        Raises:
            AdapterLoadError: the engine refused the adapter.
            EngineUnavailableError: the engine is down.
        """
        adapter = self.model.adapter
        if adapter is None:
            return False
        self.manager.loader.forget(self.model.engine_name)
        await self.manager.ensure_loaded(self.model.engine_name, adapter.path)
        return True


class LoraManager:
    def __init__(self, loader: AdapterLoader) -> None:
        """
        Args:
            loader: how adapters get into the engine.
        """
        self.loader = loader
        self._leased: Counter[str] = Counter()  # engine name -> open leases; zero counts removed

    @property
    def loaded(self) -> list[str]:
        return self.loader.loaded

    @asynccontextmanager
    async def lease(self, model: ResolvedModel) -> AsyncIterator[AdapterLease]:
        """Hold the model's adapter for a request: it is loaded on entry and not evicted until
        the block ends (for a stream, until the stream ends).

        Raises:
            AdapterLoadError: the engine refused the adapter.
            EngineUnavailableError: the engine is down.
        """
        name = model.engine_name
        if model.adapter is not None:
            self._leased[name] += 1
        try:
            if model.adapter is not None:
                await self.ensure_loaded(name, model.adapter.path)
            yield AdapterLease(self, model)
        finally:
            if model.adapter is not None:
                self._release(name)

    def leased(self, engine_name: str) -> bool:
        """Whether a request holds the adapter now."""
        return engine_name in self._leased

    async def ensure_loaded(self, engine_name: str, path: Path) -> None:
        """Make sure the engine serves `engine_name` from `path`, evicting no leased adapter.

        Raises:
            AdapterLoadError: the engine refused the adapter (nothing else is displaced).
            EngineUnavailableError: the engine is down.
        """
        await self.loader.ensure_loaded(engine_name, path, keep=self._leased)

    async def unload(self, engine_name: str) -> None:
        """Unload an adapter that is gone from the registry (no-op when it is not loaded)."""
        await self.loader.unload(engine_name)

    def _release(self, engine_name: str) -> None:
        self._leased[engine_name] -= 1
        if self._leased[engine_name] <= 0:
            del self._leased[engine_name]
