"""What serving LoRA adapters costs: push-to-first-token time, and throughput with 1, 2 and 4
adapters mixed into 8 concurrent streams against the base model alone, side by side.

    python -m eval.perf.adapter_throughput [--reps 3] [--rank 8] [--kernels both|ragdock|vllm]
        [--targets attention|all-linear]

Starts its own engine(s) and gateway(s): with `--kernels both` (the default) one engine with vLLM's
own CPU LoRA path and one with ragdock's (engine/cpu_lora.py), measured in interleaved reps. Two
engines share the machine's cores, so on a small machine measure one at a time and compare. The
adapters are real PEFT LoRA adapters on the real base with random (non-zero) weights: their compute
cost is that of trained ones. Every request asks for exactly `--max-tokens` tokens (greedy,
ignore_eos), through the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
from rich.console import Console

from eval.perf.bench import free_port, print_results, read_stream, results_table

console = Console(width=150)


TARGETS = {
    "attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "all-linear": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}

BENCH_KEY = "adapter-bench-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {BENCH_KEY}"}


def make_random_adapters(
    model_dir: Path, out: Path, count: int, rank: int, targets: str = "attention"
) -> list[Path]:
    """PEFT LoRA adapters with random A and B (peft's init_lora_weights=False)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = []
    for i in range(count):
        torch.manual_seed(i)
        # Nothing is computed here (random init, then save), so the dtype costs no time.
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
        config = LoraConfig(
            r=rank,
            lora_alpha=rank,
            init_lora_weights=False,
            target_modules=TARGETS[targets],
            task_type="CAUSAL_LM",
        )
        peft_model = get_peft_model(model, config)
        peft_model.peft_config["default"].base_model_name_or_path = str(model_dir)
        peft_model.save_pretrained(str(out / f"random{i}"), safe_serialization=True)
        paths.append(out / f"random{i}")
    return paths


async def _stream_one(client: httpx.AsyncClient, model: str, max_tokens: int) -> tuple[int, float]:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Tell me about Paris."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    async with client.stream("POST", "/v1/chat/completions", json=body) as reply:
        reply.raise_for_status()
        read = await read_stream(reply, started)
    return int(read.usage.get("completion_tokens", 0)), read.ttft or 0.0


async def mixed_load(
    base_url: str, models: list[str], streams: int, requests: int, max_tokens: int
) -> float:
    """Tokens/s with `streams` concurrent streams cycling over `models`."""
    counter = iter(range(requests))
    async with httpx.AsyncClient(base_url=base_url, timeout=600, headers=AUTH) as client:
        total = 0

        async def worker() -> None:
            nonlocal total
            for i in counter:
                tokens, _ = await _stream_one(client, models[i % len(models)], max_tokens)
                total += tokens

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(streams)))
        return total / (time.perf_counter() - started)


def push(base_url: str, adapter: Path, name: str) -> str:
    """Upload the adapter's files as `name`; returns the model name it is served under."""
    files = [("files", (p.name, p.read_bytes())) for p in sorted(adapter.iterdir()) if p.is_file()]
    reply = httpx.post(
        f"{base_url}/v1/adapters/upload", files=files, data={"name": name}, timeout=120,
        headers=AUTH,
    )  # fmt: skip
    reply.raise_for_status()
    return str(reply.json()["model"])


def push_to_first_token(base_url: str, adapter: Path, name: str, max_tokens: int) -> float:
    started = time.perf_counter()
    model = push(base_url, adapter, name)

    async def first() -> float:
        async with httpx.AsyncClient(base_url=base_url, timeout=600, headers=AUTH) as client:
            await _stream_one(client, model, max_tokens)
        return time.perf_counter() - started

    return asyncio.run(first())


CONFIGS = {
    "base only": ["gemma"],
    "1 adapter": ["a0@v1"],
    "2 adapters": ["a0@v1", "a1@v1"],
    "4 adapters": ["a0@v1", "a1@v1", "a2@v1", "a3@v1"],
    "4 adapters + base": ["gemma", "a0@v1", "a1@v1", "a2@v1", "a3@v1"],
}
# vLLM's CPU LoRA kernels, or ours (engine/cpu_lora.py, a vLLM plugin loaded by default).
KERNELS = {"vllm": "lora_filesystem_resolver", "ragdock": None}


def start_stack(
    stack: ExitStack, model_dir: Path, workdir: Path, kernels: str, home: Path | None = None
) -> str:
    """An engine (with the chosen LoRA kernels) and a gateway in front of it; returns its URL."""
    from engine.launcher import EngineLaunchSpec, EngineProcess
    from ragdock.settings import Settings
    from server.process import start_gateway

    plugins = KERNELS[kernels]
    saved = os.environ.pop("VLLM_PLUGINS", None)
    if plugins is not None:
        os.environ["VLLM_PLUGINS"] = plugins  # every plugin but ours
    try:
        spec = EngineLaunchSpec.from_settings(
            Settings.load(None, served_model_name="gemma"),
            model_dir,
            log_file=workdir / f"engine-{kernels}.log",
            port=free_port(),
            dtype_cache=home,
        )
        engine = stack.enter_context(EngineProcess(spec))
    finally:
        os.environ.pop("VLLM_PLUGINS", None)
        if saved is not None:
            os.environ["VLLM_PLUGINS"] = saved
    console.print(f"starting the engine ({kernels} LoRA kernels)...")
    engine.wait_ready(600)
    env = {
        # Pushing adapters needs an admin-scoped key (keyless mode has no admin).
        "RAGDOCK_API_KEYS": json.dumps([{"key": BENCH_KEY, "scopes": ["platform"]}]),
        "RAGDOCK_ADAPTERS_DIR": str(workdir / f"registry-{kernels}"),
        "RAGDOCK_DATA_DIR": str(workdir / f"data-{kernels}"),
    }
    gateway = start_gateway(engine.url, workdir / f"gateway-{kernels}.log", env)
    stack.callback(gateway.stop)
    return gateway.url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument(
        "--kernels",
        choices=["ragdock", "vllm", "both"],
        default="both",
        help="LoRA kernels to measure; both = two engines, reps interleaved",
    )
    parser.add_argument(
        "--targets",
        choices=list(TARGETS),
        default="attention",
        help="modules the random adapters train (all-linear adds the MLP)",
    )
    args = parser.parse_args()

    from engine.model_build import DEFAULT_MODEL, resolve_model_dir
    from ragdock.settings import default_home

    home = Path(os.environ.get("RAGDOCK_HOME") or default_home())
    workdir = Path(tempfile.mkdtemp(prefix="ragdock-adapter-bench-"))
    model_dir = resolve_model_dir(DEFAULT_MODEL, home, step=console.print)
    console.print("making 5 random-weight adapters...")
    adapters = make_random_adapters(model_dir, workdir / "made", 5, args.rank, args.targets)
    kernels = ["vllm", "ragdock"] if args.kernels == "both" else [args.kernels]
    results: dict[str, dict[str, list[float]]] = {k: {c: [] for c in CONFIGS} for k in kernels}
    ptft: dict[str, float] = {}
    with ExitStack() as stack:
        urls = {k: start_stack(stack, model_dir, workdir, k, home) for k in kernels}
        for kernel, url in urls.items():
            ptft[kernel] = push_to_first_token(url, adapters[4], "fresh", args.max_tokens)
            for i, path in enumerate(adapters[:4]):
                push(url, path, f"a{i}")
            for models in CONFIGS.values():  # warm: every adapter loaded, caches hot
                asyncio.run(mixed_load(url, models, args.streams, args.streams, 8))
        for rep in range(args.reps):
            order = list(CONFIGS) if rep % 2 == 0 else list(reversed(CONFIGS))
            for key in order:
                for kernel in kernels if rep % 2 == 0 else list(reversed(kernels)):
                    speed = asyncio.run(
                        mixed_load(
                            urls[kernel], CONFIGS[key], args.streams, args.requests, args.max_tokens
                        )
                    )
                    results[kernel][key].append(speed)
                    console.print(f"rep {rep + 1}: {kernel} kernels: {key}: {speed:.1f} tok/s")
    print_table(results, args, ptft)


def print_table(
    results: dict[str, dict[str, list[float]]], args: argparse.Namespace, ptft: dict[str, float]
) -> None:
    columns = ["models in the mix"]
    for kernel in results:
        columns += [f"{kernel} kernels tok/s", "ratio vs base"]
    if len(results) == 2:
        columns.append("ragdock / vllm")
    table = results_table(
        f"{args.streams} concurrent streams, {args.max_tokens} tokens/request, "
        f"LoRA r={args.rank} on {', '.join(TARGETS[args.targets])}, "
        f"medians of {args.reps} interleaved reps",
        columns,
    )
    for key in CONFIGS:
        row = [key]
        for values in results.values():
            base = statistics.median(values["base only"])
            row += [
                f"{statistics.median(values[key]):.1f}",
                f"{statistics.median(values[key]) / base:.3f}",
            ]
        if len(results) == 2:
            speedup = statistics.median(results["ragdock"][key]) / statistics.median(
                results["vllm"][key]
            )
            row.append(f"{speedup:.2f}x")
        table.add_row(*row)
    print_results(
        console,
        table,
        summary=[
            f"push-to-first-token for a new adapter ({kernel} kernels; upload, validate, "
            f"load, first token): {seconds:.2f} s"
            for kernel, seconds in ptft.items()
        ],
    )


if __name__ == "__main__":
    main()
