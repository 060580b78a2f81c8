"""The RAFT builder on a small synthetic SQuAD 2.0 file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from grounding.prompt import DEFAULT_ABSTENTION_MESSAGE, PromptSource, grounded_messages
from training.cli import app
from training.data import read_examples
from training.raft import RaftOptions, build_raft


def synthetic_squad() -> dict[str, Any]:
    """Five articles of four paragraphs, each with one answerable and one impossible question."""
    data = []
    for a in range(5):
        paragraphs = []
        for p in range(4):
            city = f"Town{a}{p}"
            context = (
                f"Article {a} paragraph {p}. The river Flow{a}{p} passes through {city}, "
                f"which was founded in year {1000 + 10 * a + p} by settlers."
            )
            paragraphs.append(
                {
                    "context": context,
                    "qas": [
                        {
                            "id": f"q{a}{p}a",
                            "question": f"Which town does the river Flow{a}{p} pass through?",
                            "is_impossible": False,
                            "answers": [{"text": city, "answer_start": context.index(city)}] * 2,
                        },
                        {
                            "id": f"q{a}{p}u",
                            "question": f"Which bridge crosses the river Flow{a}{p}?",
                            "is_impossible": True,
                            "answers": [],
                            "plausible_answers": [
                                {"text": city, "answer_start": context.index(city)}
                            ],
                        },
                    ],
                }
            )
        data.append({"title": f"Article_{a}", "paragraphs": paragraphs})
    return {"version": "v2.0", "data": data}


def write_squad(tmp_path: Path) -> Path:
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(synthetic_squad()))
    return path


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_splits_are_by_article_and_cover_every_kind(tmp_path: Path) -> None:
    options = RaftOptions(distractors=2, p_remove_oracle=0.3, max_tokens=None, seed=3)
    report = build_raft(write_squad(tmp_path), tmp_path / "out", options)
    assert [len(report.articles[s]) for s in ("train", "validation", "holdout")] == [2, 1, 2]
    seen: dict[str, str] = {}
    for split in ("train", "validation", "holdout"):
        for record in read(tmp_path / "out" / f"{split}.jsonl"):
            article = record["metadata"]["article"]
            assert seen.setdefault(article, split) == split, "an article is in two splits"
            assert article in report.articles[split]
    train_kinds = report.counts["train"]
    assert set(train_kinds) == {"answerable", "oracle_removed", "unanswerable"}
    assert train_kinds["unanswerable"] == 8  # 2 articles x 4 paragraphs
    assert train_kinds["answerable"] + train_kinds["oracle_removed"] == 8
    # The files are valid training data for the recipe.
    assert len(read_examples(tmp_path / "out" / "train.jsonl")) == 16


def test_messages_come_from_the_gateway_prompt_and_replies_cite_the_oracle(tmp_path: Path) -> None:
    squad = synthetic_squad()
    contexts = {
        qa["id"]: (art["title"], par["context"], qa)
        for art in squad["data"]
        for par in art["paragraphs"]
        for qa in par["qas"]
    }
    build_raft(
        write_squad(tmp_path),
        tmp_path / "out",
        RaftOptions(distractors=2, p_remove_oracle=0.3, max_tokens=None, seed=3),
    )
    records = [
        r for s in ("train", "validation", "holdout") for r in read(tmp_path / "out" / f"{s}.jsonl")
    ]
    positions = set()
    for record in records:
        meta, messages = record["metadata"], record["messages"]
        title, oracle, qa = contexts[meta["id"]]
        # Rebuild the prompt with the gateway's function from the sources shown: identical.
        user = messages[1]["content"]
        blocks = user.split("Sources:\n", 1)[1].rsplit("\n\nQuestion: ", 1)[0].split("\n\n")
        sources = [PromptSource(text=b.split("\n", 1)[1], title=title) for b in blocks]
        assert messages[:2] == grounded_messages(qa["question"], sources)
        assert len(sources) == 3 and meta["num_sources"] == 3
        texts = [s.text for s in sources]
        reply = messages[2]["content"]
        if meta["kind"] == "answerable":
            n = meta["oracle_source"]
            assert texts[n - 1] == oracle and reply == f"{qa['answers'][0]['text']} [{n}]"
            positions.add(n)
            # No distractor contains the answer: the citation is unambiguous.
            assert sum(qa["answers"][0]["text"] in t for t in texts) == 1
        else:
            assert reply == DEFAULT_ABSTENTION_MESSAGE
            assert (oracle in texts) == (meta["kind"] == "unanswerable")
    assert positions == {1, 2, 3}  # the oracle's position is shuffled


def test_the_build_is_deterministic_and_seeded(tmp_path: Path) -> None:
    squad = write_squad(tmp_path)
    one = build_raft(squad, tmp_path / "a", RaftOptions(max_tokens=None, seed=5))
    two = build_raft(squad, tmp_path / "b", RaftOptions(max_tokens=None, seed=5))
    other = build_raft(squad, tmp_path / "c", RaftOptions(max_tokens=None, seed=6))
    assert one.files == two.files
    assert one.files != other.files


def test_examples_are_kept_within_max_tokens(tmp_path: Path, tokenizer: Any) -> None:
    options = RaftOptions(distractors=3, max_tokens=200, seed=1)
    report = build_raft(write_squad(tmp_path), tmp_path / "out", options, tokenizer)
    assert report.fewer_distractors > 0
    for split in ("train", "validation", "holdout"):
        for record in read(tmp_path / "out" / f"{split}.jsonl"):
            ids = tokenizer.apply_chat_template(
                record["messages"], tokenize=True, return_dict=False
            )
            assert len(ids) <= 200


def test_build_raft_cli_prints_counts_per_split_and_kind(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "build-raft",
            str(write_squad(tmp_path)),
            "--out",
            str(tmp_path / "out"),
            "--model",
            "",
            "--max-train",
            "5",
            "--p-keep-unanswerable",
            "0.5",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "answerable" in result.stdout and "unanswerable" in result.stdout
    assert len(read(tmp_path / "out" / "train.jsonl")) == 5
    build = json.loads((tmp_path / "out" / "raft_build.json").read_text())
    assert sum(build["counts"]["train"].values()) == 5
    assert len(build["source_sha256"]) == 64


def test_multi_turn_train_examples_ask_a_paragraphs_questions_over_one_set_of_sources(
    tmp_path: Path,
) -> None:
    squad_path = write_squad(tmp_path)
    one = RaftOptions(max_tokens=None, seed=3, p_remove_oracle=0.3)
    single = build_raft(squad_path, tmp_path / "one", one)
    options = RaftOptions(**{**one.__dict__, "train_turns": 4, "replay_every": 2})
    multi = build_raft(squad_path, tmp_path / "multi", options)
    # Validation and the frozen holdout are untouched: the eval's questions stay the same bytes.
    assert multi.files["holdout"] == single.files["holdout"]
    assert multi.files["validation"] == single.files["validation"]

    squad = synthetic_squad()
    by_id = {
        qa["id"]: (par["context"], qa)
        for art in squad["data"]
        for par in art["paragraphs"]
        for qa in par["qas"]
    }
    records = read(tmp_path / "multi" / "train.jsonl")
    chats = [r for r in records if "messages" in r]
    replays = [r for r in records if "prompt" in r]
    asked = []
    for record in chats:
        messages, meta = record["messages"], record["metadata"]
        ids = meta["id"].split("+")
        asked += ids
        assert [m["role"] for m in messages] == ["system", "user", "assistant"] * 1 + [
            "user",
            "assistant",
        ] * (len(ids) - 1)
        assert messages[1]["content"].startswith("Sources:\n")
        assert all(m["content"].startswith("Question: ") for m in messages[3::2])
        replies = [m["content"] for m in messages[2::2]]
        context = by_id[ids[0]][0]
        for qid, reply, kind in zip(ids, replies, meta["turn_kinds"], strict=True):
            paragraph, qa = by_id[qid]
            assert paragraph == context  # one paragraph's questions per record
            if kind == "answerable":
                assert reply == f"{qa['answers'][0]['text']} [{meta['oracle_source']}]"
            else:
                assert reply == DEFAULT_ABSTENTION_MESSAGE
        # Without the oracle every question of the record is unanswerable from its sources.
        removed = meta["kind"] == "multi_turn_oracle_removed"
        assert removed == (meta["oracle_source"] is None)
        if removed:
            assert set(replies) == {DEFAULT_ABSTENTION_MESSAGE}
            assert "answerable" not in meta["turn_kinds"]
    # Every train question is asked once, answerable and impossible alike.
    train_articles = set(multi.articles["train"])
    expected = {
        qa["id"]
        for art in squad["data"]
        if art["title"] in train_articles
        for par in art["paragraphs"]
        for qa in par["qas"]
    }
    assert sorted(asked) == sorted(expected)
    # Replay: one plain-text record per 2 chat records, the next paragraph of a train article.
    assert len(replays) == len(chats) // 2
    paragraphs = {
        par["context"]
        for art in squad["data"]
        if art["title"] in train_articles
        for par in art["paragraphs"]
    }
    assert all(r["completion"].strip() in paragraphs for r in replays)
    assert len({r["completion"] for r in replays}) == len(replays)  # never the same target twice
    assert multi.counts["train"]["replay"] == len(replays)
    assert len(read_examples(tmp_path / "multi" / "train.jsonl")) == len(records)


def test_turns_that_do_not_fit_move_to_another_record_and_every_turn_is_trained(
    tmp_path: Path, tokenizer: Any
) -> None:
    from training.render import stop_token_ids, tokenize_chat

    options = RaftOptions(distractors=3, max_tokens=260, seed=1, train_turns=8)
    report = build_raft(write_squad(tmp_path), tmp_path / "out", options, tokenizer)
    records = read(tmp_path / "out" / "train.jsonl")
    assert sum(len(r["metadata"]["id"].split("+")) for r in records) == 16  # none dropped
    examples = read_examples(tmp_path / "out" / "train.jsonl")
    stops = stop_token_ids(tokenizer)
    for record, example in zip(records, examples, strict=True):
        ids = tokenizer.apply_chat_template(record["messages"], tokenize=True, return_dict=False)
        assert len(ids) <= 260
        item = tokenize_chat(example, tokenizer, stops)
        # Every assistant turn is labelled, and only assistant turns: their text round-trips.
        trained = tokenizer.decode([t for t in item.labels if t != -100])
        for message in record["messages"][2::2]:
            assert message["content"] in trained
        assert "Question:" not in trained
    assert report.counts["train"]["unanswerable"] == 8
