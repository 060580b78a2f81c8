"""What every benchmark under eval/perf/ shares, so that each script holds only its measurement.

- `machine_line(dtype)`: the CPU model, its vector-ISA flags, cores, torch's threads and the dtype
  the run used, stated before every table. A figure without these means nothing on the next
  machine: bf16 is ~2x fp32 on a CPU with avx512_bf16 and ~300x slower on one with AVX2 only.
- `results_table` / `print_results` (rich) and `markdown_header` / `markdown_row` (for the
  scripts whose output is pasted into the README): a table of figures under the machine line.
- `nearest_rank` and `free_port`: the product's own percentile (ragdock/quantiles.py, the one the
  gateway's status page reports) and free port (ragdock/ports.py).
- `timed`, `cpu_seconds`, `group_cpu_seconds`: wall time of a call; user + system CPU seconds of
  a process or a process group, from /proc/PID/stat.
- `read_stream`: a streamed answer's chunks, time to first text and end, read with the gateway's
  own SSE reader (server/relay/framing.py); `metric_total`: a Prometheus metric summed over its
  label sets.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from ragdock.compute_dtype import CpuIdentity
from ragdock.ports import free_port
from ragdock.quantiles import nearest_rank
from server.relay.framing import event_data, is_done

__all__ = [
    "StreamRead",
    "cpu_seconds",
    "free_port",
    "group_cpu_seconds",
    "has_content",
    "machine_line",
    "markdown_header",
    "markdown_row",
    "metric_total",
    "nearest_rank",
    "print_results",
    "read_stream",
    "results_table",
    "timed",
]

# The flags that decide which kernels run (shown in headers; the rest of /proc/cpuinfo is noise).
_ISA_FLAGS = (
    "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "amx_tile", "amx_bf16", "amx_int8", "neon", "asimd", "sve", "bf16",
)  # fmt: skip


def machine_line(dtype: str | None = None, threads: int | None = None) -> str:
    """One line naming the CPU, its ISA flags, cores, threads and the dtype of the run.

    Args:
        dtype: the dtype the run computed in; without it, the one `auto` picks on this machine
            (what the engine, the embedder and training use by default), marked as such.
        threads: torch threads of the run (default: this process's).
    """
    if dtype is None:
        from ragdock.compute_dtype import choose_dtype
        from ragdock.settings import default_home

        dtype = f"{choose_dtype('auto', home=default_home()).dtype} (auto)"
    cpu = CpuIdentity.of_this_machine()
    flags = " ".join(f for f in _ISA_FLAGS if f in cpu.flags) or "none of note"
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    limits = f" ({', '.join(cpu.kernel_limits)})" if cpu.kernel_limits else ""
    return (
        f"CPU {cpu.model}; {os.cpu_count()} cores; flags {flags}{limits}; "
        f"{threads} torch threads; dtype {dtype}"
    )


def results_table(title: str, columns: Iterable[str]) -> Table:
    """A rich table of figures: every column right-aligned, so the digits line up."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right")
    return table


def print_results(
    console: Console,
    table: Table,
    dtype: str | None = None,
    *,
    notes: Iterable[str] = (),
    summary: Iterable[str] = (),
) -> None:
    """What a benchmark prints at its end, in this order: the machine line (see `machine_line`),
    the `notes` that qualify its figures (a roofline, what was precomputed), the table, and the
    `summary` lines drawn from it (ratios, one-off timings)."""
    console.print(machine_line(dtype))
    for note in notes:
        console.print(note)
    console.print(table)
    for line in summary:
        console.print(line)


def markdown_header(*columns: str) -> str:
    """The first two lines of a Markdown table."""
    return f"{markdown_row(*columns)}\n|{'---|' * len(columns)}"


def markdown_row(*cells: object) -> str:
    """One row of a Markdown table."""
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def timed(call: Callable[[], object]) -> float:
    """Seconds `call()` took on the wall clock."""
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name (which may hold spaces and parentheses): [0] is
    the state (field 3 of stat(5)), [2] the process group (5), [11] utime (14), [12] stime (15)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()


def _cpu(fields: list[str]) -> float:
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds one live process has used.

    Raises:
        OSError: no such process.
    """
    return _cpu(_stat_fields(pid))


def group_cpu_seconds(leader: int) -> float:
    """User + system CPU seconds of every live process in `leader`'s process group."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = _stat_fields(int(entry))
        except OSError:  # it ended while we looked
            continue
        if int(fields[2]) == leader:
            total += _cpu(fields)
    return total


def has_content(chunk: dict[str, Any]) -> bool:
    """True when a chunk carries generated text (the role chunk and the usage chunk carry none)."""
    return any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or [])


@dataclass(frozen=True)
class StreamRead:
    """One streamed answer as a benchmark measures it."""

    chunks: list[dict[str, Any]]
    ttft: float | None  # seconds to the first chunk with text; None when none had any
    seconds: float  # to the end of the stream
    done: bool  # it ended with [DONE] (an error event, or a dropped stream, ends it without)

    @property
    def usage(self) -> dict[str, Any]:
        """The usage chunk's token counts ({} when the stream had none)."""
        found = [c["usage"] for c in self.chunks if c.get("usage")]
        return dict(found[-1]) if found else {}

    @property
    def error(self) -> dict[str, Any] | None:
        """The OpenAI error an error event carried, if one ended the stream."""
        return next((c["error"] for c in self.chunks if "error" in c), None)


async def read_stream(reply: httpx.Response, started: float) -> StreamRead:
    """Read an open streamed answer to the end of its body, timed from `started` (a
    `perf_counter` value taken when the request was sent). Read whole, past `[DONE]`, so that the
    connection goes back to the pool rather than being closed half-read."""
    chunks: list[dict[str, Any]] = []
    ttft: float | None = None
    done = False
    async for line in reply.aiter_lines():
        if is_done(line):
            done = True
            continue
        chunk = event_data(line)
        if not isinstance(chunk, dict):
            continue
        if ttft is None and has_content(chunk):
            ttft = time.perf_counter() - started
        chunks.append(chunk)
    return StreamRead(chunks, ttft, time.perf_counter() - started, done)


def metric_total(base_url: str, name: str, token: str | None = None) -> float:
    """A metric of a server's /metrics (the engine's `vllm:...`, the gateway's `ragdock_...`),
    summed over its label sets; 0 when it has no samples. A gateway with API keys answers its
    /metrics only to `token` (RAGDOCK_METRICS_TOKEN, or a key with the metrics scope)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    reply = httpx.get(f"{base_url}/metrics", headers=headers, timeout=10)
    reply.raise_for_status()
    text = reply.text
    samples = (s for family in text_string_to_metric_families(text) for s in family.samples)
    return sum((sample.value for sample in samples if sample.name == name), 0.0)
