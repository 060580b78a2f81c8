"""Load test of the real stack on loopback: concurrent streaming chat clients for a fixed time,
reporting requests served, errors by kind, latency and time to first token (p50/p95).

    python -m eval.perf.load_test                          # starts its own engine and gateway
    python -m eval.perf.load_test --clients 24 --duration 60 --per-key-cap 8
    python -m eval.perf.load_test --fault engine-restart   # kill -9 the engine mid-run, restart it
    python -m eval.perf.load_test --gateway-url http://127.0.0.1:8000 --api-key KEY

Clients are spread over `--keys` API keys. The gateway it starts caps requests in flight per key
at `--per-key-cap`: with more clients per key than that, some requests are refused with 429
on purpose, and those clients wait `Retry-After` as the openai SDK would. Anything else that is
not a complete answer counts as an error, by kind. Every request has a timeout, so a hung
connection shows up as `timeout`, never as a run that does not end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from eval.perf.bench import (
    free_port,
    has_content,
    metric_total,
    nearest_rank,
    print_results,
    read_stream,
    results_table,
)

console = Console(width=150)
FAULT_OUTCOMES = {"503 engine_unavailable", "stream error engine_unavailable"}
QUESTION = "Write a short note about the history of the printing press."
# The gateway started here answers its /metrics to this token only (its keys are chat keys).
METRICS_TOKEN = "load-test-metrics-0123456789abcdef"


@dataclass
class LoadResult:
    """Outcomes of one run."""

    outcomes: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0
    events: list[str] = field(default_factory=list)
    finished_at: list[float] = field(default_factory=list)  # monotonic time of each answer

    @property
    def served(self) -> int:
        return self.outcomes["ok"]

    @property
    def errors(self) -> dict[str, int]:
        return {k: n for k, n in self.outcomes.items() if k not in ("ok", "429")}


async def _one(http: httpx.AsyncClient, key: str, max_tokens: int, result: LoadResult) -> float:
    """One streamed chat request; returns how long to wait before the next (Retry-After)."""
    body = {
        "model": "gemma",
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": max_tokens,
        "temperature": 0.7,
        "stream": True,
        "ignore_eos": True,
    }
    started = time.perf_counter()
    try:
        async with http.stream(
            "POST", "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        ) as response:
            if response.status_code == 429:
                await response.aread()
                result.outcomes["429"] += 1
                return float(response.headers.get("Retry-After", "1"))
            if response.status_code != 200:
                error = json.loads(await response.aread()).get("error") or {}
                result.outcomes[f"{response.status_code} {error.get('code')}"] += 1
                return float(response.headers.get("Retry-After", "0"))
            read = await read_stream(response, started)
    except httpx.TimeoutException:
        result.outcomes["timeout"] += 1
        return 0.0
    except httpx.HTTPError as exc:
        result.outcomes[type(exc).__name__] += 1
        return 1.0
    if read.error is not None:
        result.outcomes[f"stream error {read.error.get('code')}"] += 1
        return 1.0
    if not read.done:
        result.outcomes["stream ended without [DONE]"] += 1
        return 0.0
    result.outcomes["ok"] += 1
    result.finished_at.append(time.monotonic())
    result.latencies.append(read.seconds)
    if read.ttft is not None:
        result.ttfts.append(read.ttft)
    result.tokens += sum(1 for chunk in read.chunks if has_content(chunk))
    return 0.0


async def run_load(
    gateway_url: str,
    keys: list[str],
    *,
    clients: int,
    duration_s: float,
    max_tokens: int,
    timeout_s: float = 120.0,
) -> LoadResult:
    """`clients` concurrent streaming clients, round-robin over `keys`, for `duration_s`.

    Clients start no new request after `duration_s`; the ones in flight finish (each bounded by
    `timeout_s`).

    Returns:
        Outcomes by kind, latencies and TTFTs of the complete answers.
    """
    result = LoadResult()
    deadline = time.monotonic() + duration_s
    limits = httpx.Limits(max_connections=clients * 2, max_keepalive_connections=clients * 2)
    timeout = httpx.Timeout(timeout_s, connect=5.0)
    async with httpx.AsyncClient(base_url=gateway_url, timeout=timeout, limits=limits) as http:

        async def client(i: int) -> None:
            key = keys[i % len(keys)]
            while time.monotonic() < deadline:
                wait = await _one(http, key, max_tokens, result)
                if wait:
                    await asyncio.sleep(min(wait, max(0.0, deadline - time.monotonic())))

        started = time.monotonic()
        await asyncio.gather(*(client(i) for i in range(clients)))
        result.seconds = time.monotonic() - started
    return result


def _ms(values: list[float], q: float) -> str:
    """The q-quantile of `values` (seconds) in milliseconds; "-" when there are none."""
    return f"{nearest_rank(values, q) * 1000:.0f}" if values else "-"


def print_result(result: LoadResult, clients: int, keys: int, cap: int | None) -> None:
    title = f"load test: {clients} streaming clients over {keys} keys for {result.seconds:.0f} s"
    if cap:
        title += f", gateway cap {cap} in flight per key"
    columns = ("served", "req/s", "tokens/s", "429 (deliberate)", "errors",
               "p50 ms", "p95 ms", "TTFT p50 ms", "TTFT p95 ms")  # fmt: skip
    table = results_table(title, columns)
    table.add_row(
        str(result.served),
        f"{result.served / result.seconds:.2f}",
        f"{result.tokens / result.seconds:.1f}",
        str(result.outcomes["429"]),
        str(sum(result.errors.values())),
        _ms(result.latencies, 0.5),
        _ms(result.latencies, 0.95),
        _ms(result.ttfts, 0.5),
        _ms(result.ttfts, 0.95),
    )
    print_results(console, table)
    errors = Table(title="outcomes by kind")
    errors.add_column("kind")
    errors.add_column("count")
    for kind, count in result.outcomes.most_common():
        errors.add_row(kind, str(count))
    console.print(errors)
    for event in result.events:
        console.print(f"  {event}")
    if result.latencies:
        console.print(f"mean latency {statistics.fmean(result.latencies) * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--keys", type=int, default=2, help="API keys the clients share")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--per-key-cap", type=int, default=6, help="gateway's cap (self-started)")
    parser.add_argument("--fault", choices=["none", "engine-restart"], default="none")
    parser.add_argument("--gateway-url", help="a running gateway (default: start the stack)")
    parser.add_argument("--api-key", action="append", help="its key(s), with --gateway-url")
    args = parser.parse_args()
    if args.fault != "none" and args.gateway_url:
        parser.error("--fault needs the stack this script starts")

    with ExitStack() as stack:
        if args.gateway_url:
            url, keys, engine, cap = args.gateway_url, args.api_key or ["none"], None, None
        else:
            url, keys, engine = _start_stack(stack, args.keys, args.per_key_cap)
            cap = args.per_key_cap
        events: list[str] = []
        recovered_at: list[float] = []
        done = threading.Event()
        stack.callback(done.set)
        if args.fault == "engine-restart":
            assert engine is not None
            fault = threading.Thread(
                target=_restart_engine,
                args=(engine, url, args.duration / 4, events, recovered_at, done),
                daemon=True,
            )
            fault.start()
        result = asyncio.run(
            run_load(
                url, keys, clients=args.clients, duration_s=args.duration,
                max_tokens=args.max_tokens,
            )
        )  # fmt: skip
        result.events = events
        if recovered_at:
            after = sum(1 for t in result.finished_at if t > recovered_at[0])
            events.append(f"answers completed after /readyz came back: {after}")
        in_flight = metric_total(url, "ragdock_requests_in_flight", METRICS_TOKEN)
        print_result(result, args.clients, len(keys), cap)
        console.print(f"gateway requests in flight after the run: {in_flight:g}")
    # With the engine killed on purpose, its outage is expected to show, and only as these two.
    expected = FAULT_OUTCOMES if args.fault == "engine-restart" else set()
    unexpected = set(result.errors) - expected
    if unexpected:
        console.print(f"[red]unexpected outcomes: {sorted(unexpected)}[/]")
    sys.exit(1 if unexpected or in_flight else 0)


def _restart_engine(
    engine: object,
    url: str,
    after_s: float,
    events: list[str],
    recovered_at: list[float],
    done: threading.Event,
) -> None:
    """kill -9 the engine's process group after `after_s`, start it again, note the times.

    The engine is started with PR_SET_PDEATHSIG, which fires when the *thread* that spawned it
    ends: this thread must outlive the run (`done`), or the restarted engine dies with it.
    """
    import os
    import signal

    from engine.launcher import EngineProcess

    assert isinstance(engine, EngineProcess) and engine.pid is not None
    time.sleep(after_s)
    t0 = time.monotonic()
    os.killpg(engine.pid, signal.SIGKILL)
    events.append(f"t+{after_s:.0f}s: engine killed (SIGKILL to its process group)")
    while httpx.get(f"{url}/readyz", timeout=10).status_code == 200:
        time.sleep(0.1)
    events.append(f"/readyz answered 503 {time.monotonic() - t0:.1f} s after the kill")
    engine.stop()
    engine.start()
    engine.wait_ready(600)
    events.append(f"engine ready again {time.monotonic() - t0:.0f} s after the kill")
    while httpx.get(f"{url}/readyz", timeout=10).status_code != 200:
        time.sleep(0.1)
    events.append(f"/readyz back to 200 {time.monotonic() - t0:.0f} s after the kill")
    recovered_at.append(time.monotonic())
    done.wait()


def _start_stack(stack: ExitStack, keys: int, per_key_cap: int) -> tuple[str, list[str], object]:
    from engine.launcher import EngineLaunchSpec, EngineProcess
    from engine.model_build import DEFAULT_MODEL, resolve_model_dir
    from ragdock.settings import Settings, default_home
    from server.process import start_gateway

    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ragdock-load-")))
    home = default_home()
    model_dir = resolve_model_dir(DEFAULT_MODEL, home, step=console.print)
    spec = EngineLaunchSpec.from_settings(
        Settings.load(None, served_model_name="gemma"), model_dir,
        log_file=workdir / "engine.log", port=free_port(), dtype_cache=home,
    )  # fmt: skip
    engine = EngineProcess(spec)
    stack.callback(engine.stop)
    engine.start()
    console.print("starting the engine ...")
    engine.wait_ready(600)
    api_keys = [f"load-key-{i}-0123456789abcdef" for i in range(keys)]
    env = {
        "RAGDOCK_API_KEYS": json.dumps(
            [{"key": k, "name": f"load{i}", "scopes": ["chat"]} for i, k in enumerate(api_keys)]
        ),
        "RAGDOCK_MAX_IN_FLIGHT_PER_KEY": str(per_key_cap),
        "RAGDOCK_METRICS_TOKEN": METRICS_TOKEN,
    }
    gateway = start_gateway(engine.url, workdir / "gateway.log", env)
    stack.callback(gateway.stop)
    return gateway.url, api_keys, engine


if __name__ == "__main__":
    main()
