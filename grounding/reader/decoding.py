"""From a window's start/end logits to an answer span, its score and the no-answer score.

Pure functions over tensors (no model, no tokenizer), so the rules are tested on hand-made logits:
  * a span is (start, end) with start <= end, at most `max_answer_tokens` long, both ends on
    context tokens (never the question, a separator, padding or [CLS]);
  * span score = start logit + end logit; null score = the same at position 0 ([CLS]), the
    "no answer" position SQuAD 2.0 readers use; margin = best span score - null score, so a
    positive margin means the reader prefers an answer over abstaining;
  * token offsets map the span back to characters of the text the window was cut from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

NULL_POSITION = 0  # [CLS]


@dataclass(frozen=True)
class SpanChoice:
    """The best span of one window (token positions within the window)."""

    start_token: int
    end_token: int
    span_score: float  # -inf when the window has no context token
    null_score: float

    @property
    def margin(self) -> float:
        return self.span_score - self.null_score


def span_scores(
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    context_mask: torch.Tensor,
    max_answer_tokens: int,
) -> torch.Tensor:
    """Scores of every (start, end) pair, -inf where the pair is not a valid span.

    Args:
        start_logits: (batch, length) or (length,).
        end_logits: same shape.
        context_mask: same shape, True on context tokens.
        max_answer_tokens: the longest span, in tokens (end - start + 1).

    Returns:
        (batch, length, length) (or (length, length)): entry [i, j] scores start i, end j.

    Raises:
        ValueError: max_answer_tokens < 1 or the shapes differ.
    """
    if max_answer_tokens < 1:
        raise ValueError(f"max_answer_tokens must be >= 1, got {max_answer_tokens}")
    if not start_logits.shape == end_logits.shape == context_mask.shape:
        raise ValueError(
            f"logits and mask must have one shape, got {tuple(start_logits.shape)}, "
            f"{tuple(end_logits.shape)}, {tuple(context_mask.shape)}"
        )
    length = start_logits.shape[-1]
    scores = start_logits.float().unsqueeze(-1) + end_logits.float().unsqueeze(-2)
    positions = torch.arange(length, device=start_logits.device)
    offset = positions.unsqueeze(0) - positions.unsqueeze(1)  # [i, j] = j - i
    band = (offset >= 0) & (offset < max_answer_tokens)
    mask = context_mask.bool()
    valid = band & mask.unsqueeze(-1) & mask.unsqueeze(-2)
    return scores.masked_fill(~valid, float("-inf"))


def best_spans(
    start_logits: torch.Tensor,
    end_logits: torch.Tensor,
    context_mask: torch.Tensor,
    max_answer_tokens: int,
) -> list[SpanChoice]:
    """The best valid span of each window of a batch, with its null score.

    Args:
        start_logits: (batch, length).
        end_logits: (batch, length).
        context_mask: (batch, length), True on context tokens.
        max_answer_tokens: the longest span, in tokens.

    Returns:
        One `SpanChoice` per row; a row without context tokens gets span (0, 0) scored -inf.
    """
    scores = span_scores(start_logits, end_logits, context_mask, max_answer_tokens)
    batch, length = start_logits.shape
    flat = scores.reshape(batch, length * length)
    best, index = flat.max(dim=-1)
    null = start_logits[:, NULL_POSITION].float() + end_logits[:, NULL_POSITION].float()
    choices = []
    for row in range(batch):
        score = float(best[row])
        start, end = divmod(int(index[row]), length)
        if score == float("-inf"):
            start = end = NULL_POSITION
        choices.append(SpanChoice(start, end, score, float(null[row])))
    return choices


def span_characters(
    choice: SpanChoice, offsets: Sequence[tuple[int, int] | None]
) -> tuple[int, int] | None:
    """Character [start, end) of a span in the text the window was cut from.

    Args:
        choice: a span from `best_spans`.
        offsets: per token of the window, its (start, end) characters in the context text, None
            for tokens that are not context (question, separators, padding).

    Returns:
        The character range, or None when the window had no valid span.
    """
    if choice.span_score == float("-inf"):
        return None
    first, last = offsets[choice.start_token], offsets[choice.end_token]
    if first is None or last is None:
        raise ValueError(f"span {choice} does not lie on context tokens")
    return first[0], last[1]


def best_window(choices: Sequence[SpanChoice]) -> int:
    """Which of one text's windows speaks for it: the one with the largest margin.

    A chunk longer than one window is read as several; its verdict is the window that most
    prefers an answer (the others saw only part of the text).

    Raises:
        ValueError: no windows.
    """
    if not choices:
        raise ValueError("no windows to choose from")
    return max(range(len(choices)), key=lambda i: (choices[i].margin, -i))
