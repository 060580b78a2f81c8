"""Forgetting: does the candidate still model general text and recall general facts as the base
does? Both are measured through the gateway on the same served engine.

- Perplexity on plain paragraphs (shipped in eval/data, written for this project): the prompt's own
  token log-probabilities from /v1/completions with echo + logprobs, no generation to speak of.
  The figure per model is the geometric mean over paragraphs of each paragraph's perplexity;
  the candidate's relative increase is exp(mean log-ratio) - 1, with a paired interval.
- General QA: short questions in a few-shot "Question/Answer" frame (a pretrained base answers
  that way; a chat template would measure the template), greedy, scored by answer containment.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from eval.gateway import bounded_map
from eval.metrics.text import contains_answer
from eval.stats import paired_bootstrap
from eval.suite import ForgettingTask
from eval.tasks.base import TaskContext, TaskResult

FEW_SHOT = (
    "Question: What is the chemical symbol for gold?\nAnswer: Au\n\n"
    "Question: How many legs does a spider have?\nAnswer: eight\n\n"
)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


async def run_forgetting(task: ForgettingTask, ctx: TaskContext) -> TaskResult:
    text_path, qa_path = task.text.verified(), task.qa.verified()
    paragraphs, questions = read_jsonl(text_path), read_jsonl(qa_path)
    result = TaskResult(
        name=task.name,
        kind=task.kind,
        metrics={},
        data={
            "text": {
                "path": str(text_path),
                "sha256": task.text.sha256,
                "examples": len(paragraphs),
            },
            "qa": {"path": str(qa_path), "sha256": task.qa.sha256, "examples": len(questions)},
        },
    )
    for role, model in ctx.models.items():
        tick = ctx.progress(f"{task.name}: {role} ({model})", len(paragraphs) + len(questions))

        async def log_perplexity(row: dict[str, Any], model: str = model) -> float:
            response = await ctx.gateway.openai.completions.create(
                model=model,
                prompt=row["text"],
                max_tokens=1,
                temperature=0.0,
                echo=True,
                logprobs=0,
                seed=ctx.seed,
            )
            choice, usage = response.choices[0], response.usage
            assert choice.logprobs is not None and usage is not None
            # The first prompt token (BOS) has no log-probability; the last entry is generated.
            prompt = (
                choice.logprobs.token_logprobs[1 : usage.prompt_tokens]
                if choice.logprobs.token_logprobs
                else []
            )
            values = [v for v in prompt if v is not None]
            return -sum(values) / max(1, len(values))

        async def answer(row: dict[str, Any], model: str = model) -> str:
            response = await ctx.gateway.openai.completions.create(
                model=model,
                prompt=f"{FEW_SHOT}Question: {row['question']}\nAnswer:",
                max_tokens=task.max_tokens,
                temperature=0.0,
                stop=["\n"],
                seed=ctx.seed,
            )
            return response.choices[0].text.strip()

        nll = await bounded_map(
            paragraphs, log_perplexity, concurrency=ctx.concurrency, on_done=tick
        )
        outputs = await bounded_map(questions, answer, concurrency=ctx.concurrency, on_done=tick)
        correct = [
            contains_answer(o, q["answers"]) for o, q in zip(outputs, questions, strict=True)
        ]
        for row, value in zip(paragraphs, nll, strict=True):
            result.predictions.append(
                {"task": task.name, "model": role, "id": row["id"], "log_perplexity": value}
            )
        for row, output, score in zip(questions, outputs, correct, strict=True):
            result.predictions.append(
                {
                    "task": task.name,
                    "model": role,
                    "id": row["id"],
                    "question": row["question"],
                    "answers": row["answers"],
                    "output": output,
                    "correct": score,
                }
            )
        result.metrics[role] = {
            "perplexity": math.exp(sum(nll) / len(nll)),
            "qa_accuracy": sum(correct) / len(correct),
        }
        result.per_example[role] = {"log_perplexity": list(nll), "qa_accuracy": list(correct)}
    if "base" in result.per_example and "candidate" in result.per_example:
        result.relative = relative_to_base(result)
    return result


def relative_to_base(result: TaskResult, *, seed: int = 0) -> dict[str, dict[str, float]]:
    """The candidate's perplexity increase and QA accuracy drop relative to the base, with
    paired 95% intervals (positive = worse than the base)."""
    cand, base = result.per_example["candidate"], result.per_example["base"]
    log_ratio = paired_bootstrap(cand["log_perplexity"], base["log_perplexity"], seed=seed)
    qa = paired_bootstrap(base["qa_accuracy"], cand["qa_accuracy"], seed=seed)
    base_accuracy = result.metrics["base"]["qa_accuracy"]
    scale = 1 / base_accuracy if base_accuracy > 0 else 0.0
    return {
        "perplexity_increase": {
            "value": math.expm1(log_ratio.delta),
            "low": math.expm1(log_ratio.low),
            "high": math.expm1(log_ratio.high),
        },
        "qa_accuracy_drop": {
            "value": qa.delta * scale,
            "low": qa.low * scale,
            "high": qa.high * scale,
        },
    }
