"""Micro-batches: padded (one example per row) or packed (several examples per row).

Padding: each batch is padded to its longest row with the tokenizer's own pad token (embeddings are
never resized); padded positions get attention_mask 0 and label -100.

Packing: examples are placed into rows of `max_seq_len` tokens by first-fit decreasing. Separation
is exact, not approximate: every example restarts its `position_ids` at 0 and no attention_mask is
passed, and transformers' masking utilities (`find_packed_sequence_indices`) turn restarts into a
block-diagonal causal mask for eager/SDPA attention, so no token attends across examples and
rotary positions match an unpacked run. Labels are shifted inside each example before
concatenation, so the last token of one example never learns to predict the first of the next.
Leftover row space is filled with pad tokens forming one more segment, labelled -100.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from training.render import IGNORE_INDEX, Tokenized


@dataclass
class Batch:
    """Model inputs for one micro-batch, with labels already shifted (labels[t] = target of t)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    position_ids: torch.Tensor | None
    shifted_labels: torch.Tensor
    real_tokens: int  # non-pad tokens, for throughput

    @property
    def num_label_tokens(self) -> int:
        return int((self.shifted_labels != IGNORE_INDEX).sum())


def _shift(labels: list[int]) -> list[int]:
    # Position t predicts token t+1; the last position of an example predicts nothing.
    return [*labels[1:], IGNORE_INDEX]


def pad_batch(items: list[Tokenized], pad_id: int) -> Batch:
    """Pad a list of examples to the longest one (right padding)."""
    width = max(len(item.input_ids) for item in items)
    ids, mask, labels = [], [], []
    for item in items:
        gap = width - len(item.input_ids)
        ids.append(item.input_ids + [pad_id] * gap)
        mask.append([1] * len(item.input_ids) + [0] * gap)
        labels.append(_shift(item.labels) + [IGNORE_INDEX] * gap)
    return Batch(
        input_ids=torch.tensor(ids),
        attention_mask=torch.tensor(mask),
        position_ids=None,
        shifted_labels=torch.tensor(labels),
        real_tokens=sum(len(item.input_ids) for item in items),
    )


def pack_rows(items: list[Tokenized], max_seq_len: int) -> list[list[int]]:
    """Group example indices into rows of at most `max_seq_len` tokens (first-fit decreasing).

    Returns:
        Rows of indices into `items`; the grouping depends only on the lengths, so it is
        deterministic.
    """
    order = sorted(range(len(items)), key=lambda i: (-len(items[i].input_ids), i))
    rows: list[list[int]] = []
    space: list[int] = []
    for index in order:
        length = len(items[index].input_ids)
        for row, free in enumerate(space):
            if length <= free:
                rows[row].append(index)
                space[row] -= length
                break
        else:
            rows.append([index])
            space.append(max_seq_len - length)
    return rows


def packed_batch(rows: list[list[Tokenized]], pad_id: int) -> Batch:
    """Concatenate each row's examples; pad rows to the longest row of the batch."""
    width = max(sum(len(item.input_ids) for item in row) for row in rows)
    ids, positions, labels = [], [], []
    real = 0
    for row in rows:
        row_ids: list[int] = []
        row_pos: list[int] = []
        row_labels: list[int] = []
        for item in row:
            row_ids += item.input_ids
            row_pos += list(range(len(item.input_ids)))
            row_labels += _shift(item.labels)
        real += len(row_ids)
        gap = width - len(row_ids)
        ids.append(row_ids + [pad_id] * gap)
        # Padding restarts positions too, so it is a segment of its own that nothing attends to.
        positions.append(row_pos + list(range(gap)))
        labels.append(row_labels + [IGNORE_INDEX] * gap)
    return Batch(
        input_ids=torch.tensor(ids),
        attention_mask=None,
        position_ids=torch.tensor(positions),
        shifted_labels=torch.tensor(labels),
        real_tokens=real,
    )
