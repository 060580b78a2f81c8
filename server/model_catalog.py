"""The model names the gateway serves, and what each means to the engine.

Clients ask for the base by a stable alias (`gemma`) and for adapters as `name` (its default alias,
e.g. `prod`), `name@alias` or `name@version`. The engine may serve the base under another name (an
external GPU vLLM serving `google/gemma-4-E4B-it`); adapters are loaded as `name@version`. The
registry is read on every resolution, so several gateway replicas sharing the registry volume see an
alias move at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path, PurePath

from fastapi.concurrency import run_in_threadpool

from adapters.errors import RegistryError
from adapters.names import ModelRef
from adapters.registry import AdapterRegistry, AdapterVersion
from grounding.answerability import Calibration
from server.engine_client import EngineClient
from server.errors import ModelNotFoundError
from server.openai_api.protocol import ModelCard

_CALIBRATIONS_KEPT = 256  # adapter versions whose calibration is kept in memory


def shown_root(root: str) -> str:
    """What /v1/models says a base is: a hub id (`google/gemma-3-270m`) as it is, a checkpoint
    path (`/srv/models/gemma-3-270m`) by its directory's name, so no caller learns the server's
    disk layout."""
    if root.startswith(("/", ".", "~")) or Path(root).expanduser().exists():
        return PurePath(root.rstrip("/")).name or root
    return root


@dataclass(frozen=True)
class ResolvedModel:
    """What a request's model name resolved to."""

    engine_name: str
    adapter: AdapterVersion | None = None


class ModelCatalog:
    def __init__(
        self,
        *,
        alias: str,
        engine_name: str | None,
        root: str,
        max_model_len: int | None,
        registry: AdapterRegistry | None = None,
        default_adapter_alias: str = "prod",
    ) -> None:
        """
        Args:
            alias: the name clients use for the base model.
            engine_name: the engine's name for it; None to ask the engine on first use.
            root: what the base is (a model id or checkpoint path); /v1/models shows a model
                id as it is and a path by its last part only.
            max_model_len: the engine's context length, shown in /v1/models.
            registry: the adapter registry, if adapters are served.
            default_adapter_alias: the alias a bare adapter name means.
        """
        self.alias = alias
        self._engine_name = engine_name
        self._root = shown_root(root)
        self._max_model_len = max_model_len
        self._registry = registry
        self._default_alias = default_adapter_alias
        self._created = int(time.time())
        self._calibrations: dict[str, Calibration | None] = {}

    async def resolve(
        self, name: str, engine: EngineClient, *, viewer: str | None = None
    ) -> ResolvedModel:
        """Resolve a request's model name.

        Args:
            name: the request's `model`.
            engine: the engine (to discover the base's name once).
            viewer: the caller's tenant: adapters of other tenants do not exist for it (None:
                a platform admin, who may use every adapter).

        Raises:
            ModelNotFoundError: neither the base nor an adapter version or alias it may use.
            EngineUnavailableError: the engine's base name must be discovered and it is down.
        """
        if name == self.alias:
            if self._engine_name is None:
                self._engine_name = await self._discover_base_name(engine)
            return ResolvedModel(self._engine_name)
        if self._registry is None:
            raise ModelNotFoundError(name)
        # The registry is a database (PostgreSQL across the network, with replicas): its reads
        # go to the thread pool, never onto the event loop.
        version = await run_in_threadpool(self._adapter_version, name, viewer)
        return ResolvedModel(version.ref, version)

    def _adapter_version(self, name: str, viewer: str | None) -> AdapterVersion:
        assert self._registry is not None
        ref = ModelRef.parse(name)
        try:
            if not self._registry.may_use(ref.name, viewer):
                raise ModelNotFoundError(name)
            return self._registry.resolve(ref.name, ref.selector or self._default_alias)
        except RegistryError:
            raise ModelNotFoundError(name) from None

    def calibration(self, model: ResolvedModel) -> Calibration | None:
        """The answerability calibration in an adapter version's manifest (None for the base and
        for uncalibrated adapters). Versions never change once pushed, so it is read once."""
        if model.adapter is None or self._registry is None:
            return None
        key = str(model.adapter.path)
        if key not in self._calibrations:
            if len(self._calibrations) >= _CALIBRATIONS_KEPT:
                self._calibrations.pop(next(iter(self._calibrations)))
            manifest = self._registry.manifest(model.adapter)
            self._calibrations[key] = Calibration.from_manifest(manifest)
        return self._calibrations[key]

    def cards(self, viewer: str | None = None) -> list[ModelCard]:
        """The base and the adapters `viewer` may use (None: all)."""
        base = ModelCard(
            id=self.alias, created=self._created, root=self._root, max_model_len=self._max_model_len
        )
        return [base, *self._adapter_cards(viewer)]

    def card(self, name: str, viewer: str | None = None) -> ModelCard:
        """Raises ModelNotFoundError for a name the gateway does not serve to `viewer`."""
        for card in self.cards(viewer):
            if card.id == name:
                return card
        raise ModelNotFoundError(name)

    def _adapter_cards(self, viewer: str | None) -> list[ModelCard]:
        if self._registry is None:
            return []
        cards = []
        for name in self._registry.names(viewer):
            for version in self._registry.versions(name):
                # Its label, never its files' path: a caller has no business with the disk.
                cards.append(self._card(version.ref, version.ref, version))
            for alias, entry in sorted(self._registry.aliases(name).items()):
                target = f"{name}@{entry['version']}"
                cards.append(self._card(f"{name}@{alias}", target, None))
                if alias == self._default_alias:
                    cards.append(self._card(name, target, None))
        return cards

    def _card(self, model_id: str, root: str, version: AdapterVersion | None) -> ModelCard:
        created = int(version.record.get("pushed_at", self._created)) if version else self._created
        return ModelCard(
            id=model_id,
            created=created,
            root=root,
            parent=self.alias,
            max_model_len=self._max_model_len,
        )

    async def _discover_base_name(self, engine: EngineClient) -> str:
        listing = await engine.get_json("/v1/models", timeout_s=5.0)
        bases = [m["id"] for m in listing.get("data", []) if not m.get("parent")]
        # An engine serving one base is the normal case; with several, the alias must be explicit.
        return bases[0] if len(bases) == 1 else self.alias
