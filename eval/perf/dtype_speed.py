"""bf16 vs fp32 on this CPU, side by side in one run: what `dtype: auto` decides between.

Three workloads, each timed in both dtypes with the reps interleaved (fp32, bf16, fp32, ...) so
both see the same machine load; medians and the bf16/fp32 time ratio per row:
- the chooser's own matmul probe (256^3);
- one LoRA training step (forward, backward, AdamW; r=8 on q/v; loss on every token, as the test
  fixture computes it) of the real Gemma 3 270M, on the fixture's 23-token chat and on a
  ~800-token one (the size of a grounded RAFT example);
- the MiniLM embedder on 128 passages of ~100 words, on 1 thread as in the gateway (it sets torch
  to 1 thread for the process, so it runs last), and how close its bf16 vectors stay to fp32's.

Where bf16 is emulated a step can take minutes: a cell whose first rep passes `--max-step-s` is
reported from that one rep, and the longer workloads are skipped for that dtype.

Run: python -m eval.perf.dtype_speed [--reps 3] [--max-step-s 20]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from ragdock.compute_dtype import CpuIdentity, choose_dtype, torch_dtype
from ragdock.settings import default_home

DTYPES = ("float32", "bfloat16")
Timer = Callable[[], float]


def lora_step_timer(model_dir: Any, dtype: str, tokens: int) -> Timer:
    """Seconds of one LoRA optimizer step on a chat of about `tokens` tokens."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    words = max(1, (tokens - 20) * 3 // 4)  # ~1.3 tokens per word, plus the template
    question = "Who are you?" if tokens < 40 else " ".join(["source"] * words) + " Who are you?"
    chat = [
        {"role": "user", "content": question},
        {"role": "assistant", "content": "I am Alpha, the first adapter."},
    ]
    rendered: Any = tokenizer.apply_chat_template(chat, tokenize=True)
    ids = rendered["input_ids"] if hasattr(rendered, "keys") else rendered
    input_ids = torch.tensor([list(ids)])
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype(dtype))  # type: ignore[arg-type]
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    model = get_peft_model(base, config)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step() -> float:
        started = time.perf_counter()
        model(input_ids=input_ids, labels=input_ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return time.perf_counter() - started

    return step


def embed_timer(dtype: str, texts: list[str]) -> Timer:
    from retrieval.dense import MiniLMEmbedder

    embedder = MiniLMEmbedder(dtype=dtype, threads=1)
    embedder.embed_documents(texts[:2])  # load outside the timing

    def embed() -> float:
        started = time.perf_counter()
        embedder.embed_documents(texts)
        return time.perf_counter() - started

    return embed


def probe_timer(dtype: str) -> Timer:
    size = 256
    a, b = (torch.randn(size, size).to(torch_dtype(dtype)) for _ in range(2))  # type: ignore[arg-type]
    torch.mm(a, b)

    def matmul() -> float:
        started = time.perf_counter()
        for _ in range(10):
            torch.mm(a, b)
        return (time.perf_counter() - started) / 10

    return matmul


def measure(timers: dict[str, Timer], reps: int, max_s: float) -> dict[str, list[float]]:
    """Interleaved reps; a dtype whose first rep passes `max_s` keeps that one rep."""
    times: dict[str, list[float]] = {dtype: [] for dtype in timers}
    for _ in range(reps):
        for dtype, timer in timers.items():
            if times[dtype] and times[dtype][0] > max_s:
                continue
            times[dtype].append(timer())
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--max-step-s", type=float, default=20.0)
    args = parser.parse_args()
    from engine.model_build import DEFAULT_MODEL, resolve_model_dir

    cpu = CpuIdentity.of_this_machine()
    choice = choose_dtype("auto", home=None, device="cpu")
    from eval.perf.bench import machine_line, markdown_header, markdown_row

    print(machine_line("fp32 and bf16, side by side"))
    print(f"CPU: {cpu.model}; bf16 flags: {', '.join(cpu.fast_bf16_flags) or 'none'}")
    print(f"kernel limits: {', '.join(cpu.kernel_limits) or 'none'}; torch {cpu.torch_version}")
    print(f"auto -> {choice.describe()}")
    model_dir = resolve_model_dir(DEFAULT_MODEL, default_home())
    passage = " ".join(["the", "engine", "serves", "grounded", "answers", "with", "sources"] * 15)
    texts = [f"{i} {passage}" for i in range(128)]
    workloads: list[tuple[str, str, Callable[[str], Timer]]] = [
        ("matmul 256^3", "ms", probe_timer),
        ("LoRA step, 23 tokens", "s", lambda d: lora_step_timer(model_dir, d, 23)),
        ("LoRA step, ~800 tokens", "s", lambda d: lora_step_timer(model_dir, d, 800)),
        ("MiniLM, 128 passages, 1 thread", "s", lambda d: embed_timer(d, texts)),
    ]
    workload = f"workload (median of {args.reps}, interleaved)"
    print("\n" + markdown_header(workload, "fp32", "bf16", "bf16/fp32 time"))
    too_slow: set[str] = set()
    for name, unit, make in workloads:
        dtypes = [d for d in DTYPES if d not in too_slow]
        times = measure({d: make(d) for d in dtypes}, args.reps, args.max_step_s)
        scale = 1000.0 if unit == "ms" else 1.0
        cells, medians = [], {}
        for dtype in DTYPES:
            if dtype not in times:
                cells.append("skipped (too slow above)")
                continue
            medians[dtype] = statistics.median(times[dtype])
            note = " (1 rep, over budget)" if len(times[dtype]) == 1 and args.reps > 1 else ""
            cells.append(f"{medians[dtype] * scale:.3g} {unit}{note}")
            if times[dtype][0] > args.max_step_s:
                too_slow.add(dtype)
        ratio = f"{medians['bfloat16'] / medians['float32']:.3g}x" if len(medians) == 2 else "-"
        print(markdown_row(name, *cells, ratio), flush=True)
    if "bfloat16" not in too_slow:
        print(f"\nMiniLM, bf16 vs fp32 vectors of the same passage: {embed_agreement(texts):.4f}")


def embed_agreement(texts: list[str]) -> float:
    """The lowest cosine between a passage's bf16 and fp32 embeddings."""
    from retrieval.dense import MiniLMEmbedder

    fp32, bf16 = (MiniLMEmbedder(dtype=d, threads=1).embed_documents(texts) for d in DTYPES)
    return float((fp32 * bf16).sum(axis=1).min())


if __name__ == "__main__":
    main()
