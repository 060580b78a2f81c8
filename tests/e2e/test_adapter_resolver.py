"""Several engine replicas: each vLLM loads adapters by name itself, through its filesystem LoRA
resolver pointed at the registry's `.resolver` view; the gateway (adapter_loading=resolver) loads
nothing. One real engine started with the resolver stands in for each replica."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from engine.launcher import EngineLaunchSpec, EngineProcess
from ragdock.settings import Settings
from tests.conftest import ALPHA_REPLY, WHO
from tests.support import (
    ADMIN_KEY_JSON,
    TEST_API_KEY,
    free_port,
    gateway_metrics,
    start_gateway,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("shared-registry")
    (path / ".resolver").mkdir()
    return path


@pytest.fixture(scope="module")
def resolver_engine(
    model_dir: Path,
    ragdock_home: Path,
    registry_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[EngineProcess]:
    spec = EngineLaunchSpec.from_settings(
        Settings.load(None, served_model_name="gemma"),
        model_dir,
        log_file=tmp_path_factory.mktemp("resolver-engine") / "engine.log",
        port=free_port(),
        dtype_cache=ragdock_home,
    )
    previous = {k: os.environ.get(k) for k in ("VLLM_PLUGINS", "VLLM_LORA_RESOLVER_CACHE_DIR")}
    os.environ["VLLM_PLUGINS"] = "lora_filesystem_resolver"
    os.environ["VLLM_LORA_RESOLVER_CACHE_DIR"] = str(registry_dir / ".resolver")
    engine = EngineProcess(spec)
    try:
        engine.start()
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    try:
        engine.wait_ready(600)
        yield engine
    finally:
        engine.stop()


def test_replicas_load_adapters_by_name_from_the_registry(
    resolver_engine: EngineProcess,
    registry_dir: Path,
    trained_adapters: dict[str, Path],
    tmp_path: Path,
) -> None:
    env = {
        "RAGDOCK_API_KEYS": ADMIN_KEY_JSON,
        "RAGDOCK_ADAPTERS_DIR": str(registry_dir),
        "RAGDOCK_ADAPTER_LOADING": "resolver",
    }
    gateway = start_gateway(resolver_engine.url, tmp_path / "gw.log", env)
    try:
        admin = httpx.Client(
            base_url=gateway.api_base, headers={"Authorization": f"Bearer {TEST_API_KEY}"}
        )
        directory = trained_adapters["alpha"]
        files = [
            ("files", (p.name, p.read_bytes())) for p in sorted(directory.iterdir()) if p.is_file()
        ]
        assert (
            admin.post("/adapters/upload", files=files, data={"name": "shared"}).status_code == 201
        )
        assert (registry_dir / ".resolver" / "shared@v1" / "adapter_config.json").is_file()
        client = openai.OpenAI(base_url=gateway.api_base, api_key=TEST_API_KEY, max_retries=0)
        out = client.chat.completions.create(
            model="shared@v1", messages=[{"role": "user", "content": WHO}], max_tokens=16,
            temperature=0,
        )  # fmt: skip
        assert out.choices[0].message.content == ALPHA_REPLY
        # The engine resolved it on its own: the gateway made no runtime load call.
        metrics = gateway_metrics(gateway.url)
        assert 'ragdock_adapter_loads_total{adapter="shared@v1"' not in metrics
    finally:
        gateway.stop()
