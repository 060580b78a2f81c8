"""Do the generator's own signals add to the reader's decision? Measured through a gateway with
a reader, on articles of a SQuAD-format corpus (the calibration articles, never the holdout).

Every question is asked with the gates at 0 and `answer_mode: generate` (support check off), so
each reaches the generator, and the reply keeps both the generated answer and the reader's
verdict. Against "a retrieved source holds a gold answer" it prints the AUROC of each signal
(reader probability and margin, top similarity, generator/reader agreement, support overlap, the
generator not abstaining) and of a logistic regression with and without the generator's three,
5-fold cross-validated.

    python -m eval.generator_signals --gateway http://127.0.0.1:8000 --model grounded@v1 \\
        --corpus ../shared/data/squad2-public/squad2-dev-public.json --records out.jsonl
    python -m eval.generator_signals --from-records out.jsonl      # the table again, no gateway
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eval.answerability import auroc
from eval.gateway import EvalGateway, bounded_map
from eval.metrics.text import contains_answer, token_f1
from eval.reader_decision import holds_answer
from eval.tasks.grounding import article_documents, ingest
from grounding.prompt import is_abstention

CALIBRATION = ("Computational_complexity_theory", "Huguenot", "Force")
GATES_OFF = {"answer_mode": "generate", "min_answerability": 0.0, "min_score": 0.0,
             "min_support": 0.0}  # fmt: skip
SIGNALS = ("probability", "margin", "top_similarity", "agreement", "support_overlap", "generated")
GENERATOR_SIGNALS = ("agreement", "support_overlap", "generated")


def questions_of(corpus: Path, articles: set[str], limit: int, seed: int) -> list[dict[str, Any]]:
    """Up to `limit` seeded questions of the articles: id, question, gold answers ([]: none)."""
    out = []
    for article in json.loads(corpus.read_text(encoding="utf-8"))["data"]:
        if article["title"] not in articles:
            continue
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers = [] if qa.get("is_impossible") else [a["text"] for a in qa["answers"]]
                out.append({"id": qa["id"], "question": qa["question"], "answers": answers})
    random.Random(seed).shuffle(out)
    return out[:limit]


def row_of(record: dict[str, Any]) -> dict[str, Any]:
    """The label and the signals of one asked question."""
    grounding = record.get("grounding") or {}
    reader = grounding.get("reader") or {}
    generated = re.sub(r"\[\d+\]", "", record["answer"]).strip()
    span = reader.get("span") or ""
    abstained = is_abstention(record["answer"]) or grounding.get("status") == "abstained"
    answers = record["answers"]
    return {
        "holds": holds_answer(answers, record["sources"]),
        "generated_right": bool(answers) and not abstained
        and (contains_answer(generated, answers) == 1.0 or token_f1(generated, answers) >= 0.5),
        "probability": reader.get("probability") or 0.0,
        "margin": reader.get("margin") if reader.get("margin") is not None else -30.0,
        "top_similarity": grounding.get("top_score") or 0.0,
        "agreement": token_f1(generated, [span]) if span and not abstained else 0.0,
        "support_overlap": (grounding.get("support") or {}).get("overlap") or 0.0,
        "generated": 0.0 if abstained else 1.0,
    }  # fmt: skip


def cross_validated_auroc(rows: Sequence[dict[str, Any]], features: Sequence[str]) -> float:
    """AUROC of a logistic regression over `features`, each row scored by a model not fitted on
    it (5 folds)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    x = [[row[f] for f in features] for row in rows]
    y = [row["holds"] for row in rows]
    scores = cross_val_predict(
        LogisticRegression(max_iter=1000), x, y, cv=5, method="predict_proba"
    )
    return auroc(y, list(scores[:, 1])) or 0.0


def report(records: Sequence[dict[str, Any]]) -> str:
    """The markdown table of signals and their AUROCs, with the counts it rests on."""
    rows = [row_of(r) for r in records]
    labels = [r["holds"] for r in rows]
    lines = [
        f"{len(rows)} questions, {sum(labels)} with a gold answer in a retrieved source; the "
        f"generator abstained on {sum(r['generated'] == 0.0 for r in rows)} and was right on "
        f"{sum(r['generated_right'] for r in rows)}",
        "",
        "| signal | AUROC |",
        "| --- | --- |",
    ]
    for name in SIGNALS:
        lines.append(f"| {name} | {auroc(labels, [r[name] for r in rows]) or 0.0:.3f} |")
    reader_only = ["probability", "margin", "top_similarity"]
    with_generator = [*reader_only, *GENERATOR_SIGNALS]
    lines.append(f"| logistic, 5-fold CV: reader + retrieval | "
                 f"{cross_validated_auroc(rows, reader_only):.3f} |")  # fmt: skip
    lines.append(f"| logistic, 5-fold CV: + the generator's signals | "
                 f"{cross_validated_auroc(rows, with_generator):.3f} |")  # fmt: skip
    return "\n".join(lines)


async def collect(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Ask every question through the gateway with the gates off; one record per question."""
    articles = set(args.articles.split(","))
    questions = questions_of(args.corpus, articles, args.questions, args.seed)
    async with EvalGateway(args.gateway, os.environ.get("RAGDOCK_API_KEY")) as gateway:
        await ingest(gateway, args.collection, article_documents(args.corpus, articles))

        async def ask(question: dict[str, Any]) -> dict[str, Any]:
            response = await gateway.openai.chat.completions.create(
                model=args.model,
                messages=[{"role": "user", "content": question["question"]}],
                temperature=0.0,
                max_tokens=args.max_tokens,
                extra_body={"rag": {"collection": args.collection, "top_k": args.top_k,
                                    **GATES_OFF}},
            )  # fmt: skip
            extra = response.model_extra or {}
            return {
                **question,
                "answer": response.choices[0].message.content or "",
                "grounding": extra.get("grounding") or {},
                "sources": [s.get("text", "") for s in extra.get("sources") or []],
            }

        return await bounded_map(questions, ask, concurrency=args.concurrency)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--gateway", default=os.environ.get("RAGDOCK_GATEWAY_URL", "http://127.0.0.1:8000")
    )
    parser.add_argument("--model", default="grounded@v1")
    parser.add_argument("--corpus", type=Path)
    parser.add_argument("--articles", default=",".join(CALIBRATION))
    parser.add_argument("--collection", default="generator-signals")
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--records", type=Path, help="write every asked question here (JSONL)")
    parser.add_argument("--from-records", type=Path, help="report on these records, ask nothing")
    args = parser.parse_args(argv)
    if args.from_records:
        lines = args.from_records.read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
    else:
        if args.corpus is None:
            parser.error("--corpus is needed to ask questions (or --from-records)")
        records = asyncio.run(collect(args))
        if args.records:
            args.records.write_text("".join(json.dumps(r) + "\n" for r in records))
    print(report(records))


if __name__ == "__main__":
    main()
