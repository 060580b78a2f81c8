"""Batches of windows: bucketed by length and padded to the longest of each batch.

Dynamic padding saves most of the compute a fixed 256-token pad would waste (SQuAD windows run
~100-256 tokens). Bucketing is local: an epoch's shuffled order is cut into pools of
`bucket_batches` batches, each pool sorted by length and cut into batches, and the batches are
shuffled again, so batches are of one length class without the epoch running short to long.
The order is a function of (seed, epoch) only, so a resumed run sees the same batches.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from grounding.reader.windows import Window


@dataclass(frozen=True)
class ReaderBatch:
    """Model inputs and labels of one batch; `windows` says which windows the rows are."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor
    context_mask: torch.Tensor
    start: torch.Tensor
    end: torch.Tensor
    windows: list[int]

    @property
    def real_tokens(self) -> int:
        return int(self.attention_mask.sum())

    def to(self, device: torch.device) -> ReaderBatch:
        """The batch on `device` (itself when already there)."""
        if self.input_ids.device == device:
            return self
        return ReaderBatch(
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            token_type_ids=self.token_type_ids.to(device),
            context_mask=self.context_mask.to(device),
            start=self.start.to(device),
            end=self.end.to(device),
            windows=self.windows,
        )


def epoch_batches(
    lengths: Sequence[int],
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    bucket_batches: int = 50,
    shuffle: bool = True,
) -> list[list[int]]:
    """Window indices grouped into batches for one epoch.

    Args:
        lengths: tokens per window.
        batch_size: windows per batch.
        seed, epoch: determine the order (same arguments, same batches).
        bucket_batches: batches per length-sorted pool; 1 = no bucketing.
        shuffle: False sorts all windows by length (evaluation: least padding, fixed order).

    Returns:
        Batches of indices; every index appears exactly once.
    """
    order = list(range(len(lengths)))
    if not shuffle:
        order.sort(key=lambda i: (lengths[i], i))
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng = random.Random(f"{seed}:epoch:{epoch}")
    rng.shuffle(order)
    pool = batch_size * max(1, bucket_batches)
    batches: list[list[int]] = []
    for begin in range(0, len(order), pool):
        chunk = sorted(order[begin : begin + pool], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(windows: Sequence[Window], indices: Sequence[int], pad_id: int) -> ReaderBatch:
    """Pad the chosen windows to the longest of them (right padding, mask 0 on padding)."""
    rows = [windows[i] for i in indices]
    width = max(len(w) for w in rows)
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    attention = torch.zeros(shape, dtype=torch.long)
    types = torch.zeros(shape, dtype=torch.long)
    context = torch.zeros(shape, dtype=torch.bool)
    for row, window in enumerate(rows):
        n = len(window)
        input_ids[row, :n] = window.input_ids
        attention[row, :n] = 1
        types[row, :n] = window.token_type_ids
        context[row, :n] = window.context_mask
    return ReaderBatch(
        input_ids=input_ids,
        attention_mask=attention,
        token_type_ids=types,
        context_mask=context,
        start=torch.tensor([w.start for w in rows], dtype=torch.long),
        end=torch.tensor([w.end for w in rows], dtype=torch.long),
        windows=list(indices),
    )
