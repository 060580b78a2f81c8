"""Grounding through the real RAG path: ingest the holdout articles, ask their questions with
retrieval on, and score answers and abstentions.

Questions come from the frozen RAFT holdout (its `metadata`: id, article, answers); the collection
holds every paragraph of those articles from the SQuAD-format corpus, titled as the RAFT builder
titles its sources, so the gateway's prompt matches the one the adapter was trained on. Whether a
question is answerable is SQuAD's judgement (it has reference answers or not); retrieval, not the
builder, decides which paragraphs the model sees.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from eval.answerability import auroc, rates_at, signal_aurocs, tradeoff_curve
from eval.gateway import EvalGateway, GatewayError, bounded_map
from eval.metrics.grounding import GroundingOutcome, grounding_metrics, per_example_scores
from eval.metrics.text import contains_answer, exact_match, normalize_answer, token_f1
from eval.suite import GroundingTask
from eval.tasks.base import TaskContext, TaskResult
from grounding.prompt import is_abstention

INGEST_BATCH = 200


def load_questions(path: Path) -> list[dict[str, Any]]:
    """Unique questions of a RAFT JSONL file: id, article, question text, answers."""
    questions: dict[str, dict[str, Any]] = {}
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            row = json.loads(line)
            meta = row["metadata"]
            text = row["messages"][-2]["content"].rsplit("Question:", 1)[-1].strip()
            questions.setdefault(
                meta["id"],
                {
                    "id": meta["id"],
                    "article": meta["article"],
                    "question": text,
                    "answers": meta["answers"],
                },
            )
    return list(questions.values())


def stratified_sample(
    questions: list[dict[str, Any]], limit: int | None, seed: int
) -> list[dict[str, Any]]:
    """At most `limit` questions keeping the answerable/unanswerable mix; seeded, stable order."""
    if limit is None or limit >= len(questions):
        return sorted(questions, key=lambda q: q["id"])
    rng = random.Random(seed)
    answerable = [q for q in questions if q["answers"]]
    unanswerable = [q for q in questions if not q["answers"]]
    take = round(limit * len(answerable) / len(questions))
    picked = rng.sample(answerable, take) + rng.sample(unanswerable, limit - take)
    return sorted(picked, key=lambda q: q["id"])


def article_documents(corpus: Path, articles: set[str]) -> list[dict[str, Any]]:
    """Every paragraph of the named articles as a gateway document (one paragraph each)."""
    data = json.loads(corpus.read_text(encoding="utf-8"))["data"]
    documents = []
    for article in data:
        if article["title"] not in articles:
            continue
        for number, paragraph in enumerate(article["paragraphs"]):
            documents.append(
                {
                    "id": f"{article['title']}#{number}",
                    "title": article["title"],
                    "text": paragraph["context"],
                    "content_type": "text/plain",
                    "metadata": {"article": article["title"]},
                }
            )
    return documents


async def ingest(gateway: EvalGateway, collection: str, documents: list[dict[str, Any]]) -> None:
    """Create the collection if needed and (re)ingest; unchanged documents cost nothing."""
    existing = {c["name"] for c in (await gateway.call("GET", "/collections"))["data"]}
    if collection not in existing:
        await gateway.call("POST", "/collections", json={"name": collection})
    for start in range(0, len(documents), INGEST_BATCH):
        batch = documents[start : start + INGEST_BATCH]
        await gateway.call(
            "POST", f"/collections/{collection}/documents", json={"documents": batch}
        )


async def run_grounding(task: GroundingTask, ctx: TaskContext) -> TaskResult:
    holdout, corpus = task.holdout.verified(), task.corpus.verified()
    questions = load_questions(holdout)
    sample = stratified_sample(questions, task.max_questions, ctx.seed)
    documents = article_documents(corpus, {q["article"] for q in questions})
    if not documents:
        raise GatewayError(f"none of the holdout's articles is in {corpus}")
    await ingest(ctx.gateway, task.collection, documents)

    result = TaskResult(
        name=task.name,
        kind=task.kind,
        metrics={},
        data={
            "holdout": {
                "path": str(holdout),
                "sha256": task.holdout.sha256,
                "examples": len(sample),
                "questions_in_file": len(questions),
            },
            "corpus": {
                "path": str(corpus),
                "sha256": task.corpus.sha256,
                "documents": len(documents),
            },
        },
    )
    rag: dict[str, Any] = {"collection": task.collection}
    if task.top_k:
        rag["top_k"] = task.top_k
    for option in ("min_answerability", "min_support"):
        if getattr(task, option) is not None:
            rag[option] = getattr(task, option)
    for role, model in ctx.models.items():
        tick = ctx.progress(f"{task.name}: {role} ({model})", len(sample))

        async def ask(question: dict[str, Any], model: str = model) -> dict[str, Any]:
            response = await ctx.gateway.openai.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": question["question"]}],
                temperature=0.0,
                seed=ctx.seed,
                max_tokens=task.max_tokens,
                extra_body={"rag": rag},
            )
            extra = response.model_extra or {}
            return {
                "answer": response.choices[0].message.content or "",
                "grounding": extra.get("grounding") or {},
                "sources": [s.get("text", "") for s in extra.get("sources") or []],
            }

        replies = await bounded_map(sample, ask, concurrency=ctx.concurrency, on_done=tick)
        outcomes = []
        for question, reply in zip(sample, replies, strict=True):
            outcome, record = score_reply(question, reply, task.correct_f1)
            outcomes.append(outcome)
            result.predictions.append({"task": task.name, "model": role, **record})
        mine = result.predictions[-len(sample) :]
        result.metrics[role] = {**grounding_metrics(outcomes), **_answer_quality(mine)}
        result.per_example[role] = {
            **per_example_scores(outcomes),
            "exact_match": [p["exact_match"] for p in mine],
            "token_f1": [p["token_f1"] for p in mine],
        }
        result.data.setdefault("answerability", {})[role] = answerability_summary(mine)
    result.failures = [
        p
        for p in result.predictions
        if p["model"] == "candidate"
        and p["verdict"] in ("hallucinated", "wrong", "false_abstention")
    ][:20]
    return result


def score_reply(
    question: dict[str, Any], reply: dict[str, Any], correct_f1: float
) -> tuple[GroundingOutcome, dict[str, Any]]:
    answers: list[str] = question["answers"]
    answer = reply["answer"]
    status = reply["grounding"].get("status")
    abstained = status == "abstained" if status else is_abstention(answer)
    f1 = token_f1(answer, answers) if answers else 0.0
    correct = (
        bool(answers)
        and not abstained
        and (contains_answer(answer, answers) == 1.0 or f1 >= correct_f1)
    )
    verdict = (
        ("abstained_correct" if abstained else "hallucinated")
        if not answers
        else ("false_abstention" if abstained else ("correct" if correct else "wrong"))
    )
    evidence = bool(answers) and any(
        normalize_answer(a) in normalize_answer(s) for a in answers for s in reply["sources"]
    )
    record = {
        "id": question["id"],
        "question": question["question"],
        "answers": answers,
        "output": answer,
        "verdict": verdict,
        "reason": reply["grounding"].get("reason"),
        "top_score": reply["grounding"].get("top_score"),
        "evidence_in_sources": evidence,
        "exact_match": exact_match(answer, answers) if answers else None,
        "token_f1": f1 if answers else None,
        **_decision_record(reply["grounding"]),
    }
    return GroundingOutcome(answerable=bool(answers), abstained=abstained, correct=correct), record


def _decision_record(grounding: dict[str, Any]) -> dict[str, Any]:
    """What the gateway's answer-or-abstain decision saw (absent for retrieval-gate abstentions)."""
    info = grounding.get("answerability") or {}
    support = grounding.get("support") or {}
    return {
        "p_abstain": info.get("p_abstain"),
        "question_coverage": info.get("question_coverage"),
        "answerability_score": info.get("score"),
        "answerability_threshold": info.get("threshold"),
        "reasked": bool(info.get("reasked")),
        "support_overlap": support.get("overlap"),
        "supported": support.get("supported"),
    }


def answerability_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """How well each signal separates answerable from unanswerable questions on this set, and
    (for a calibrated model) the trade-off its score offers as the threshold moves."""
    rows = [
        {
            "answerable": bool(r["answers"]),
            "p_abstain": r["p_abstain"],
            "question_coverage": r["question_coverage"],
            "top_score": r["top_score"],
            "support_overlap": r["support_overlap"],
        }
        for r in records
        if r.get("p_abstain") is not None
    ]
    summary: dict[str, Any] = {"questions": len(rows), "signals": signal_aurocs(rows)}
    scored = [r for r in records if r.get("answerability_score") is not None]
    if scored:
        labels = [bool(r["answers"]) for r in scored]
        scores = [float(r["answerability_score"]) for r in scored]
        summary["score_auroc"] = auroc(labels, scores)
        summary["curve"] = tradeoff_curve(labels, scores)
        # A threshold exists where one was applied (an enforced calibration or an override).
        applied = [r["answerability_threshold"] for r in scored]
        if applied[0] is not None:
            summary["threshold"] = float(applied[0])
            summary["at_threshold"] = rates_at(labels, scores, float(applied[0]))
    return summary


def _answer_quality(records: list[dict[str, Any]]) -> dict[str, float]:
    """EM and F1 over answerable questions, and how often retrieval surfaced the evidence."""
    mine = [r for r in records if r["answers"]]
    if not mine:
        return {}
    return {
        "exact_match": sum(p["exact_match"] for p in mine) / len(mine),
        "token_f1": sum(p["token_f1"] for p in mine) / len(mine),
        "evidence_in_sources": sum(p["evidence_in_sources"] for p in mine) / len(mine),
    }
