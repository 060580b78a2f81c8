"""The grounding task's data handling and scoring, without a gateway."""

from __future__ import annotations

import json
from pathlib import Path

from eval.tasks.grounding import article_documents, load_questions, score_reply, stratified_sample
from grounding.prompt import DEFAULT_ABSTENTION_MESSAGE, PromptSource, grounded_messages
from tests.training.test_raft import synthetic_squad
from training.raft import RaftOptions, build_raft


def test_questions_and_documents_come_from_the_raft_holdout(tmp_path: Path) -> None:
    corpus = tmp_path / "squad.json"
    corpus.write_text(json.dumps(synthetic_squad()))
    build_raft(corpus, tmp_path / "raft", RaftOptions(max_tokens=None))
    questions = load_questions(tmp_path / "raft" / "holdout.jsonl")
    held = json.loads((tmp_path / "raft" / "raft_build.json").read_text())["articles"]["holdout"]
    assert {q["article"] for q in questions} == set(held)
    # 2 articles x 4 paragraphs x (1 answerable + 1 impossible)
    assert len(questions) == 16 and sum(bool(q["answers"]) for q in questions) == 8
    assert all(q["question"].startswith("Which ") for q in questions)
    documents = article_documents(corpus, set(held))
    assert len(documents) == 8 and {d["title"] for d in documents} == set(held)


def test_stratified_sample_keeps_the_mix_and_is_seeded() -> None:
    questions = [{"id": f"a{i}", "answers": ["x"]} for i in range(30)] + [
        {"id": f"u{i}", "answers": []} for i in range(10)
    ]
    sample = stratified_sample(questions, 8, seed=0)
    assert len(sample) == 8 and sum(bool(q["answers"]) for q in sample) == 6
    assert sample == stratified_sample(questions, 8, seed=0)
    assert stratified_sample(questions, None, seed=0) == sorted(questions, key=lambda q: q["id"])


def reply(answer: str, status: str | None, sources: list[str]) -> dict[str, object]:
    return {"answer": answer, "grounding": {"status": status} if status else {}, "sources": sources}


def test_scoring_verdicts() -> None:
    answerable = {"id": "1", "question": "When?", "answers": ["1712"]}
    unanswerable = {"id": "2", "question": "Who?", "answers": []}
    outcome, record = score_reply(
        answerable, reply("It was 1712 [1].", "answered", ["in 1712"]), 0.5
    )
    assert (outcome.correct, record["verdict"], record["evidence_in_sources"]) == (
        True,
        "correct",
        True,
    )
    outcome, record = score_reply(answerable, reply("1850 [2]", "answered", ["no date"]), 0.5)
    assert (outcome.correct, record["verdict"], record["evidence_in_sources"]) == (
        False,
        "wrong",
        False,
    )
    _, record = score_reply(answerable, reply(DEFAULT_ABSTENTION_MESSAGE, "abstained", []), 0.5)
    assert record["verdict"] == "false_abstention"
    _, record = score_reply(unanswerable, reply("Bob [1]", "answered", ["x"]), 0.5)
    assert record["verdict"] == "hallucinated"
    # Without the gateway's verdict the answer text decides.
    outcome, record = score_reply(unanswerable, reply(DEFAULT_ABSTENTION_MESSAGE, None, []), 0.5)
    assert outcome.abstained and record["verdict"] == "abstained_correct"


def test_prompt_question_round_trips_through_the_builder_format(tmp_path: Path) -> None:
    messages = grounded_messages("What is it?", [PromptSource("Some text", "T")])
    row = {
        "messages": [*messages, {"role": "assistant", "content": "x"}],
        "metadata": {"id": "q", "article": "T", "answers": ["x"]},
    }
    path = tmp_path / "h.jsonl"
    path.write_text(json.dumps(row) + "\n")
    assert load_questions(path)[0]["question"] == "What is it?"
