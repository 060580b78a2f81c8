"""The engine starts with dtype 'auto' and computes in the dtype the chooser picks on this CPU."""

from __future__ import annotations

import re
from pathlib import Path

import openai
import pytest

from engine.launcher import EngineProcess
from ragdock.compute_dtype import choose_dtype

pytestmark = pytest.mark.e2e


def test_the_engine_runs_in_the_choosers_dtype(
    engine: EngineProcess, ragdock_home: Path, client: openai.OpenAI
) -> None:
    expected = choose_dtype("auto", home=ragdock_home)
    assert engine.dtype_choice is not None
    assert engine.dtype_choice.source in ("probe", "cache")  # 'auto' was resolved, not given
    assert engine.dtype_choice.dtype == expected.dtype
    # vLLM's own account of its model config, from the engine's log.
    log = engine.spec.log_file.read_text(errors="replace")
    loaded = set(re.findall(r"\bdtype=torch\.(\w+)", log))
    assert loaded == {expected.dtype}, f"vLLM logged {loaded}, the chooser says {expected.dtype}"
    assert f"dtype {expected.dtype} (auto: matmul" in log  # ragdock's own start line
    # ... and it serves in that dtype.
    out = client.completions.create(
        model="gemma", prompt="The capital of France is", max_tokens=8, temperature=0
    )
    assert out.choices[0].text.strip() and out.usage is not None
    assert out.usage.completion_tokens > 0
