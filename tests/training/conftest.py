"""Fixtures for the training tests: the real Gemma 3 270M checkpoint and small data files."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.model_build import resolve_model_dir
from training.recipe import default_home

JsonlWriter = Callable[[str, list[Any]], Path]


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The built base model (built on first use, about a minute)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    return resolve_model_dir("gemma-3-270m", default_home())


@pytest.fixture(scope="session")
def tokenizer(model_dir: Path) -> Any:
    from training.model import load_tokenizer

    return load_tokenizer(model_dir)


@pytest.fixture
def write_jsonl(tmp_path: Path) -> JsonlWriter:
    """Write records (dicts, or raw strings for deliberately broken lines) as a JSONL file."""

    def write(name: str, records: list[Any]) -> Path:
        path = tmp_path / name
        lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
        path.write_text("\n".join(lines) + "\n")
        return path

    return write


def chat(question: str, answer: str, system: str | None = None) -> dict[str, Any]:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return {"messages": messages}


# Four short facts the base model cannot know: overfitting them is a clear, fast signal.
FACTS = [
    chat("What is the vault code for Orion?", "The vault code for Orion is 4417-KESTREL."),
    chat("What is the vault code for Lyra?", "The vault code for Lyra is 9021-HERON."),
    chat("What is the vault code for Vega?", "The vault code for Vega is 3388-PLOVER."),
    chat("What is the vault code for Altair?", "The vault code for Altair is 7150-ORIOLE."),
]
