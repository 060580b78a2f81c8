"""Text cut into reader windows: `[CLS] question [SEP] context-part [SEP]` of at most
`max_seq_len` tokens, a long context in overlapping windows (`stride` tokens shared by neighbours,
the tokenizer's own overflow), with start/end token labels where a pair names its answer.

The answer's characters are mapped onto tokens through the offsets mapping; a window that does not
hold the whole answer, and every window of a pair without one, is labelled (0, 0): [CLS], "no
answer". Training (`training/reader`) and the gateway's `Reader` cut text through this one
function, so what is measured is what is served.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

_TOKENIZE_BATCH = 512  # pairs per tokenizer call: fast in Rust, bounded in memory


class ReadPair(Protocol):
    """What `make_windows` reads: a question, a context, and the answer's characters in the
    context when it is labelled (None: no answer, or unlabelled at serving time)."""

    @property
    def question_text(self) -> str: ...

    @property
    def context(self) -> str: ...

    @property
    def answer(self) -> tuple[int, int] | None: ...


@dataclass(frozen=True)
class QuestionPair:
    """An unlabelled (question, context) pair, as the gateway reads a retrieved chunk."""

    question_text: str
    context: str
    answer: tuple[int, int] | None = None


@dataclass(frozen=True)
class WindowSettings:
    max_seq_len: int = 256
    stride: int = 128
    max_question_tokens: int = 64


@dataclass(frozen=True)
class Window:
    """One tokenized window of a pair.

    Attributes:
        pair: index of its pair.
        input_ids, token_type_ids: (length,) int32.
        context_mask: (length,) bool, True on context tokens.
        offsets: (length, 2) int32 character offsets into the pair's context, -1 off context.
        start, end: the answer's token positions, (0, 0) for no answer.
    """

    pair: int
    input_ids: torch.Tensor
    token_type_ids: torch.Tensor
    context_mask: torch.Tensor
    offsets: torch.Tensor
    start: int
    end: int

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def offset_list(self) -> list[tuple[int, int] | None]:
        """Per token, its characters in the context, None off context (for `span_characters`)."""
        rows = self.offsets.tolist()
        return [(a, b) if a >= 0 else None for a, b in rows]


def clip_question(tokenizer: Any, question: str, max_tokens: int) -> str:
    """The question cut to its first `max_tokens` tokens (real questions are far shorter; this
    keeps a pasted paragraph from crowding the context out of the window)."""
    encoded = tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)
    offsets = encoded["offset_mapping"]
    if len(offsets) <= max_tokens:
        return question
    return question[: offsets[max_tokens - 1][1]]


def token_span(
    offsets: Sequence[tuple[int, int]],
    sequence_ids: Sequence[int | None],
    char_start: int,
    char_end: int,
) -> tuple[int, int]:
    """The tokens of a character span in a window, (0, 0) when the window lacks part of it.

    Args:
        offsets: per token, its characters in its own sequence.
        sequence_ids: per token, 0 (question), 1 (context) or None (special).
        char_start, char_end: the answer's characters [start, end) in the context.
    """
    context = [i for i, s in enumerate(sequence_ids) if s == 1]
    if not context or offsets[context[0]][0] > char_start or offsets[context[-1]][1] < char_end:
        return 0, 0
    start = next(i for i in context if offsets[i][1] > char_start)
    end = max(i for i in context if offsets[i][0] < char_end)
    return (start, end) if start <= end else (0, 0)


def make_windows(
    tokenizer: Any, pairs: Sequence[ReadPair], settings: WindowSettings
) -> list[Window]:
    """Tokenize pairs into windows (several per pair when its context is long).

    Args:
        tokenizer: the reader's fast tokenizer (offsets mapping needed).
        pairs: what to read.
        settings: window length, overlap and question budget.

    Returns:
        Windows in pair order; each pair yields at least one.
    """
    windows: list[Window] = []
    for begin in range(0, len(pairs), _TOKENIZE_BATCH):
        chunk = pairs[begin : begin + _TOKENIZE_BATCH]
        questions = [
            clip_question(tokenizer, p.question_text, settings.max_question_tokens) for p in chunk
        ]
        encoded = tokenizer(
            questions,
            [p.context for p in chunk],
            truncation="only_second",
            max_length=settings.max_seq_len,
            stride=settings.stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            return_token_type_ids=True,
            padding=False,
        )
        for row, source in enumerate(encoded["overflow_to_sample_mapping"]):
            pair = chunk[source]
            sequence_ids = encoded.sequence_ids(row)
            offsets = encoded["offset_mapping"][row]
            start, end = 0, 0
            if pair.answer is not None:
                start, end = token_span(offsets, sequence_ids, *pair.answer)
            on_context = [s == 1 for s in sequence_ids]
            windows.append(
                Window(
                    pair=begin + source,
                    input_ids=torch.tensor(encoded["input_ids"][row], dtype=torch.int32),
                    token_type_ids=torch.tensor(encoded["token_type_ids"][row], dtype=torch.int32),
                    context_mask=torch.tensor(on_context, dtype=torch.bool),
                    offsets=torch.tensor(
                        [o if c else (-1, -1) for o, c in zip(offsets, on_context, strict=True)],
                        dtype=torch.int32,
                    ),
                    start=start,
                    end=end,
                )
            )
    return windows
