"""Prefill speed of the engine, variant by variant, against the model-shaped matmul roofline.

    python -m eval.perf.engine_prefill [--prompt-tokens 900] [--requests 12]

Starts two engines from the settings `ragdock up` uses: one with ragdock's CPU kernel flags
(`engine_cpu_kernels`, the default) and one without (vLLM's own eager defaults), and loads the
shipped demo adapter into the first. Each request is a fresh prompt of `--prompt-tokens` tokens
(never a prefix-cache hit) asking for one token, so its latency is the prefill; requests go to
the variants in turn, one at a time, so the machine's noise hits them alike while the others
sit idle. The table gives median prefill seconds, tokens/s, the share of the roofline
(eval/perf/machine.py) and the ratio to the first row.
"""

from __future__ import annotations

import argparse
import random
import statistics
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import httpx
from rich.console import Console

from engine.launcher import EngineLaunchSpec, EngineProcess
from eval.perf.bench import free_port, print_results, results_table
from eval.perf.machine import measure_roofline
from eval.perf.stack import model_dir
from ragdock.settings import Settings

console = Console(width=140)
DEMO_ADAPTER = Path(__file__).resolve().parents[2] / "adapters" / "demo" / "grounded"
_WORDS = (
    "river",
    "city",
    "archive",
    "protein",
    "signal",
    "harbor",
    "lattice",
    "quarter",
    "engine",
    "meadow",
    "copper",
    "fabric",
    "thunder",
    "orbit",
    "ledger",
    "canyon",
    "pillar",
    "violet",
    "summit",
    "whisper",
    "granite",
    "beacon",
    "marble",
    "tunnel",
)


def fresh_prompt(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words))


def prefill_seconds(url: str, model: str, prompt: str) -> tuple[float, int]:
    reply = httpx.post(
        f"{url}/v1/completions",
        json={"model": model, "prompt": prompt, "max_tokens": 1, "temperature": 0},
        timeout=300,
    )
    reply.raise_for_status()
    return reply.elapsed.total_seconds(), int(reply.json()["usage"]["prompt_tokens"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompt-tokens", type=int, default=900)
    parser.add_argument("--requests", type=int, default=12, help="per variant")
    args = parser.parse_args()

    settings = Settings.load(None)
    model = model_dir(console)
    rng = random.Random(0)
    words = int(args.prompt_tokens * 0.95)  # these words are about one token each, plus BOS
    with ExitStack() as stack:
        engines = {}
        for name, cpu_kernels in (("ragdock CPU kernels", True), ("vLLM defaults", False)):
            spec = replace(
                EngineLaunchSpec.from_settings(settings, model),
                port=free_port(),
                cpu_kernels=cpu_kernels,
                log_file=Path(f"/tmp/ragdock-prefill-{name.split()[0]}.log"),
            )
            engines[name] = stack.enter_context(EngineProcess(spec))
        for engine in engines.values():
            engine.wait_ready(settings.engine_startup_timeout_s)
        fast = engines["ragdock CPU kernels"]
        httpx.post(
            f"{fast.url}/v1/load_lora_adapter",
            json={"lora_name": "demo", "lora_path": str(DEMO_ADAPTER)},
            timeout=120,
        ).raise_for_status()
        dtype = fast.spec.dtype
        roofline = measure_roofline(model, dtype)  # every engine idle now
        variants = [
            ("base, ragdock CPU kernels", fast.url, settings.served_model_name),
            ("base, vLLM defaults", engines["vLLM defaults"].url, settings.served_model_name),
            ("demo adapter, ragdock CPU kernels", fast.url, "demo"),
        ]
        times: dict[str, list[float]] = {name: [] for name, _, _ in variants}
        tokens: dict[str, list[int]] = {name: [] for name, _, _ in variants}
        for _ in range(2):  # warm-up, not counted
            for _, url, served in variants:
                prefill_seconds(url, served, fresh_prompt(rng, words))
        for _ in range(args.requests):
            for name, url, served in variants:
                seconds, count = prefill_seconds(url, served, fresh_prompt(rng, words))
                times[name].append(seconds)
                tokens[name].append(count)

    table = results_table(
        f"prefill, {args.requests} fresh prompts per variant, one token out",
        ("variant", "prompt tokens", "median s", "best s", "tokens/s (median)", "of roofline",
         "ratio"),
    )  # fmt: skip
    first = statistics.median(times[variants[0][0]])
    for name, _, _ in variants:
        median = statistics.median(times[name])
        rate = statistics.median(tokens[name]) / median
        table.add_row(
            name,
            f"{statistics.median(tokens[name]):.0f}",
            f"{median:.3f}",
            f"{min(times[name]):.3f}",
            f"{rate:.0f}",
            f"{rate / roofline.prefill_tokens_per_s:.0%}",
            f"{median / first:.3f}",
        )
    print_results(console, table, dtype, notes=[roofline.describe()])


if __name__ == "__main__":
    main()
