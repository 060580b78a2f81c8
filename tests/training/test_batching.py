"""Padding and packing: shapes, shifted labels, and packing that matches unpacked losses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from training.batching import pack_rows, packed_batch, pad_batch
from training.render import IGNORE_INDEX, Tokenized


def item(ids: list[int], trained_from: int) -> Tokenized:
    labels = [IGNORE_INDEX] * trained_from + ids[trained_from:]
    return Tokenized(ids, labels, "t")


def test_pad_batch_pads_with_the_given_pad_id_and_shifts_labels() -> None:
    batch = pad_batch([item([2, 10, 11, 12], 2), item([2, 20], 1)], pad_id=0)
    assert batch.input_ids.tolist() == [[2, 10, 11, 12], [2, 20, 0, 0]]
    assert batch.attention_mask is not None
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    # labels[t] is the target of position t: token t+1 when t+1 is trained.
    assert batch.shifted_labels.tolist() == [[-100, 11, 12, -100], [20, -100, -100, -100]]
    assert batch.real_tokens == 6 and batch.num_label_tokens == 3


def test_pack_rows_uses_every_example_once_within_the_row_length() -> None:
    lengths = [7, 3, 5, 2, 9, 1, 4]
    items = [item(list(range(2, 2 + n)), 1) for n in lengths]
    rows = pack_rows(items, max_seq_len=10)
    assert sorted(i for row in rows for i in row) == list(range(len(items)))
    assert all(sum(lengths[i] for i in row) <= 10 for row in rows)
    assert len(rows) == 4  # 31 tokens in rows of 10: four rows is optimal


def test_packed_rows_restart_positions_per_example() -> None:
    batch = packed_batch([[item([2, 5, 6], 1), item([2, 7], 1)]], pad_id=0)
    assert batch.position_ids is not None and batch.attention_mask is None
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1]]
    assert batch.shifted_labels.tolist() == [[5, 6, -100, 7, -100]]


def test_packing_gives_the_same_loss_as_separate_sequences(model_dir: Path, tokenizer: Any) -> None:
    # Exact attention separation: each example's per-token losses inside a packed row equal those
    # of the example run alone (fp32, so only summation order differs).
    from transformers import AutoModelForCausalLM

    from training.model import label_loss

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    texts = ["The capital of France is Paris.", "Water boils at 100 degrees.", "Hi"]
    items = []
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        items.append(Tokenized(ids, [IGNORE_INDEX, *ids[1:]], text))
    with torch.no_grad():
        alone = sum(float(label_loss(model, pad_batch([x], 0))[0]) for x in items)
        packed, count = label_loss(model, packed_batch([items], 0))
        padded, _ = label_loss(model, pad_batch(items, 0))
    assert count == sum(x.num_label_tokens for x in items)
    assert abs(float(packed) - alone) < 1e-3 * alone
    assert abs(float(padded) - alone) < 1e-3 * alone
