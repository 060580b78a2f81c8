"""The suite's own rules (tests/conftest.py): the memory a session with engines demands, which
files a fast run leaves unimported, and the session's home of its own."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import (
    ENGINE_TIER_GIB,
    mem_available_gib,
    memory_shortfall,
    model_cache_home,
    wholly_full_tier,
)

ROOT = Path(__file__).resolve().parents[2]
MEMINFO = "MemTotal:       24683584 kB\nMemFree:         1000000 kB\nMemAvailable:   8388608 kB\n"


def test_mem_available_is_read_in_gib() -> None:
    assert mem_available_gib(MEMINFO) == 8.0
    assert mem_available_gib("MemTotal: 1 kB\n") is None


def test_too_little_memory_names_the_need_and_the_fix() -> None:
    reason = memory_shortfall(8.0, ENGINE_TIER_GIB)
    assert reason is not None
    assert f"needs ~{ENGINE_TIER_GIB} GiB free" in reason and "8.0 GiB available" in reason
    assert "stop `ragdock up`" in reason and "scripts/test-fast.sh" in reason
    assert memory_shortfall(ENGINE_TIER_GIB + 0.5, ENGINE_TIER_GIB) is None
    assert memory_shortfall(None, ENGINE_TIER_GIB) is None  # cannot tell: not refused


@pytest.mark.parametrize(
    ("path", "skipped"),
    [
        ("tests/e2e", True),
        ("tests/e2e/test_rag.py", True),
        ("tests/console/test_console.py", True),
        ("tests/unit/test_cpu_lora.py", True),
        ("tests/retrieval/test_store_contract.py", True),
        ("tests/unit/test_relay.py", False),
        ("tests/unit", False),
        ("tests/eval/test_retrieval_beir.py", False),  # one of its tests is fast
        ("tests/e2e_like.py", False),
    ],
)
def test_a_fast_run_leaves_out_only_files_of_the_full_tier(path: str, skipped: bool) -> None:
    assert wholly_full_tier(ROOT / path, ROOT) is skipped


def test_the_session_has_a_home_of_its_own_with_the_shared_models(ragdock_home: Path) -> None:
    assert Path(os.environ["RAGDOCK_HOME"]) == ragdock_home
    assert ragdock_home.name.startswith("ragdock-test-home-")
    assert ragdock_home != model_cache_home()
    models = ragdock_home / "models"
    assert models.is_symlink() and models.resolve() == (model_cache_home() / "models").resolve()
    for name in ("RAGDOCK_DATA_DIR", "RAGDOCK_ADAPTERS_DIR", "RAGDOCK_DATABASE_URL"):
        assert name not in os.environ
