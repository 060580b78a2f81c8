"""The reader's ablation through a running gateway: the same held-out questions asked under
several `rag` settings (answer modes, thresholds), each scored as the eval suite scores grounding
(`eval.tasks.grounding.score_reply`), with 95% bootstrap intervals over questions.

    python -m eval.reader_ablation --gateway http://127.0.0.1:8000 --model grounded@1 \
        --holdout runs/raft-squad2/holdout.jsonl --corpus SQUAD.json \
        --setting 'auto={"answer_mode": "auto"}' --setting 'extract={"answer_mode": "extract"}'

A setting is NAME=JSON merged into the request's `rag`. A gateway without a reader is measured
the same way (its rows are the "adapter alone" line); run it once per gateway and put the tables
side by side: every row is on the same seeded sample of questions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.gateway import EvalGateway, bounded_map
from eval.metrics.grounding import GroundingOutcome, grounding_metrics
from eval.tasks.grounding import (
    article_documents,
    ingest,
    load_questions,
    score_reply,
    stratified_sample,
)

METRICS = ("token_f1", "hallucination", "false_abstention", "crag_score")


def interval(
    values: Sequence[float], *, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile 95% interval of the mean, resampling questions."""
    if not values:
        return (0.0, 0.0)
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    return means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def summarize(outcomes: list[GroundingOutcome], records: list[dict[str, Any]]) -> dict[str, Any]:
    """The rates with intervals (F1 over answerable questions, abstentions counting 0)."""
    rates = grounding_metrics(outcomes)
    per = {
        "token_f1": [r["token_f1"] or 0.0 for r in records if r["answers"]],
        "hallucination": [0.0 if o.abstained else 1.0 for o in outcomes if not o.answerable],
        "false_abstention": [1.0 if o.abstained else 0.0 for o in outcomes if o.answerable],
        "crag_score": [o.crag for o in outcomes],
    }
    out: dict[str, Any] = {"questions": len(outcomes), "answerable": int(rates["answerable"])}
    for name in METRICS:
        values = per[name]
        out[name] = sum(values) / len(values) if values else 0.0
        out[f"{name}_ci"] = interval(values)
    out["outcomes"] = {}
    for record in records:
        key = record.get("outcome") or record["verdict"]
        out["outcomes"][key] = out["outcomes"].get(key, 0) + 1
    return out


async def measure(
    gateway: EvalGateway,
    *,
    model: str,
    questions: list[dict[str, Any]],
    collection: str,
    settings: dict[str, dict[str, Any]],
    top_k: int,
    max_tokens: int,
    concurrency: int,
) -> dict[str, dict[str, Any]]:
    results = {}
    for name, extra in settings.items():
        rag = {"collection": collection, "top_k": top_k, **extra}

        async def ask(question: dict[str, Any], rag: dict[str, Any] = rag) -> dict[str, Any]:
            response = await gateway.openai.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": question["question"]}],
                temperature=0.0,
                max_tokens=max_tokens,
                extra_body={"rag": rag},
            )
            extra_fields = response.model_extra or {}
            return {
                "answer": response.choices[0].message.content or "",
                "grounding": extra_fields.get("grounding") or {},
                "sources": [s.get("text", "") for s in extra_fields.get("sources") or []],
            }

        replies = await bounded_map(questions, ask, concurrency=concurrency)
        outcomes, records = [], []
        for question, reply in zip(questions, replies, strict=True):
            outcome, record = score_reply(question, reply, 0.5)
            record["outcome"] = reply["grounding"].get("outcome")
            outcomes.append(outcome)
            records.append(record)
        results[name] = summarize(outcomes, records)
        print(f"{name}: {json.dumps({k: results[name][k] for k in METRICS})}", flush=True)
    return results


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| setting | token F1 | hallucination | false abstention | CRAG | outcomes |",
             "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for name, row in results.items():
        cells = [
            f"{row[m]:.3f} [{row[m + '_ci'][0]:.3f}, {row[m + '_ci'][1]:.3f}]" for m in METRICS
        ]
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(row["outcomes"].items()))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {outcomes} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--gateway", default=os.environ.get("RAGDOCK_GATEWAY_URL", "http://127.0.0.1:8000")
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--holdout", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--collection", default="ablation-squad-holdout")
    parser.add_argument("--setting", action="append", default=[], help="NAME=JSON (repeatable)")
    parser.add_argument("--max-questions", type=int, default=200)
    parser.add_argument("--top-k", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="Write the results here.")
    parser.add_argument("--no-default", action="store_true", help="Only the --setting rows.")
    args = parser.parse_args(argv)
    settings: dict[str, dict[str, Any]] = {} if args.no_default else {"default": {}}
    for item in args.setting:
        name, _, raw = item.partition("=")
        settings[name] = json.loads(raw)
    questions = stratified_sample(load_questions(args.holdout), args.max_questions, args.seed)

    async def run() -> dict[str, dict[str, Any]]:
        async with EvalGateway(args.gateway, os.environ.get("RAGDOCK_API_KEY")) as gateway:
            documents = article_documents(args.corpus, {q["article"] for q in questions})
            await ingest(gateway, args.collection, documents)
            return await measure(
                gateway, model=args.model, questions=questions, collection=args.collection,
                settings=settings, top_k=args.top_k, max_tokens=args.max_tokens,
                concurrency=args.concurrency,
            )  # fmt: skip

    results = asyncio.run(run())
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
