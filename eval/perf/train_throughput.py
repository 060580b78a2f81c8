"""Training throughput: the ragdock recipe vs a plain transformers + peft loop, side by side.

    python eval/perf/train_throughput.py [--data train.jsonl] [--examples 32] [--rounds 2]

Every variant runs in a fresh subprocess (fair peak-RSS figures, no shared caches), and the
variants are interleaved round by round so load from other processes on the machine hits them
alike. Each worker loads the model, runs one warm-up step, then one pass over the same examples
and reports real (non-pad) tokens per second and its peak resident memory:

  plain           transformers + peft, padded batches, model(..., labels=...) loss: the baseline
  recipe          the recipe's own step (training.recipe.LoRARecipe) on the same padded batches
  recipe+packing  the recipe with packing (rows of max_seq_len, no padding)
  recipe-qlora    the recipe with a 4-bit NF4 base (memory comparison)

Without --data, the examples are synthetic chats of widely varying length (a long user turn of
random words, log-uniform in length, a short reply): the long-tailed lengths of real chat data,
the case padding wastes most on and packing is meant for.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

VARIANTS = ("plain", "recipe", "recipe+packing", "recipe-qlora")
_WORDS = [
    "river",
    "town",
    "bridge",
    "year",
    "settlers",
    "north",
    "south",
    "east",
    "west",
    "market",
    "church",
    "castle",
    "harbour",
    "road",
    "king",
    "queen",
    "war",
    "peace",
    "trade",
    "law",
    "court",
    "school",
    "river",
    "valley",
    "mountain",
    "forest",
    "field",
    "farm",
    "mill",
    "steam",
    "engine",
    "power",
    "coal",
    "iron",
    "rail",
    "ship",
    "sail",
    "wind",
    "water",
    "fire",
    "stone",
    "wood",
    "glass",
    "paper",
    "book",
    "theory",
    "problem",
    "class",
    "machine",
    "time",
    "space",
    "number",
    "proof",
    "result",
    "method",
    "answer",
    "question",
    "source",
]


def synthetic_chats(count: int, seed: int, max_words: int) -> list[dict[str, Any]]:
    """Chats with user turns of 10..max_words random words (log-uniform) and a one-line reply."""
    rng = random.Random(seed)
    records = []
    for index in range(count):
        # Log-uniform lengths: many short turns, a long tail, as chat data usually is.
        length = round(math.exp(rng.uniform(math.log(10), math.log(max_words))))
        words = " ".join(rng.choices(_WORDS, k=length))
        reply = f"{rng.choice(_WORDS).title()} {rng.randint(1000, 1999)} [{rng.randint(1, 4)}]"
        records.append(
            {
                "messages": [
                    {"role": "user", "content": f"Document {index}: {words}\n\nWhat does it say?"},
                    {"role": "assistant", "content": reply},
                ]
            }
        )
    return records


def _config(args: argparse.Namespace, variant: str, out: Path) -> Any:
    from training.config import validate_config

    return validate_config(
        {
            "model": args.model,
            "method": "qlora" if variant == "recipe-qlora" else "lora",
            "output_dir": str(out),
            "seed": 0,
            "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "attention"},
            "data": {
                "train": args.data_file,
                "max_seq_len": args.max_seq_len,
                "too_long": "drop",
                "duplicates": "drop",
                "packing": variant == "recipe+packing",
            },
            "optim": {"lr": 1e-4, "batch_size": args.batch_size, "warmup_steps": 0, "epochs": 1},
            "loop": {"threads": args.threads, "dtype": args.dtype},
        }
    )


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One variant: load, warm up, one pass over the examples; returns the measurements."""
    import torch

    from training.recipe import LoRARecipe

    with tempfile.TemporaryDirectory() as tmp:
        config = _config(args, args.worker, Path(tmp) / "out")
        if args.worker == "plain":
            # The baseline: the same base model, adapter and batches, trained the textbook way.
            from peft import LoraConfig, get_peft_model
            from transformers import AutoModelForCausalLM

            from engine.model_build import resolve_model_dir
            from training.dataset import epoch_batches, prepare_data
            from training.model import load_tokenizer
            from training.recipe import default_home
            from training.render import stop_token_ids

            if args.threads:
                torch.set_num_threads(args.threads)
            model_dir = resolve_model_dir(args.model, default_home())
            tokenizer = load_tokenizer(model_dir)
            data = prepare_data(
                config.data, tokenizer, seed=0, stop_ids=stop_token_ids(tokenizer, model_dir)
            )
            batches = epoch_batches(
                data.train,
                batch_size=args.batch_size,
                packing=False,
                max_seq_len=args.max_seq_len,
                pad_id=tokenizer.pad_token_id,
                seed=0,
                epoch=0,
            )
            examples = len(data.train)
            torch.manual_seed(0)
            from ragdock.compute_dtype import choose_dtype, torch_dtype

            dtype = choose_dtype(args.dtype, home=default_home()).dtype  # as the recipe resolves
            model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch_dtype(dtype))
            lora = LoraConfig(
                r=8,
                lora_alpha=16,
                lora_dropout=0.0,
                task_type="CAUSAL_LM",
                target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            )
            model = get_peft_model(model, lora)  # type: ignore[assignment]  # wraps the same model
            model.train()
            params = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(params, lr=1e-4)

            def step(batch: Any) -> None:
                # transformers shifts labels itself: un-shift ours (labels[t+1] = shifted[t]).
                labels = torch.full_like(batch.input_ids, -100)
                labels[:, 1:] = batch.shifted_labels[:, :-1]
                loss = model(
                    input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=labels
                ).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        else:
            recipe = LoRARecipe(config, progress=False)
            recipe.setup()
            batches = recipe._epoch(0)
            examples = len(recipe.data.train)

            def step(batch: Any) -> None:
                recipe._step([batch])

        step(batches[0])  # warm-up: allocator, kernels, thread pools
        tokens = sum(b.real_tokens for b in batches)
        padded = sum(int(b.input_ids.numel()) for b in batches)
        started = time.perf_counter()
        for batch in batches:
            step(batch)
        seconds = time.perf_counter() - started
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {
            "variant": args.worker,
            "tokens": tokens,
            "padded_tokens": padded,
            "steps": len(batches),
            "seconds": seconds,
            "tokens_per_s": tokens / seconds,
            "peak_rss_mib": peak_mib,
            "examples": examples,
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data", type=Path, help="chat JSONL; default: synthetic variable-length")
    parser.add_argument("--examples", type=int, default=32, help="examples per pass")
    parser.add_argument("--max-seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repetitions")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument(
        "--dtype", default="auto", help="auto (this machine's fast one), bf16, fp32"
    )
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--data-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    from engine.model_build import resolve_model_dir
    from eval.perf.bench import machine_line
    from eval.perf.machine import measure_roofline
    from ragdock.compute_dtype import choose_dtype
    from training.recipe import default_home

    choice = choose_dtype(args.dtype, home=default_home())
    # The bound every variant is measured against, probed before any of them runs (machine idle).
    roofline = measure_roofline(resolve_model_dir(args.model, default_home()), choice.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "bench.jsonl"
        if args.data:
            lines = args.data.read_text().splitlines()[: args.examples]
            data.write_text("\n".join(lines) + "\n")
        else:
            words = int(args.max_seq_len * 0.7)  # ~1.3 tokens/word: the longest nearly fill a row
            records = synthetic_chats(args.examples, seed=0, max_words=words)
            data.write_text("\n".join(json.dumps(r) for r in records) + "\n")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        results: dict[str, list[dict[str, Any]]] = {}
        variants = args.variants.split(",")
        for round_ in range(args.rounds):
            for variant in variants:
                command = [
                    sys.executable,
                    __file__,
                    "--worker",
                    variant,
                    "--data-file",
                    str(data),
                    "--max-seq-len",
                    str(args.max_seq_len),
                    "--batch-size",
                    str(args.batch_size),
                    "--model",
                    args.model,
                    "--dtype",
                    args.dtype,
                ]
                if args.threads:
                    command += ["--threads", str(args.threads)]
                done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
                if done.returncode:
                    sys.exit(f"{variant} failed:\n{done.stderr[-3000:]}")
                result = json.loads(done.stdout.strip().splitlines()[-1])
                results.setdefault(variant, []).append(result)
                print(
                    f"round {round_ + 1} {variant:15s} {result['tokens_per_s']:8.1f} tok/s "
                    f"peak {result['peak_rss_mib']:.0f} MiB",
                    file=sys.stderr,
                )
    print(machine_line(choice.dtype, args.threads))
    print(f"dtype: {choice.describe()}")
    print(roofline.describe())
    print_table(results, roofline.train_tokens_per_s)


def print_table(results: dict[str, list[dict[str, Any]]], roofline_tokens_per_s: float) -> None:
    """Markdown table; "vs roofline" is tokens/s over the probe's training bound (forward and
    backward through the frozen weights at the matmul probe's rate, eval/perf/machine.py)."""
    base = statistics.median(r["tokens_per_s"] for r in results.get("plain", [{"tokens_per_s": 0}]))
    lora_rss = statistics.median(
        r["peak_rss_mib"] for r in results.get("recipe", [{"peak_rss_mib": 0}])
    )
    from eval.perf.bench import markdown_header, markdown_row

    print(
        markdown_header(
            "variant", "steps/pass", "real tokens", "padded tokens", "tokens/s (median)",
            "vs plain", "vs roofline", "peak RSS MiB", "vs recipe LoRA",
        )
    )  # fmt: skip
    for variant, runs in results.items():
        speed = statistics.median(r["tokens_per_s"] for r in runs)
        rss = statistics.median(r["peak_rss_mib"] for r in runs)
        first = runs[0]
        ratio = f"{speed / base:.2f}x" if base else "-"
        mem = f"{rss / lora_rss:.2f}x" if lora_rss else "-"
        print(
            markdown_row(
                variant, first["steps"], first["tokens"], first["padded_tokens"], f"{speed:.1f}",
                ratio, f"{speed / roofline_tokens_per_s:.0%}", f"{rss:.0f}", mem,
            )
        )  # fmt: skip


if __name__ == "__main__":
    main()
