"""`ragdock eval calibrate`: fit a grounded adapter's answerability calibration on its RAFT
validation articles, through the real RAG path, and write it into the adapter's manifest.

Every question of the validation articles (answerable and impossible) is asked through the gateway
with retrieval on and the support check off. The answerability threshold is set to 0: for an
adapter calibrated before, a reply that begins to abstain is then asked again, so every question
gets an answer whose confidence and support can be measured; an uncalibrated adapter answers as
it would (its first-token signals, which the fit uses, are the same either way). The signals
the gateway reports are fitted (`eval.answerability`), and the manifest gains a `calibration`
block the gateway reads on the next push; a PNG of the trade-off curve with the chosen point goes
beside it.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eval.answerability import fit_calibration, plot_tradeoff
from eval.gateway import EvalGateway, bounded_map
from eval.metrics.text import contains_answer, token_f1
from eval.tasks.grounding import article_documents, ingest
from grounding.prompt import is_abstention
from ragdock.contracts.adapter_manifest import (
    MANIFEST_FILE,
    AdapterManifest,
    CalibrationBlock,
    CalibrationFit,
    read_adapter_manifest,
)

CURVE_PNG = "calibration.png"
ROWS_FILE = "calibration_rows.jsonl"


def validation_questions(raft_dir: Path, corpus: Path) -> tuple[list[dict[str, Any]], set[str]]:
    """Every question of the RAFT build's validation articles, from the corpus itself (the
    validation JSONL is a capped sample; calibration wants all of them)."""
    build = json.loads((raft_dir / "raft_build.json").read_text())
    articles = set(build["articles"]["validation"])
    data = json.loads(corpus.read_text(encoding="utf-8"))["data"]
    questions = []
    for article in data:
        if article["title"] not in articles:
            continue
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers = sorted({a["text"] for a in qa.get("answers", [])})
                impossible = bool(qa.get("is_impossible")) or not answers
                questions.append(
                    {
                        "id": qa["id"],
                        "question": qa["question"],
                        "answers": [] if impossible else answers,
                    }
                )
    return sorted(questions, key=lambda q: q["id"]), articles


async def collect_rows(
    gateway: EvalGateway,
    model: str,
    questions: list[dict[str, Any]],
    *,
    collection: str,
    top_k: int,
    max_tokens: int,
    concurrency: int,
    on_done: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """Ask every question and keep what calibration reads from each reply."""
    rag = {"collection": collection, "top_k": top_k, "min_answerability": 0.0, "min_support": 0.0}

    async def ask(question: dict[str, Any]) -> dict[str, Any]:
        response = await gateway.openai.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": question["question"]}],
            temperature=0.0,
            max_tokens=max_tokens,
            logprobs=True,
            extra_body={"rag": rag},
        )
        extra = response.model_extra or {}
        grounding = extra.get("grounding") or {}
        info = grounding.get("answerability") or {}
        answer = response.choices[0].message.content or ""
        abstained = is_abstention(answer)
        choice_logprobs = response.choices[0].logprobs
        tokens = (choice_logprobs.content or []) if choice_logprobs else []
        logprobs = [t.logprob for t in tokens if t.logprob is not None and math.isfinite(t.logprob)]
        support = grounding.get("support") or {}
        answers = question["answers"]
        return {
            "id": question["id"],
            "answerable": bool(answers),
            "p_abstain": info.get("p_abstain", 0.0),
            "question_coverage": info.get("question_coverage", 0.0),
            "top_score": grounding.get("top_score"),
            "model_abstained": bool(info.get("reasked")) or abstained,
            "answer": answer,
            "answer_logprob": sum(logprobs) / len(logprobs) if logprobs and not abstained else None,
            "support_overlap": support.get("overlap") if not abstained else None,
            "correct": bool(answers)
            and not abstained
            and (contains_answer(answer, answers) == 1.0 or token_f1(answer, answers) >= 0.5),
        }

    return await bounded_map(questions, ask, concurrency=concurrency, on_done=on_done)


def write_calibration(
    adapter_dir: Path,
    rows: list[dict[str, Any]],
    *,
    model: str,
    articles: list[str],
    corpus: Path,
    top_k: int,
    target_hallucination: float,
    max_false_abstention: float,
) -> CalibrationBlock:
    """Fit on `rows` and write the manifest's `calibration` block, the rows and the curve.

    Raises:
        FileNotFoundError: the adapter has no manifest.
        ContractError: its manifest is not one this version reads.
    """
    manifest = _manifest(adapter_dir)
    calibration = fit_calibration(
        rows, target_hallucination, max_false_abstention=max_false_abstention
    )
    block = calibration.to_manifest(
        CalibrationFit(
            at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            model=model,
            articles=articles,
            corpus=str(corpus),
            top_k=top_k,
        )
    )
    manifest.calibration = block
    manifest.write(adapter_dir)  # by rename: a kill mid-write leaves the old manifest whole
    with (adapter_dir / ROWS_FILE).open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps({k: v for k, v in row.items() if k != "answer"}) + "\n")
    chosen = {
        "validation": {"threshold": calibration.threshold, **block.validation["at_threshold"]}
    }
    plot_tradeoff(
        {"validation": block.validation["curve"]},
        chosen,
        adapter_dir / CURVE_PNG,
        f"{model}: answerability threshold (target hallucination {target_hallucination:.2f})",
    )
    return block


def _manifest(adapter_dir: Path) -> AdapterManifest:
    manifest = read_adapter_manifest(adapter_dir)
    if manifest is None:
        raise FileNotFoundError(f"{adapter_dir / MANIFEST_FILE} does not exist")
    return manifest


def refit(
    adapter_dir: Path, *, target_hallucination: float, max_false_abstention: float
) -> CalibrationBlock:
    """Fit again from the rows a previous `calibrate` saved (another target, no requests).

    Raises:
        FileNotFoundError: the adapter has no saved rows.
        KeyError: its manifest has no calibration to take the provenance from.
    """
    rows = [json.loads(line) for line in (adapter_dir / ROWS_FILE).read_text().splitlines()]
    block = _manifest(adapter_dir).calibration
    if block is None or block.fitted is None:
        raise KeyError(f"{adapter_dir / MANIFEST_FILE} records no fitted calibration")
    fitted = block.fitted
    return write_calibration(
        adapter_dir,
        rows,
        model=fitted.model,
        articles=fitted.articles,
        corpus=Path(fitted.corpus),
        top_k=fitted.top_k,
        target_hallucination=target_hallucination,
        max_false_abstention=max_false_abstention,
    )


async def calibrate(
    gateway: EvalGateway,
    *,
    model: str,
    raft_dir: Path,
    corpus: Path,
    adapter_dir: Path,
    target_hallucination: float,
    max_false_abstention: float,
    top_k: int,
    max_tokens: int,
    concurrency: int,
    progress: Callable[[str, int], Callable[[], None]],
) -> CalibrationBlock:
    """Collect, fit, and write the calibration into `adapter_dir`'s manifest.

    Raises:
        FileNotFoundError: the adapter has no manifest.
        ValueError: too few questions of a class to calibrate on.
        GatewayError: the gateway refused or failed a request.
    """
    _manifest(adapter_dir)  # fail before any request if it is missing or malformed
    name, _, selector = model.partition("@")
    if selector:  # NAME@latest and aliases: the served version's own name
        record = await gateway.adapter_version(name, selector, await gateway.adapter_summary(name))
        model = str(record["model"])
    questions, articles = validation_questions(raft_dir, corpus)
    documents = article_documents(corpus, articles)
    collection = "calibration-" + "-".join(sorted(articles))[:40].lower().replace("_", "-")
    await ingest(gateway, collection, documents)
    rows = await collect_rows(
        gateway,
        model,
        questions,
        collection=collection,
        top_k=top_k,
        max_tokens=max_tokens,
        concurrency=concurrency,
        on_done=progress(f"calibrating {model}", len(questions)),
    )
    return write_calibration(
        adapter_dir,
        rows,
        model=model,
        articles=sorted(articles),
        corpus=corpus,
        top_k=top_k,
        target_hallucination=target_hallucination,
        max_false_abstention=max_false_abstention,
    )
