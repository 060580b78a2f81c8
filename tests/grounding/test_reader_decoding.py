"""Reader decoding and metrics on hand-made logits and scores (pure, no model)."""

from __future__ import annotations

import math

import pytest
import torch

from grounding.reader.decoding import (
    SpanChoice,
    best_spans,
    best_window,
    span_characters,
    span_scores,
)
from training.reader.metrics import auroc, best_threshold, exact_match, f1_score

LOW = -10.0


def logits(length: int, **marks: float) -> torch.Tensor:
    """A row of LOW logits with some positions raised: logits(6, p2=3.0)."""
    row = torch.full((length,), LOW)
    for name, value in marks.items():
        row[int(name[1:])] = value
    return row


def choose(start: torch.Tensor, end: torch.Tensor, mask: list[bool], max_len: int) -> SpanChoice:
    return best_spans(start[None], end[None], torch.tensor([mask]), max_len)[0]


CONTEXT = [False, False, False, True, True, True, True, False]  # [CLS] q q c c c c [SEP]


def test_best_span_is_the_highest_start_plus_end() -> None:
    choice = choose(logits(8, p4=5.0, p3=1.0), logits(8, p5=4.0, p6=2.0), CONTEXT, 10)
    assert (choice.start_token, choice.end_token) == (4, 5)
    assert choice.span_score == pytest.approx(9.0)
    assert choice.null_score == pytest.approx(2 * LOW)
    assert choice.margin == pytest.approx(9.0 - 2 * LOW)


def test_null_wins_when_cls_outscores_every_span() -> None:
    choice = choose(logits(8, p0=8.0, p4=1.0), logits(8, p0=8.0, p4=1.0), CONTEXT, 10)
    assert (choice.start_token, choice.end_token) == (4, 4)  # the best span is still reported
    assert choice.null_score == pytest.approx(16.0)
    assert choice.margin == pytest.approx(2.0 - 16.0)
    assert choice.margin < 0


def test_end_before_start_is_never_chosen() -> None:
    # The best start is after the best end: the pair (6, 3) is invalid.
    choice = choose(logits(8, p6=9.0, p3=0.0), logits(8, p3=9.0, p6=1.0), CONTEXT, 10)
    assert choice.start_token <= choice.end_token
    assert (choice.start_token, choice.end_token) == (6, 6)


def test_max_answer_length_limits_the_span() -> None:
    start, end = logits(8, p3=5.0), logits(8, p6=5.0, p4=1.0)
    assert (
        choose(start, end, CONTEXT, 4).start_token,
        choose(start, end, CONTEXT, 4).end_token,
    ) == (3, 6)
    short = choose(start, end, CONTEXT, 2)  # 3..6 is 4 tokens: too long
    assert (short.start_token, short.end_token) == (3, 4)
    with pytest.raises(ValueError, match="max_answer_tokens"):
        span_scores(start, end, torch.tensor(CONTEXT), 0)


def test_spans_stay_on_context_tokens() -> None:
    # The question (1, 2) and [SEP] (7) have the highest logits; they are never chosen.
    choice = choose(logits(8, p1=9.0, p3=1.0), logits(8, p2=9.0, p7=9.0, p5=1.0), CONTEXT, 10)
    assert (choice.start_token, choice.end_token) == (3, 5)


def test_a_window_without_context_has_no_span() -> None:
    choice = choose(logits(4, p0=1.0), logits(4, p0=1.0), [False] * 4, 10)
    assert choice.span_score == -math.inf
    assert span_characters(choice, [None] * 4) is None


def test_rows_of_a_batch_are_decoded_independently() -> None:
    start = torch.stack([logits(8, p3=5.0), logits(8, p5=5.0)])
    end = torch.stack([logits(8, p3=5.0), logits(8, p6=5.0)])
    mask = torch.tensor([CONTEXT, CONTEXT])
    spans = [(c.start_token, c.end_token) for c in best_spans(start, end, mask, 10)]
    assert spans == [(3, 3), (5, 6)]


def test_offsets_map_the_span_back_to_characters() -> None:
    text = "Paris is the capital"
    offsets: list[tuple[int, int] | None] = [None, None, (0, 5), (6, 8), (9, 12), (13, 20), None]
    assert span_characters(SpanChoice(4, 5, 1.0, 0.0), offsets) == (9, 20)
    start, end = span_characters(SpanChoice(2, 2, 1.0, 0.0), offsets) or (0, 0)
    assert text[start:end] == "Paris"
    with pytest.raises(ValueError, match="context"):
        span_characters(SpanChoice(0, 2, 1.0, 0.0), offsets)


def test_the_window_with_the_largest_margin_speaks_for_a_text() -> None:
    windows = [SpanChoice(3, 3, 1.0, 2.0), SpanChoice(4, 5, 6.0, 1.0), SpanChoice(3, 4, 5.0, 1.0)]
    assert best_window(windows) == 1
    with pytest.raises(ValueError):
        best_window([])


# ------------------------------------------------------------------------------------ metrics
@pytest.mark.parametrize(
    ("scores", "labels", "expected"),
    [
        ([0.9, 0.8, 0.1, 0.2], [True, True, False, False], 1.0),
        ([0.1, 0.2, 0.9, 0.8], [True, True, False, False], 0.0),
        ([0.5, 0.5, 0.5, 0.5], [True, False, True, False], 0.5),  # ties count one half
        ([0.3, 0.7, 0.5], [True, True, False], 0.5),
    ],
)
def test_auroc(scores: list[float], labels: list[bool], expected: float) -> None:
    assert auroc(scores, labels) == pytest.approx(expected)


def test_auroc_needs_both_classes() -> None:
    assert auroc([0.1, 0.2], [True, True]) is None


def test_squad_normalisation_in_em_and_f1() -> None:
    assert exact_match("The Eiffel Tower.", ["eiffel tower"]) == 1.0
    assert f1_score("the tall Eiffel tower", ["Eiffel Tower"]) == pytest.approx(0.8)
    assert f1_score("", []) == 1.0  # abstaining on an impossible question is right
    assert f1_score("Paris", []) == 0.0


def test_best_threshold_answers_only_confident_questions() -> None:
    margins = [5.0, 3.0, 1.0, -2.0]
    span_f1 = [1.0, 0.0, 0.0, 1.0]
    answerable = [True, False, False, True]
    threshold, f1 = best_threshold(margins, span_f1, answerable)
    # Answering the first only: 1 + 1 (q2 abstained) + 1 (q3 abstained) + 0 = 3 of 4.
    assert f1 == pytest.approx(0.75)
    assert 3.0 <= threshold < 5.0
    assert best_threshold([1.0, 2.0], [1.0, 1.0], [True, True]) == (-math.inf, 1.0)
