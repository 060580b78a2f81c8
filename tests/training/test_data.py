"""Reading and validating JSONL data: every problem reported with its line number."""

from __future__ import annotations

import pytest

from tests.training.conftest import FACTS, JsonlWriter, chat
from training.data import DataError, read_examples
from training.holdout import check_leakage, drop_or_refuse_duplicates
from training.render import tokenize_all


def test_chat_and_prompt_completion_records_are_read(write_jsonl: JsonlWriter) -> None:
    path = write_jsonl(
        "d.jsonl",
        [
            chat("q1", "a1", system="be brief"),
            {"prompt": "2+2=", "completion": "4", "metadata": {"kind": "math"}},
        ],
    )
    first, second = read_examples(path)
    assert [m["role"] for m in first.messages] == ["system", "user", "assistant"]
    assert second.kind == "prompt_completion"
    assert second.messages == (
        {"role": "user", "content": "2+2="},
        {"role": "assistant", "content": "4"},
    )
    assert second.metadata == {"metadata": {"kind": "math"}}


def test_invalid_data_gives_every_problem_with_its_line_number(write_jsonl: JsonlWriter) -> None:
    path = write_jsonl(
        "bad.jsonl",
        [
            chat("fine", "fine"),  # line 1
            '{"messages": [{"role": "user", "content": "unterminated"}',  # line 2
            {
                "messages": [
                    {"role": "human", "content": "hi"},
                    {"role": "assistant", "content": "x"},
                ]
            },  # line 3
            {
                "messages": [
                    {"role": "user", "content": "  "},
                    {"role": "assistant", "content": "x"},
                ]
            },  # line 4
            {"messages": [{"role": "user", "content": "no reply"}]},  # line 5
            {"text": "wrong shape"},  # line 6
        ],
    )
    with pytest.raises(DataError) as info:
        read_examples(path)
    message = str(info.value)
    assert "1 lines that are not valid JSON:\n  bad.jsonl:2:" in message
    assert "1 wrong roles:\n  bad.jsonl:3: message 0 has role 'human'" in message
    assert "1 empty turns:\n  bad.jsonl:4: message 0 (user)" in message
    assert "1 records with no assistant turn:\n  bad.jsonl:5:" in message
    assert "1 records of unknown shape:\n  bad.jsonl:6:" in message
    assert "bad.jsonl:1" not in message


def test_a_missing_file_is_named(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DataError, match="does not exist"):
        read_examples(tmp_path / "nope.jsonl")


def test_exact_duplicates_are_refused_with_their_lines(write_jsonl: JsonlWriter) -> None:
    path = write_jsonl(
        "dup.jsonl",
        [
            FACTS[0],
            FACTS[1],
            # The same example with different case, spacing and punctuation is still a duplicate.
            chat("what is the VAULT code for orion", "The vault code for Orion is 4417 KESTREL"),
        ],
    )
    examples = read_examples(path)
    with pytest.raises(DataError, match=r"1 exact duplicates.*\n  dup.jsonl:1, dup.jsonl:3"):
        drop_or_refuse_duplicates(examples, "fail")
    kept, dropped = drop_or_refuse_duplicates(examples, "drop")
    assert dropped == 1 and [e.source for e in kept] == ["dup.jsonl:1", "dup.jsonl:2"]


def test_holdout_leakage_is_refused(write_jsonl: JsonlWriter) -> None:
    train = read_examples(write_jsonl("train.jsonl", [FACTS[0], FACTS[1], FACTS[2]]))
    holdout = read_examples(
        write_jsonl(
            "holdout.jsonl",
            [
                chat("What is the vault code for LYRA?", "The vault code for Lyra is 9021-HERON!"),
                FACTS[3],
            ],
        )
    )
    with pytest.raises(
        DataError,
        match=r"1 training examples are in the frozen holdout.*"
        r"\n  train.jsonl:2 == holdout holdout.jsonl:1",
    ):
        check_leakage(train, holdout, threshold=0.8, near_policy="warn")


def test_near_duplicates_of_the_holdout_are_reported_or_refused(write_jsonl: JsonlWriter) -> None:
    long_answer = "The vault code for Orion is 4417-KESTREL, kept in the north wing since 1998."
    train = read_examples(
        write_jsonl(
            "train.jsonl",
            [
                chat("What is the vault code for Orion?", long_answer),
                FACTS[1],
            ],
        )
    )
    holdout = read_examples(
        write_jsonl(
            "holdout.jsonl",
            [
                chat("What's the vault code for Orion?", long_answer.replace("1998", "1999")),
                FACTS[2],
            ],
        )
    )
    report = check_leakage(train, holdout, threshold=0.8, near_policy="warn")
    assert report.near == 1 and report.pairs[0]["train"] == "train.jsonl:1"
    assert report.pairs[0]["holdout"] == "holdout.jsonl:1"
    assert 0.8 <= float(report.pairs[0]["similarity"]) < 1.0  # type: ignore[arg-type]
    with pytest.raises(DataError, match="near-duplicates of holdout examples"):
        check_leakage(train, holdout, threshold=0.8, near_policy="fail")


def test_too_long_examples_are_dropped_or_refused(write_jsonl: JsonlWriter, tokenizer) -> None:  # type: ignore[no-untyped-def]
    examples = read_examples(write_jsonl("d.jsonl", [FACTS[0], chat("word " * 200, "ok")]))
    kept, report = tokenize_all(examples, tokenizer, max_seq_len=64, too_long="drop")
    assert len(kept) == 1 and report.dropped_too_long == 1 and kept[0].source == "d.jsonl:1"
    with pytest.raises(
        DataError, match=r"examples longer than max_seq_len=64:\n  d.jsonl:2: \d+ tokens"
    ):
        tokenize_all(examples, tokenizer, max_seq_len=64, too_long="fail")


def test_the_template_rejecting_a_conversation_names_the_line(
    write_jsonl: JsonlWriter, tokenizer
) -> None:  # type: ignore[no-untyped-def]
    # Gemma 3's template requires alternating user/assistant turns.
    path = write_jsonl(
        "d.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "user", "content": "b"},
                    {"role": "assistant", "content": "c"},
                ]
            }
        ],
    )
    with pytest.raises(DataError, match=r"d.jsonl:1: the chat template rejected it.*alternate"):
        tokenize_all(read_examples(path), tokenizer, max_seq_len=64, too_long="fail")
