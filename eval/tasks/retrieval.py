"""Retrieval on BEIR qrels through the gateway's own search code (`Retriever.search` with the
default hybrid fusion), scored without any model in the loop."""

from __future__ import annotations

import asyncio

from eval.retrieval_beir import evaluate_beir, reference_fusions
from eval.suite import RetrievalTask
from eval.tasks.base import TaskContext, TaskResult

METRICS = ("ndcg@10", "mrr@10", "recall@1", "recall@5", "recall@10", "recall@100")


async def run_retrieval(task: RetrievalTask, ctx: TaskContext) -> TaskResult:
    tick = ctx.progress(f"{task.name}: ingest + search {task.beir.name}", 1)
    default_label, default_fusion = reference_fusions()[0]
    report = await asyncio.to_thread(
        evaluate_beir,
        task.beir,
        split=task.split,
        fusions=[(default_label, default_fusion)],
        cache_dir=task.cache_dir,
        max_queries=task.max_queries,
    )
    tick()
    hybrid = report.metrics[default_label]
    metrics = {m: hybrid[m] for m in METRICS if m in hybrid}
    for mode in ("dense", "sparse"):
        metrics.update(
            {f"{mode}.{m}": report.metrics[mode][m] for m in METRICS if m in report.metrics[mode]}
        )
    return TaskResult(
        name=task.name,
        kind=task.kind,
        metrics={"system": metrics},
        data={
            "beir": {
                "path": str(task.beir),
                "queries": report.settings["queries"],
                "documents": report.settings["documents"],
            }
        },
        notes=[f"hybrid = {default_label}; same Retriever.search the gateway runs"],
    )
