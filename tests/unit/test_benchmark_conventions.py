"""What every benchmark under eval/perf/ owes its reader, checked on the source: the machine line
(CPU, flags, dtype) before its table, its helpers from the one shared module (eval/perf/bench.py),
and no import of the tests (they are not packaged)."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import time
from pathlib import Path

import httpx
import pytest

from eval.perf.bench import (
    StreamRead,
    cpu_seconds,
    group_cpu_seconds,
    has_content,
    machine_line,
    markdown_header,
    markdown_row,
    nearest_rank,
    read_stream,
)
from eval.perf.machine import ModelShape
from ragdock.quantiles import nearest_rank as product_nearest_rank
from tests.unit.fake_engine import chat_stream

EVAL = Path(__file__).resolve().parents[2] / "eval"
_TABLES = ("results_table(", "markdown_header(", "Table(")
PERF_SCRIPTS = sorted(
    p for p in (EVAL / "perf").glob("*.py")
    if p.name != "bench.py" and any(t in p.read_text() for t in _TABLES)
)  # fmt: skip


def test_there_are_benchmarks_to_check() -> None:
    assert len(PERF_SCRIPTS) >= 10


@pytest.mark.parametrize("script", PERF_SCRIPTS, ids=lambda p: p.name)
def test_each_benchmark_table_states_the_machine_first(script: Path) -> None:
    text = script.read_text()
    stated = "machine_line(" in text or "print_results(" in text
    assert stated, f"{script.name} prints no machine line"


def test_the_benchmarks_report_the_products_percentile() -> None:
    assert nearest_rank is product_nearest_rank  # the figure the gateway's status page reports


def test_markdown_tables_are_spelt_once() -> None:
    assert markdown_header("a", "b") == "| a | b |\n|---|---|"
    assert markdown_row("x", 1, 2.5) == "| x | 1 | 2.5 |"


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


def test_a_benchmark_reads_a_stream_with_the_gateways_reader() -> None:
    stream = chat_stream("gemma", ["Hello", " there"], prompt_tokens=5)

    async def read(body: bytes) -> StreamRead:
        transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
        async with (
            httpx.AsyncClient(transport=transport) as client,
            client.stream("POST", "http://engine.test/v1/chat/completions") as reply,
        ):
            return await read_stream(reply, time.perf_counter())

    whole = asyncio.run(read(stream))
    assert whole.done and whole.error is None and whole.ttft is not None
    assert whole.usage == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    assert sum(has_content(c) for c in whole.chunks) == 2
    cut = asyncio.run(read(stream[: stream.index(b"data: [DONE]")]))
    assert not cut.done and cut.usage["completion_tokens"] == 2


def test_cpu_seconds_come_from_proc_stat() -> None:
    sum(i * i for i in range(200_000))  # spend a little CPU
    mine = cpu_seconds(os.getpid())
    assert mine > 0 and group_cpu_seconds(os.getpgid(0)) >= mine
