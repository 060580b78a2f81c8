"""The reader's training pairs: each question with its own paragraph (gold) and with hard
negatives, paragraphs of the same article without its answer. They are cut into windows by
`grounding.reader.windows.make_windows`, the same function the gateway reads chunks through.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from training.reader.squad import Article, Question, hard_negatives
from training.reader.swaps import swapped_questions

PairKind = Literal["gold", "hard_negative", "swapped"]


@dataclass(frozen=True)
class Pair:
    """A question with one context to read.

    Attributes:
        question: the question (its answers are the gold texts for scoring).
        article: the article title.
        context: the text read.
        kind: `gold` (the question's own paragraph), `hard_negative` (another paragraph of the
            article, without the answer) or `swapped` (its own paragraph, asked a question with a
            name or number swapped out: `training/reader/swaps.py`).
        answer: the labelled answer's characters in `context`, None for no answer.
        asked: the question as asked when it is not `question.text` (a swap).
    """

    question: Question
    article: str
    context: str
    kind: PairKind
    answer: tuple[int, int] | None
    asked: str | None = None

    @property
    def question_text(self) -> str:
        return self.asked if self.asked is not None else self.question.text


def build_pairs(
    articles: Sequence[Article],
    *,
    hard_negatives_per_question: int,
    max_questions: int | None = None,
    seed: int = 0,
    swapped: bool = False,
) -> list[Pair]:
    """Each question with its own paragraph, and with up to N hard-negative paragraphs.

    Args:
        articles: the split's articles.
        hard_negatives_per_question: other paragraphs of the article, without the answer.
        max_questions: a seeded random subset of the questions (None = all).
        seed: seeds that subset (and the swaps).
        swapped: add, after an answerable question's pairs, its paragraph asked with a name or
            number swapped out (labelled no answer), where one can be made.

    Returns:
        Pairs grouped by question: its gold pair first, then its hard negatives.
    """
    selected: list[tuple[Article, Question, list[int]]] = []
    swaps = {}
    for article in articles:
        if swapped:
            swaps.update({s.question.id: s for s in swapped_questions(article, seed)})
        negatives = hard_negatives(article, hard_negatives_per_question)
        selected += [(article, q, n) for q, n in zip(article.questions, negatives, strict=True)]
    if max_questions is not None and len(selected) > max_questions:
        keep = set(random.Random(f"{seed}:questions").sample(range(len(selected)), max_questions))
        selected = [s for i, s in enumerate(selected) if i in keep]
    pairs = []
    for article, question, others in selected:
        answer = None
        if question.answerable:
            text, start = question.answers[0]
            answer = (start, start + len(text))
        context = article.paragraphs[question.paragraph]
        pairs.append(Pair(question, article.title, context, "gold", answer))
        pairs += [
            Pair(question, article.title, article.paragraphs[n], "hard_negative", None)
            for n in others
        ]
        swap = swaps.get(question.id)
        if swap is not None:
            pairs.append(Pair(question, article.title, context, "swapped", None, swap.text))
    return pairs
