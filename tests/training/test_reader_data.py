"""Reader data: SQuAD reading, windows with token labels, hard negatives, the article split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from grounding.reader.windows import WindowSettings, clip_question, make_windows, token_span
from tests.training.reader_data import squad_json, write_squad
from training.reader.config import load_reader_config
from training.reader.squad import (
    Article,
    Question,
    SquadError,
    hard_negatives,
    read_squad,
    split_articles,
)
from training.reader.windows import Pair, build_pairs

CONFIG = Path(__file__).parents[2] / "training" / "configs" / "reader-minilm.yaml"
# The public data lies beside the repository (../shared), in CI as here.
DEV = Path(__file__).resolve().parents[3] / "shared/data/squad2-public/squad2-dev-public.json"


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from grounding.reader.model import base_model_dir, load_tokenizer

    return load_tokenizer(base_model_dir())


@pytest.fixture
def squad(tmp_path: Path) -> Path:
    return write_squad(tmp_path / "tiny.json")


def test_read_squad_keeps_questions_and_answers(squad: Path) -> None:
    articles = read_squad(squad)
    assert [a.title for a in articles][:2] == ["Orion_Vault", "Kestrel_Bridge"]
    orion = articles[0]
    assert len(orion.paragraphs) == 3 and len(orion.questions) == 5
    built = orion.questions[0]
    assert built.answerable and built.answers[0][0] == "1921"
    text, start = built.answers[0]
    assert orion.paragraphs[0][start : start + len(text)] == "1921"
    assert not orion.questions[2].answerable


def test_misaligned_answer_offsets_are_repaired(tmp_path: Path) -> None:
    data = squad_json()
    data["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] += 3
    path = tmp_path / "off.json"
    path.write_text(json.dumps(data))
    question = read_squad(path)[0].questions[0]
    context = read_squad(path)[0].paragraphs[0]
    assert context[question.answers[0][1] :].startswith("1921")


def test_a_file_that_is_not_squad_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"rows": []}')
    with pytest.raises(SquadError, match="not a SQuAD-format"):
        read_squad(path)


def test_token_span_maps_characters_to_tokens() -> None:
    offsets = [(0, 0), (0, 4), (0, 0), (0, 3), (4, 9), (10, 14), (0, 0)]
    sequence = [None, 0, None, 1, 1, 1, None]
    assert token_span(offsets, sequence, 4, 14) == (4, 5)
    assert token_span(offsets, sequence, 5, 7) == (4, 4)  # inside one token
    assert token_span(offsets, sequence, 10, 20) == (0, 0)  # runs past the window


def test_windows_label_the_answer_tokens(squad: Path, tokenizer: Any) -> None:
    articles = read_squad(squad)
    pairs = build_pairs(articles[:1], hard_negatives_per_question=0)
    windows = make_windows(tokenizer, pairs, WindowSettings(64, 16, 24))
    assert len(windows) == len(pairs)  # short paragraphs: one window each
    for window in windows:
        pair = pairs[window.pair]
        if pair.answer is None:
            assert (window.start, window.end) == (0, 0)
            continue
        offsets = window.offset_list()
        first, last = offsets[window.start], offsets[window.end]
        assert first is not None and last is not None
        assert pair.context[first[0] : last[1]] == pair.question.answers[0][0]
        assert window.context_mask[window.start] and not window.context_mask[0]


def test_a_long_context_becomes_overlapping_windows(tokenizer: Any) -> None:
    filler = " ".join(["The shelves were repainted many times over the years."] * 12)
    context = f"{filler} The Orion vault was built in 1921."
    question = Question(
        "q", "When was the Orion vault built?", 0, (("1921", context.index("1921")),)
    )
    start = context.index("1921")
    pair = Pair(question, "Orion", context, "gold", (start, start + 4))
    windows = make_windows(tokenizer, [pair], WindowSettings(48, 16, 16))
    assert len(windows) > 3
    assert all(len(w) <= 48 for w in windows)
    labelled = [w for w in windows if w.start > 0]
    assert len(labelled) == 1 and labelled[0] is windows[-1]  # only the last window holds it
    offsets = labelled[0].offset_list()
    first, last = offsets[labelled[0].start], offsets[labelled[0].end]
    assert first is not None and last is not None and context[first[0] : last[1]] == "1921"


def test_long_questions_are_clipped(tokenizer: Any) -> None:
    question = "Why " + "very " * 100 + "long?"
    clipped = clip_question(tokenizer, question, 10)
    assert len(tokenizer(clipped, add_special_tokens=False)["input_ids"]) == 10
    assert clip_question(tokenizer, "Who built it?", 10) == "Who built it?"


def test_hard_negatives_come_from_the_article_and_lack_the_answer(squad: Path) -> None:
    for article in read_squad(squad):
        for question, chosen in zip(article.questions, hard_negatives(article, 2), strict=True):
            assert question.paragraph not in chosen
            for index in chosen:
                text = article.paragraphs[index].lower()
                assert not any(a.lower() in text for a in question.answer_texts)


def test_the_most_question_like_paragraph_without_the_answer_is_the_hard_negative() -> None:
    article = Article(
        "Vault",
        (
            "The vault door was installed in 1950.",  # gold
            "Bread is baked daily in the town.",
            "The vault door was repainted blue by the keeper.",  # shares "vault", "door"
            "The vault door of 1950 is famous.",  # even closer, but holds the answer
        ),
        (Question("q", "When was the vault door installed?", 0, (("1950", 31),)),),
    )
    assert hard_negatives(article, 1) == [[2]]
    assert hard_negatives(article, 5) == [[2, 1]]


def test_pairs_are_gold_then_hard_negatives(squad: Path) -> None:
    pairs = build_pairs(read_squad(squad), hard_negatives_per_question=1)
    assert pairs[0].kind == "gold" and pairs[1].kind == "hard_negative"
    assert pairs[0].question == pairs[1].question
    assert all(p.answer is None for p in pairs if p.kind == "hard_negative")
    capped = build_pairs(read_squad(squad), hard_negatives_per_question=0, max_questions=5)
    assert len(capped) == 5


def test_split_puts_every_article_in_one_split(squad: Path) -> None:
    articles = read_squad(squad)
    assignment = {"train": ["Orion_Vault", "Kestrel_Bridge"], "validation": ["Heron_Lighthouse"]}
    splits = split_articles(articles, assignment, ["Plover_Mill"])
    assert [a.title for a in splits["train"]] == ["Orion_Vault", "Kestrel_Bridge"]
    with pytest.raises(SquadError, match="listed in train and in validation"):
        split_articles(articles, {"train": ["Orion_Vault"], "validation": ["Orion_Vault"]}, [])
    with pytest.raises(SquadError, match="in no split"):
        split_articles(articles, assignment, [])
    with pytest.raises(SquadError, match="in no data file"):
        split_articles(articles, {**assignment, "test": ["Nowhere"]}, ["Plover_Mill"])


def test_the_shipped_config_splits_by_article_without_overlap() -> None:
    config = load_reader_config(CONFIG)
    assert config.loop.dtype == "auto"  # bf16 is ~300x slower than fp32 on AVX2-only CPUs
    for line in CONFIG.read_text().splitlines():  # every setting says what it does
        setting = line.strip() and not line.lstrip().startswith(("#", "- "))
        if setting and not line.rstrip().endswith(":"):
            assert "#" in line, f"uncommented setting: {line!r}"
    splits = config.data.splits.model_dump()
    listed = [title for titles in splits.values() for title in titles]
    assert len(listed) == len(set(listed)), "an article is in two splits"


def test_the_reader_holds_out_the_adapters_raft_holdout_and_validation() -> None:
    from training.raft import RaftOptions
    from training.raft import split_articles as raft_split

    config = load_reader_config(CONFIG)
    titles = [a["title"] for a in json.loads(DEV.read_text())["data"]]
    raft = raft_split(titles, RaftOptions())  # what `build-raft --seed 0` holds out
    assert sorted(config.data.splits.test) == sorted(raft["holdout"])
    assert sorted(config.data.splits.calibration) == sorted(raft["validation"])
    trained = set(config.data.splits.train) | set(config.data.splits.validation)
    assert not trained & (set(raft["holdout"]) | set(raft["validation"]))
    # and every article of the data files is placed (the recipe refuses otherwise)
    articles = [a for path in config.data.files for a in read_squad(path)]
    split_articles(articles, config.data.splits.model_dump(), config.data.unused_articles)
