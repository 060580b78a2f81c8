"""Adapter leases over a scripted engine's runtime API: a lease loads its adapter and holds it, LRU
eviction passes over every leased adapter, a failed load or a failing request still lets go, a
reload loads again, and the resolver loader never calls the engine at all."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.registry import AdapterVersion
from server.adapter_loading import (
    LOAD_PATH,
    UNLOAD_PATH,
    AdapterLoadError,
    ResolverLoader,
    RuntimeApiLoader,
)
from server.lora_manager import LoraManager
from server.metrics import GatewayMetrics
from server.model_catalog import ResolvedModel
from tests.unit.fake_engine import body_of, engine_over

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class AdapterApi:
    """The engine's runtime LoRA API, recording every call; `refuse` names adapters it rejects."""

    def __init__(self, refuse: frozenset[str] = frozenset()) -> None:
        self.calls: list[tuple[str, str]] = []
        self.refuse = refuse

    def __call__(self, request: httpx.Request) -> httpx.Response:
        name = body_of(request)["lora_name"]
        verb = {LOAD_PATH: "load", UNLOAD_PATH: "unload"}[request.url.path]
        self.calls.append((verb, name))
        if verb == "load" and name in self.refuse:
            return httpx.Response(400, json={"error": {"message": "bad adapter config"}})
        return httpx.Response(200, text="ok")

    def loads(self) -> list[str]:
        return [name for verb, name in self.calls if verb == "load"]

    def unloads(self) -> list[str]:
        return [name for verb, name in self.calls if verb == "unload"]


def _adapter(ref: str) -> ResolvedModel:
    name, version = ref.split("@")
    return ResolvedModel(ref, AdapterVersion(name, version, Path(f"/adapters/{ref}"), {}))


def _manager(api: Any, capacity: int = 2) -> LoraManager:
    engine = engine_over(api)
    return LoraManager(RuntimeApiLoader(engine, capacity=capacity, metrics=GatewayMetrics()))


async def test_a_lease_loads_its_adapter_and_holds_it_until_the_block_ends() -> None:
    api = AdapterApi()
    loras = _manager(api)
    async with loras.lease(_adapter("a@v1")) as lease:
        assert api.loads() == ["a@v1"] and loras.leased("a@v1")
        assert lease.model.engine_name == "a@v1"
    assert not loras.leased("a@v1") and loras.loaded == ["a@v1"]
    async with loras.lease(_adapter("a@v1")):
        pass
    assert api.loads() == ["a@v1"]  # loaded once


async def test_lru_eviction_never_evicts_a_leased_adapter() -> None:
    api = AdapterApi()
    loras = _manager(api, capacity=2)
    async with loras.lease(_adapter("a@v1")):  # a is the least recently used, but held
        async with loras.lease(_adapter("b@v1")):
            pass
        async with loras.lease(_adapter("c@v1")):
            assert api.unloads() == ["b@v1"]
            assert loras.loaded == ["a@v1", "c@v1"]
            # Every resident adapter is held: a fourth is loaded beside them, none evicted.
            async with loras.lease(_adapter("d@v1")):
                assert api.unloads() == ["b@v1"]
                assert set(loras.loaded) == {"a@v1", "c@v1", "d@v1"}
    async with loras.lease(_adapter("e@v1")):
        pass
    # Nothing is held now: the least recently used go first, until there is room.
    assert api.unloads() == ["b@v1", "a@v1", "c@v1"]
    assert loras.loaded == ["d@v1", "e@v1"]


async def test_a_lease_is_let_go_when_the_request_fails_or_the_load_is_refused() -> None:
    api = AdapterApi(refuse=frozenset({"bad@v1"}))
    loras = _manager(api)
    with pytest.raises(RuntimeError):
        async with loras.lease(_adapter("a@v1")):
            raise RuntimeError("the request failed")
    assert not loras.leased("a@v1")
    with pytest.raises(AdapterLoadError, match="bad adapter config"):
        async with loras.lease(_adapter("bad@v1")):
            raise AssertionError("the body must not run without its adapter")
    assert not loras.leased("bad@v1") and "bad@v1" not in loras.loaded


async def test_reload_loads_the_adapter_again_and_the_base_has_nothing_to_reload() -> None:
    api = AdapterApi()
    loras = _manager(api)
    async with loras.lease(_adapter("a@v1")) as lease:
        assert await lease.reload() is True
    assert api.loads() == ["a@v1", "a@v1"]
    async with loras.lease(ResolvedModel("gemma")) as base:
        assert await base.reload() is False
    assert api.calls == [("load", "a@v1"), ("load", "a@v1")]


async def test_concurrent_first_requests_trigger_one_load() -> None:
    api = AdapterApi()
    loras = _manager(api)

    async def one() -> None:
        async with loras.lease(_adapter("a@v1")):
            await asyncio.sleep(0)

    await asyncio.gather(*(one() for _ in range(5)))
    assert api.loads() == ["a@v1"] and not loras.leased("a@v1")


async def test_the_resolver_loader_leaves_loading_to_the_engine() -> None:
    loras = LoraManager(ResolverLoader())  # it has no engine client to call
    async with loras.lease(_adapter("a@v1")) as lease:
        assert loras.leased("a@v1")
        assert await lease.reload() is True  # the engine resolves it again on the retry
    await loras.unload("a@v1")
    assert loras.loaded == [] and not loras.leased("a@v1")
