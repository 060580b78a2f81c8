"""Synthetic unanswerable questions: an answerable question with one of its names or numbers
swapped for another of the same article that its paragraph does not mention.

SQuAD 2.0's adversarial impossibles are written this way, among others (an entity or a number
swapped, so the question still reads as if its paragraph answered it): a reader trained on
them alone (about 1,000 in the training articles) tells them from answerable questions only
at chance (no-answer AUROC 0.55-0.58 on the validation articles). Swaps make thousands more from
the answerable questions, at no cost, for any SQuAD-format corpus.

A swap is made only when it is unambiguous: the replaced word is in the question and in its
paragraph, and the replacement is a word of the same shape (capitalised name or number) from
another paragraph of the article that appears nowhere in this one, so the paragraph cannot
answer the new question.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from training.reader.squad import Article, Question

# A capitalised name (not the question's first word) or a number of 2+ digits.
_NAME = re.compile(r"\b[A-Z][a-z]{2,}(?:\s[A-Z][a-z]{2,})*\b")
_NUMBER = re.compile(r"\b\d{2,}\b")


@dataclass(frozen=True)
class Swap:
    """A question rewritten so its paragraph no longer answers it."""

    question: Question
    text: str
    replaced: str
    replacement: str


_SENTENCE_START = re.compile(r"(?:^|[.!?:;\"(]\s*)$")


def _candidates(text: str, pattern: re.Pattern[str], *, skip_first: bool) -> list[str]:
    """Matches of `pattern`; with skip_first, none that opens a sentence (a capital there says
    nothing about being a name: "This", "Unlike")."""
    return [
        m.group(0)
        for m in pattern.finditer(text)
        if not (skip_first and _SENTENCE_START.search(text[: m.start()]))
    ]


def swapped_questions(article: Article, seed: int) -> list[Swap]:
    """At most one swap per answerable question of the article (seeded choice)."""
    rng = random.Random(f"{seed}:swaps:{article.title}")
    pools = {
        "name": sorted(
            {n for p in article.paragraphs for n in _candidates(p, _NAME, skip_first=True)}
        ),
        "number": sorted({n for p in article.paragraphs for n in _NUMBER.findall(p)}),
    }
    swaps = []
    for question in article.questions:
        if not question.answerable:
            continue
        paragraph = article.paragraphs[question.paragraph]
        answers = " ".join(question.answer_texts).lower()
        options = []
        for kind, pattern in (("name", _NAME), ("number", _NUMBER)):
            for word in _candidates(question.text, pattern, skip_first=kind == "name"):
                if word in paragraph and word.lower() not in answers:
                    options.append((kind, word))
        if not options:
            continue
        kind, word = rng.choice(options)
        lowered = paragraph.lower()
        replacements = [r for r in pools[kind] if r.lower() not in lowered and r != word]
        if not replacements:
            continue
        replacement = rng.choice(replacements)
        text = re.sub(rf"\b{re.escape(word)}\b", replacement, question.text, count=1)
        swaps.append(Swap(question, text, word, replacement))
    return swaps
