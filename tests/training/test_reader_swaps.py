"""Synthetic unanswerable questions (`training/reader/swaps.py`): a name or number of an
answerable question swapped for one of the same article that its paragraph lacks, paired with
that paragraph as "no answer"."""

from __future__ import annotations

from training.reader.squad import Article, Question
from training.reader.swaps import swapped_questions
from training.reader.windows import build_pairs

PARAGRAPHS = (
    "Brunel designed the Clifton bridge in 1831. It opened in 1864 after his death.",
    "Telford built the Menai bridge, which opened in 1826. Unlike Brunel, he trained as a mason.",
)
QUESTIONS = (
    Question("q1", "When did Clifton bridge open?", 0, (("1864", 63),)),
    Question("q2", "Who designed the Clifton bridge in 1831?", 0, (("Brunel", 0),)),
    Question("q3", "What did it say?", 0, ()),  # impossible already: never swapped
)
ARTICLE = Article("Bridges", PARAGRAPHS, QUESTIONS)


def test_a_swap_names_what_its_paragraph_lacks_and_keeps_the_answer_out_of_it() -> None:
    swaps = {s.question.id: s for s in swapped_questions(ARTICLE, seed=0)}
    assert set(swaps) <= {"q1", "q2"} and swaps
    for swap in swaps.values():
        paragraph = PARAGRAPHS[swap.question.paragraph]
        assert swap.replaced in swap.question.text and swap.replaced in paragraph
        assert swap.replacement in swap.text and swap.replacement not in paragraph
        assert swap.replaced not in " ".join(swap.question.answer_texts)
        assert swap.replacement != "Unlike"  # a capital that opens a sentence is not a name


def test_swaps_are_seeded() -> None:
    first = [s.text for s in swapped_questions(ARTICLE, seed=3)]
    assert first == [s.text for s in swapped_questions(ARTICLE, seed=3)]


def test_swapped_pairs_are_labelled_no_answer_and_only_on_request() -> None:
    plain = build_pairs([ARTICLE], hard_negatives_per_question=0)
    assert all(p.kind == "gold" for p in plain)
    with_swaps = build_pairs([ARTICLE], hard_negatives_per_question=0, swapped=True)
    swapped = [p for p in with_swaps if p.kind == "swapped"]
    assert swapped and all(p.answer is None for p in swapped)
    for pair in swapped:
        assert pair.question_text != pair.question.text
        assert pair.context == PARAGRAPHS[pair.question.paragraph]
