"""Generation without retrieval: the prompt is given whole (for RAFT data, the sources are already
in it), so this scores what the model writes, separately from what retrieval finds."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from eval.gateway import bounded_map
from eval.metrics import structured, text
from eval.suite import GenerationTask, SuiteError
from eval.tasks.base import TaskContext, TaskResult

TEXT_METRICS: dict[str, Callable[[str, Sequence[str]], float]] = {
    "exact_match": text.exact_match,
    "token_f1": text.token_f1,
    "rouge_l": text.rouge_l,
    "chrf": text.chrf,
}


def load_examples(path: Path, limit: int | None) -> list[dict[str, Any]]:
    """Chat rows (`messages` ending with the assistant's reference) or prompt/reference rows.

    Raises:
        SuiteError: a row is neither, naming its line.
    """
    examples = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            if "messages" in row and row["messages"] and row["messages"][-1]["role"] == "assistant":
                messages, reference = row["messages"][:-1], row["messages"][-1]["content"]
            elif "prompt" in row and "reference" in row:
                messages = [{"role": "user", "content": row["prompt"]}]
                reference = row["reference"]
            else:
                raise SuiteError(
                    f"{path}:{number}: expected `messages` ending with an assistant "
                    "turn, or `prompt` and `reference`"
                )
            example_id = str((row.get("metadata") or {}).get("id", row.get("id", number)))
            examples.append({"id": example_id, "messages": messages, "reference": reference})
            if limit and len(examples) >= limit:
                break
    return examples


async def run_generation(task: GenerationTask, ctx: TaskContext) -> TaskResult:
    path = task.data.verified()
    examples = load_examples(path, task.max_examples)
    schema = json.loads(task.json_schema.verified().read_text()) if task.json_schema else None
    result = TaskResult(
        name=task.name,
        kind=task.kind,
        metrics={},
        data={"data": {"path": str(path), "sha256": task.data.sha256, "examples": len(examples)}},
    )
    for role, model in ctx.models.items():
        tick = ctx.progress(f"{task.name}: {role} ({model})", len(examples))

        async def generate(example: dict[str, Any], model: str = model) -> str:
            response = await ctx.gateway.openai.chat.completions.create(
                model=model,
                messages=example["messages"],
                temperature=0.0,
                seed=ctx.seed,
                max_tokens=task.max_tokens,
            )
            return response.choices[0].message.content or ""

        outputs = await bounded_map(examples, generate, concurrency=ctx.concurrency, on_done=tick)
        scores: dict[str, list[float | None]] = {m: [] for m in task.metrics}
        for example, output in zip(examples, outputs, strict=True):
            record: dict[str, Any] = {
                "task": task.name,
                "model": role,
                "id": example["id"],
                "reference": example["reference"],
                "output": output,
            }
            for metric in task.metrics:
                value = TEXT_METRICS[metric](output, [example["reference"]])
                scores[metric].append(value)
                record[metric] = value
            if task.json_schema is not None:
                record["json_validity"] = structured.json_validity(output, schema)
                scores.setdefault("json_validity", []).append(record["json_validity"])
            if task.labels:
                record["label"] = structured.extract_label(output, task.labels)
                scores.setdefault("label_correct", []).append(
                    float(record["label"] == example["reference"])
                )
            result.predictions.append(record)
        metrics = {
            m: sum(v for v in values if v is not None) / max(1, len(values))
            for m, values in scores.items()
        }
        if task.labels:
            mine = [p for p in result.predictions if p["model"] == role]
            predicted, gold = [p["label"] for p in mine], [p["reference"] for p in mine]
            metrics["accuracy"] = structured.accuracy(predicted, gold)
            metrics["macro_f1"] = structured.macro_f1(predicted, gold, task.labels)
        result.metrics[role] = metrics
        result.per_example[role] = scores
    primary = task.metrics[-1] if task.metrics else None
    if primary:
        worst = sorted(
            (p for p in result.predictions if p["model"] == "candidate"), key=lambda p: p[primary]
        )
        result.failures = worst[:10]
    return result
