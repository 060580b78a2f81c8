"""What the gateway costs: the same workload sent straight to vLLM and through the gateway,
interleaved, at several concurrencies, streaming and not.

    python -m eval.perf.gateway_overhead                 # starts its own engine and gateway
    python -m eval.perf.gateway_overhead --engine-url http://127.0.0.1:8100 \
        --gateway-url http://127.0.0.1:8000 --gateway-pid 1234

Every request asks for exactly `--max-tokens` tokens (greedy, `ignore_eos`), so both paths do
identical engine work. Reps alternate direct/gateway so machine noise hits both alike; the table
gives medians over reps, the throughput ratio gateway/direct, and the latency the gateway adds
(p50/p95 of end-to-end latency, p50 of time to first token). On this 2-core machine the gateway's
CPU is taken from the engine's share, so the ratio is the honest measure of its cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from eval.perf.machine import machine_line
from eval.stats import nearest_rank

console = Console(width=150)


@dataclass
class RunResult:
    tokens: int
    seconds: float
    latencies: list[float]
    ttfts: list[float] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def _body(model: str, max_tokens: int, stream: bool) -> dict[str, object]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "Tell me about the history of Paris."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": stream,
        **({"stream_options": {"include_usage": True}} if stream else {}),
    }


async def _one(
    client: httpx.AsyncClient, url: str, body: dict[str, object]
) -> tuple[int, float, float]:
    started = time.perf_counter()
    if not body["stream"]:
        reply = await client.post(url, json=body)
        reply.raise_for_status()
        elapsed = time.perf_counter() - started
        return reply.json()["usage"]["completion_tokens"], elapsed, elapsed
    ttft = 0.0
    tokens = 0
    async with client.stream("POST", url, json=body) as reply:
        reply.raise_for_status()
        async for line in reply.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if not ttft and chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                ttft = time.perf_counter() - started
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return tokens, time.perf_counter() - started, ttft


async def run_load(
    base: str, headers: dict[str, str], body: dict[str, object], concurrency: int, requests: int
) -> RunResult:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    results: list[tuple[int, float, float]] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(headers=headers, timeout=600, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                results.append(await _one(client, f"{base}/v1/chat/completions", body))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return RunResult(
        tokens=sum(r[0] for r in results),
        seconds=seconds,
        latencies=[r[1] for r in results],
        ttfts=[r[2] for r in results],
    )


def _cpu_seconds(pid: int | None) -> float:
    if pid is None:  # an external gateway whose pid was not given
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _interleaved(
    args: argparse.Namespace,
    paths: dict[str, tuple[str, dict[str, str]]],
    body: dict[str, object],
    concurrency: int,
    gateway_pid: int | None,
) -> tuple[list[RunResult], list[RunResult], float]:
    """Alternate direct/gateway reps; returns both result lists and the gateway's CPU seconds."""
    requests = max(args.min_requests, 2 * concurrency)
    for base, headers in paths.values():  # warm connections and engine caches first
        asyncio.run(run_load(base, headers, body, concurrency, concurrency))
    results: dict[str, list[RunResult]] = {"direct": [], "gateway": []}
    cpu = 0.0
    for rep in range(args.reps):
        for name in ("direct", "gateway") if rep % 2 == 0 else ("gateway", "direct"):
            base, headers = paths[name]
            before = _cpu_seconds(gateway_pid)
            results[name].append(asyncio.run(run_load(base, headers, body, concurrency, requests)))
            if name == "gateway":
                cpu += _cpu_seconds(gateway_pid) - before
    return results["direct"], results["gateway"], cpu / (args.reps * requests)


def _flat(runs: list[RunResult], attribute: str) -> list[float]:
    return [value for run in runs for value in getattr(run, attribute)]


def measure(
    args: argparse.Namespace, engine_url: str, gateway_url: str, gateway_pid: int | None
) -> None:
    key = os.environ.get("RAGDOCK_API_KEY", "")
    paths = {
        "direct": (engine_url, {}),
        "gateway": (gateway_url, {"Authorization": f"Bearer {key}"} if key else {}),
    }
    table = Table(
        title=f"gateway vs direct vLLM: {args.max_tokens} tokens/request, "
        f"medians of {args.reps} interleaved reps"
    )
    columns = ("mode", "conc", "direct tok/s", "gateway tok/s", "ratio", "+p50 ms", "+p95 ms",
               "+TTFT p50 ms", "gw CPU ms/req")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right")
    ratios = []
    for stream in (False, True):
        for concurrency in args.concurrency:
            body = _body(args.model, args.max_tokens, stream)
            direct, through, cpu = _interleaved(args, paths, body, concurrency, gateway_pid)
            ratio = statistics.median(r.tokens_per_s for r in through) / statistics.median(
                r.tokens_per_s for r in direct
            )
            ratios.append(ratio)
            d_lat, g_lat = _flat(direct, "latencies"), _flat(through, "latencies")
            ttft = nearest_rank(_flat(through, "ttfts"), 0.5) - nearest_rank(
                _flat(direct, "ttfts"), 0.5
            )
            mode = "stream" if stream else "plain"
            table.add_row(
                mode,
                str(concurrency),
                f"{statistics.median(r.tokens_per_s for r in direct):.1f}",
                f"{statistics.median(r.tokens_per_s for r in through):.1f}",
                f"{ratio:.3f}",
                f"{(nearest_rank(g_lat, 0.5) - nearest_rank(d_lat, 0.5)) * 1000:+.1f}",
                f"{(nearest_rank(g_lat, 0.95) - nearest_rank(d_lat, 0.95)) * 1000:+.1f}",
                f"{ttft * 1000:+.1f}" if stream else "-",
                f"{cpu * 1000:.1f}" if gateway_pid else "?",
            )
            console.print(f"measured {mode} x{concurrency}: ratio {ratio:.3f}")
    console.print(machine_line())
    console.print(table)
    console.print(
        f"throughput ratio gateway/direct: min {min(ratios):.3f}, "
        f"median {statistics.median(ratios):.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engine-url")
    parser.add_argument("--gateway-url")
    parser.add_argument("--gateway-pid", type=int)
    parser.add_argument("--model", default="gemma")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--min-requests", type=int, default=4)
    args = parser.parse_args()

    if args.engine_url and args.gateway_url:
        measure(args, args.engine_url.rstrip("/"), args.gateway_url.rstrip("/"), args.gateway_pid)
        return

    # Self-contained: start the real engine and a gateway subprocess, measure, stop both.
    from eval.perf.stack import running_stack

    with running_stack(console) as stack:
        measure(args, stack.engine_url, stack.gateway_url, stack.gateway_pid)


if __name__ == "__main__":
    sys.exit(main())
