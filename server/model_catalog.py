"""The model names the gateway serves, and the name the engine knows each one by.

Clients ask for a stable alias (`gemma`); the engine may serve the base under another name (an
external GPU vLLM serving `google/gemma-4-E4B-it`, say). The adapter registry adds its names here.
"""

from __future__ import annotations

import time

from server.engine_client import EngineClient
from server.errors import ModelNotFoundError
from server.openai_api.protocol import ModelCard


class ModelCatalog:
    def __init__(
        self,
        *,
        alias: str,
        engine_name: str | None,
        root: str,
        max_model_len: int | None,
    ) -> None:
        """
        Args:
            alias: the name clients use for the base model.
            engine_name: the engine's name for it; None to ask the engine on first use.
            root: what the base is (a model id or checkpoint path), shown in /v1/models.
            max_model_len: the engine's context length, shown in /v1/models.
        """
        self.alias = alias
        self._engine_name = engine_name
        self._root = root
        self._max_model_len = max_model_len
        self._created = int(time.time())

    def cards(self) -> list[ModelCard]:
        return [
            ModelCard(
                id=self.alias,
                created=self._created,
                root=self._root,
                max_model_len=self._max_model_len,
            )
        ]

    def card(self, name: str) -> ModelCard:
        """Raises ModelNotFoundError for a name the gateway does not serve."""
        for card in self.cards():
            if card.id == name:
                return card
        raise ModelNotFoundError(name)

    async def engine_model_for(self, name: str, engine: EngineClient) -> str:
        """The engine's name for the model a client asked for.

        Raises:
            ModelNotFoundError: the gateway does not serve `name`.
            EngineUnavailableError: the engine's base name must be discovered and it is down.
        """
        if name != self.alias:
            raise ModelNotFoundError(name)
        if self._engine_name is None:
            self._engine_name = await self._discover_base_name(engine)
        return self._engine_name

    async def _discover_base_name(self, engine: EngineClient) -> str:
        listing = await engine.get_json("/v1/models", timeout_s=5.0)
        bases = [m["id"] for m in listing.get("data", []) if not m.get("parent")]
        # An engine serving one base is the normal case; with several, the alias must be explicit.
        return bases[0] if len(bases) == 1 else self.alias
