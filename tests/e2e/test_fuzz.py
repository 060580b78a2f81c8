"""Schema fuzzing, bounded for the test suite: a few hundred requests generated from the
gateway's own OpenAPI schema (valid and invalid, every operation, an admin key) against the real
stack: no 5xx, every 4xx in OpenAI's error shape. `python -m eval.perf.fuzz_gateway` runs the
thousands."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.launcher import EngineProcess
from eval.perf.fuzz_gateway import fuzz
from tests.support import ADMIN_KEY_JSON, TEST_API_KEY, start_gateway

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(900)
def test_generated_requests_get_no_5xx_and_openai_shaped_4xx(
    engine: EngineProcess, tmp_path: Path
) -> None:
    # Its own gateway and store: the fuzzer deletes and creates whatever its inputs name.
    gateway = start_gateway(
        engine.url, tmp_path / "gateway.log", {"RAGDOCK_API_KEYS": ADMIN_KEY_JSON}
    )
    try:
        report = fuzz(gateway.url, TEST_API_KEY, examples=8)
    finally:
        gateway.stop()
    assert report.requests >= 250
    assert len(report.statuses) >= 25  # every operation was reached
    assert not report.failures, "\n".join(report.failures[:10])
