"""What the engine burns when it has (almost) nothing to do.

    python -m eval.perf.idle_engine [--seconds 60] [--every 5]

Starts the engine as `ragdock up` does, once with ragdock's 0.1 s worker spin (engine/cpu_idle.py)
and once with vLLM's own 1 s, and counts the CPU seconds of all its processes (the
API server, the engine core and the worker; user + system, from /proc) over two windows of
`--seconds` each: fully idle, and light traffic (one 16-token request every `--every` seconds,
the pace of a person trying the demo). On a 2-core machine every core-second the engine spends
waiting is taken from the embedder, the tests and training running beside it.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

import httpx
from rich.console import Console

from engine.launcher import EngineLaunchSpec, EngineProcess
from eval.perf.bench import free_port, group_cpu_seconds, print_results, results_table
from eval.perf.stack import model_dir
from ragdock.settings import Settings

console = Console(width=140)


def window(engine: EngineProcess, seconds: float, every: float | None) -> tuple[float, int]:
    """CPU seconds over `seconds`, sending a short request every `every` seconds if given."""
    assert engine.pid is not None
    before = group_cpu_seconds(engine.pid)
    started = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - started) < seconds:
        if every is not None and elapsed >= sent * every:
            httpx.post(
                f"{engine.url}/v1/completions",
                json={"model": "gemma", "prompt": f"Request {sent}:", "max_tokens": 16},
                timeout=60,
            ).raise_for_status()
            sent += 1
        time.sleep(0.05)
    return group_cpu_seconds(engine.pid) - before, sent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--every", type=float, default=5)
    parser.add_argument("--settle", type=float, default=10, help="wait after start-up")
    args = parser.parse_args()

    settings = Settings.load(None, engine_port=free_port(), served_model_name="gemma")
    spec = EngineLaunchSpec.from_settings(settings, model_dir(console))
    table = results_table(
        f"engine CPU over {args.seconds:.0f} s (all engine processes)",
        ("worker spin after a step", "window", "requests", "CPU s", "share of one core"),
    )
    dtype = "?"
    # One engine at a time: each runs alone on the machine, as in production.
    for label, spin in (("ragdock: 0.1 s", "0.1"), ("vLLM default: 1 s", "1")):
        os.environ["RAGDOCK_ENGINE_SPIN_S"] = spin  # read by ragdock's plugin in the engine
        log = Path(f"/tmp/ragdock-idle-engine-{os.getpid()}-{spin}.log")
        with EngineProcess(replace(spec, log_file=log, port=free_port())) as engine:
            engine.wait_ready(settings.engine_startup_timeout_s)
            dtype = engine.spec.dtype
            httpx.post(
                f"{engine.url}/v1/completions",
                json={"model": "gemma", "prompt": "warm up", "max_tokens": 4},
                timeout=120,
            ).raise_for_status()
            time.sleep(args.settle)
            idle, _ = window(engine, args.seconds, None)
            light, sent = window(engine, args.seconds, args.every)
        table.add_row(label, "idle", "0", f"{idle:.2f}", f"{idle / args.seconds:.1%}")
        table.add_row(
            label,
            f"1 request / {args.every:.0f} s",
            str(sent),
            f"{light:.2f}",
            f"{light / args.seconds:.1%}",
        )
    print_results(console, table, dtype)


if __name__ == "__main__":
    main()
