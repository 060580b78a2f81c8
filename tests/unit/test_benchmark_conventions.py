"""What every benchmark under eval/perf/ owes its reader, checked on the source: the machine line
(CPU, flags, dtype) before its table, and no import of the tests (they are not packaged)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from eval.perf.machine import ModelShape, machine_line

EVAL = Path(__file__).resolve().parents[2] / "eval"
PERF_SCRIPTS = sorted(
    p for p in (EVAL / "perf").glob("*.py") if "Table(" in p.read_text() or '"| ' in p.read_text()
)


def test_there_are_benchmarks_to_check() -> None:
    assert len(PERF_SCRIPTS) >= 10


@pytest.mark.parametrize("script", PERF_SCRIPTS, ids=lambda p: p.name)
def test_each_benchmark_table_states_the_machine_first(script: Path) -> None:
    assert "machine_line(" in script.read_text(), f"{script.name} prints no machine line"


def test_nothing_under_eval_imports_the_tests() -> None:
    offenders = []
    for path in EVAL.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path}: {n}" for n in names if n == "tests" or n.startswith("tests.")]
    assert offenders == []


def test_the_machine_line_names_cpu_flags_threads_and_dtype() -> None:
    line = machine_line("bfloat16", threads=2)
    assert line.startswith("CPU ") and "flags " in line
    assert "2 torch threads" in line and line.endswith("dtype bfloat16")


def test_the_roofline_counts_the_linear_parameters_of_gemma_3_270m(tmp_path: Path) -> None:
    config = {
        "text_config": {
            "hidden_size": 640, "intermediate_size": 2048, "num_attention_heads": 4,
            "num_key_value_heads": 1, "head_dim": 256, "num_hidden_layers": 18,
        }
    }  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    shape = ModelShape.from_config(tmp_path)
    # q 640x1024, k and v 640x256, o 1024x640, gate and up 640x2048, down 2048x640; 18 layers
    assert shape.params == 18 * (2 * 640 * 1024 + 2 * 640 * 256 + 3 * 640 * 2048)
