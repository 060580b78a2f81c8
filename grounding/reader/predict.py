"""Windows in, one reading per text out: the forward pass and decoding shared by evaluation and
the `Reader` the gateway uses, so what is measured is what is served."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from grounding.reader.batching import collate, epoch_batches
from grounding.reader.decoding import SpanChoice, best_spans, best_window, span_characters
from grounding.reader.model import batch_logits
from grounding.reader.windows import Window


@dataclass(frozen=True)
class SpanReading:
    """What the reader makes of one text (a chunk) for one question.

    Attributes:
        text: the best answer span ("" when the text had no context token to choose).
        start, end: its characters [start, end) in the text (None without a span).
        span_score: start + end logit of the span.
        null_score: start + end logit of [CLS], "no answer".
        margin: span_score - null_score; > 0 means the reader prefers answering.
    """

    text: str
    start: int | None
    end: int | None
    span_score: float
    null_score: float
    margin: float


def window_choices(
    model: nn.Module,
    windows: Sequence[Window],
    *,
    pad_id: int,
    batch_size: int,
    max_answer_tokens: int,
) -> list[SpanChoice]:
    """The best span of every window (forward in length-sorted batches, no grad).

    Returns:
        One choice per window, in the windows' order.
    """
    choices: list[SpanChoice | None] = [None] * len(windows)
    batches = epoch_batches(
        [len(w) for w in windows], batch_size=batch_size, seed=0, epoch=0, shuffle=False
    )
    device = next(model.parameters()).device
    with torch.inference_mode():
        for indices in batches:
            batch = collate(windows, indices, pad_id).to(device)
            start, end = batch_logits(model, batch)
            for index, choice in zip(
                indices, best_spans(start, end, batch.context_mask, max_answer_tokens), strict=True
            ):
                choices[index] = choice
    return [c for c in choices if c is not None]


def readings(
    texts: Sequence[str], windows: Sequence[Window], choices: Sequence[SpanChoice]
) -> list[SpanReading]:
    """One reading per text: the window of the text with the largest margin speaks for it.

    Args:
        texts: the texts read (window.pair indexes them).
        windows: their windows.
        choices: each window's best span.

    Returns:
        One reading per text, in order.

    Raises:
        ValueError: a text has no window.
    """
    by_text: list[list[int]] = [[] for _ in texts]
    for index, window in enumerate(windows):
        by_text[window.pair].append(index)
    out = []
    for number, indices in enumerate(by_text):
        if not indices:
            raise ValueError(f"text {number} has no window")
        best = indices[best_window([choices[i] for i in indices])]
        choice = choices[best]
        span = span_characters(choice, windows[best].offset_list())
        text = texts[number][span[0] : span[1]] if span else ""
        out.append(
            SpanReading(
                text=text,
                start=span[0] if span else None,
                end=span[1] if span else None,
                span_score=choice.span_score,
                null_score=choice.null_score,
                margin=choice.margin,
            )
        )
    return out
