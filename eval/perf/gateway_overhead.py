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
import os
import statistics
import time
from dataclasses import dataclass, field

import httpx
from rich.console import Console

from eval.perf.bench import cpu_seconds, nearest_rank, print_results, read_stream, results_table
from eval.perf.stack import running_stack, stack_arguments

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
    async with client.stream("POST", url, json=body) as reply:
        reply.raise_for_status()
        read = await read_stream(reply, started)
    return int(read.usage.get("completion_tokens", 0)), read.seconds, read.ttft or 0.0


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
    return 0.0 if pid is None else cpu_seconds(pid)  # None: an external gateway, pid not given


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
    columns = ("mode", "conc", "direct tok/s", "gateway tok/s", "ratio", "+p50 ms", "+p95 ms",
               "+TTFT p50 ms", "gw CPU ms/req")  # fmt: skip
    table = results_table(
        f"gateway vs direct vLLM: {args.max_tokens} tokens/request, "
        f"medians of {args.reps} interleaved reps",
        columns,
    )
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
    ratio_range = f"min {min(ratios):.3f}, median {statistics.median(ratios):.3f}"
    print_results(console, table, summary=[f"throughput ratio gateway/direct: {ratio_range}"])


def main() -> None:
    parser = stack_arguments(__doc__)
    parser.add_argument("--gateway-pid", type=int, help="its process, to count its CPU")
    parser.add_argument("--model", default="gemma")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--min-requests", type=int, default=4)
    args = parser.parse_args()

    with running_stack(console, engine_url=args.engine_url, gateway_url=args.gateway_url) as stack:
        pid = stack.gateway_pid or args.gateway_pid  # a gateway started here, or the one given
        measure(args, stack.engine_url, stack.gateway_url, pid)


if __name__ == "__main__":
    main()
