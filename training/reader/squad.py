"""SQuAD-format files as articles, an article-level split, and synthesized hard negatives.

Any file in SQuAD's JSON format (1.1 or 2.0) is read: `data[].title`, `data[].paragraphs[].context`,
`qas[]` with `question`, `id`, `answers[{text, answer_start}]`, and for 2.0 `is_impossible` and
`plausible_answers`. Articles, not questions, are split: questions about one paragraph are
near-paraphrases, and a question split would leak them across the splits.

A hard negative is a question paired with another paragraph of its own article that lacks its
answer: what the gateway hands the reader when retrieval returns on-topic chunks without the
answer. The paragraph chosen is the one sharing the most content words with the question (what a
retriever would rank high), among those that contain none of its answers (nor, for an impossible
question, its plausible answers).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grounding.answerability import content_words

SPLITS = ("train", "validation", "calibration", "test")


class SquadError(ValueError):
    """A file is not SQuAD-format, or the article split does not fit the files."""


@dataclass(frozen=True)
class Question:
    """One question about one paragraph.

    Attributes:
        id: SQuAD's id.
        text: the question.
        paragraph: index of its paragraph in the article.
        answers: (text, character start) of each annotated answer; empty when impossible.
        plausible: SQuAD 2.0's plausible-but-wrong answers of an impossible question.
    """

    id: str
    text: str
    paragraph: int
    answers: tuple[tuple[str, int], ...]
    plausible: tuple[str, ...] = ()

    @property
    def answerable(self) -> bool:
        return bool(self.answers)

    @property
    def answer_texts(self) -> list[str]:
        return [text for text, _ in self.answers]


@dataclass(frozen=True)
class Article:
    title: str
    paragraphs: tuple[str, ...]
    questions: tuple[Question, ...]


def _answer(context: str, entry: dict[str, Any]) -> tuple[str, int] | None:
    text, start = str(entry["text"]), int(entry["answer_start"])
    if context[start : start + len(text)] == text:
        return text, start
    # A few SQuAD offsets are off by some characters; the nearest occurrence is the one meant.
    found = [i for i in range(len(context)) if context.startswith(text, i)] if text else []
    return (text, min(found, key=lambda i: abs(i - start))) if found else None


def read_squad(path: Path) -> list[Article]:
    """The articles of a SQuAD-format file.

    Answers whose text is not in the paragraph are dropped (a question left with none but not
    marked impossible is dropped too).

    Raises:
        SquadError: the file is not SQuAD-format JSON.
    """
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        articles = []
        for article in raw["data"]:
            paragraphs, questions = [], []
            for number, paragraph in enumerate(article["paragraphs"]):
                context = str(paragraph["context"])
                paragraphs.append(context)
                for qa in paragraph["qas"]:
                    found = [_answer(context, a) for a in qa.get("answers", [])]
                    answers = tuple(a for a in found if a is not None)
                    if not answers and not qa.get("is_impossible"):
                        continue
                    plausible = tuple(str(a["text"]) for a in qa.get("plausible_answers", []))
                    questions.append(
                        Question(str(qa["id"]), str(qa["question"]), number, answers, plausible)
                    )
            articles.append(Article(str(article["title"]), tuple(paragraphs), tuple(questions)))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SquadError(f"{path} is not a SQuAD-format JSON file: {exc!r}") from None
    return articles


def split_articles(
    articles: list[Article], assignment: dict[str, list[str]], unused: list[str]
) -> dict[str, list[Article]]:
    """Put each article in the split its title is listed under.

    Args:
        articles: every article of the data files.
        assignment: split name -> article titles.
        unused: titles deliberately left out of every split.

    Returns:
        Split name -> its articles (in the order listed).

    Raises:
        SquadError: a title is listed twice or not found, two files share a title, or an article
            of the files is in no split and not in `unused` (each new file needs a decision).
    """
    by_title: dict[str, Article] = {}
    for article in articles:
        if article.title in by_title:
            raise SquadError(f"two articles are titled {article.title!r}; titles must be unique")
        by_title[article.title] = article
    listed = [(split, t) for split, titles in assignment.items() for t in titles]
    listed += [("unused", t) for t in unused]
    seen: dict[str, str] = {}
    for split, title in listed:
        if title in seen:
            raise SquadError(f"article {title!r} is listed in {seen[title]} and in {split}")
        seen[title] = split
    missing = sorted(t for t in seen if t not in by_title)
    if missing:
        raise SquadError(f"articles listed but in no data file: {missing}")
    unassigned = sorted(t for t in by_title if t not in seen)
    if unassigned:
        raise SquadError(
            f"articles in the data files but in no split: {unassigned}; list each under a "
            "split (data.splits.*) or under data.unused_articles"
        )
    return {split: [by_title[t] for t in titles] for split, titles in assignment.items()}


def _contains_any(paragraph: str, texts: list[str]) -> bool:
    lowered = paragraph.lower()
    return any(t.strip() and t.strip().lower() in lowered for t in texts)


def hard_negatives(article: Article, count: int) -> list[list[int]]:
    """Paragraphs of the article to pair with each of its questions as "no answer here".

    Args:
        article: the article.
        count: how many per question at most.

    Returns:
        Per question (in `article.questions` order), paragraph indices, the most question-like
        first (share of the question's content words found in the paragraph; ties by position);
        never its own paragraph, never one that contains any of its answers or plausible answers.
    """
    words = [set(content_words(p)) for p in article.paragraphs]
    chosen = []
    for question in article.questions:
        avoid = question.answer_texts + list(question.plausible)
        wanted = set(content_words(question.text))
        candidates = [
            (-len(wanted & words[index]) / max(1, len(wanted)), index)
            for index, paragraph in enumerate(article.paragraphs)
            if index != question.paragraph and not _contains_any(paragraph, avoid)
        ]
        chosen.append([index for _, index in sorted(candidates)[:count]])
    return chosen
