"""The reader's training objective and the tensors it trains."""

from __future__ import annotations

import torch
from torch import nn

from grounding.reader.batching import ReaderBatch


def span_loss(start: torch.Tensor, end: torch.Tensor, batch: ReaderBatch) -> torch.Tensor:
    """Mean cross-entropy of the start and end positions (BERT's SQuAD loss)."""
    loss_start = nn.functional.cross_entropy(start, batch.start)
    loss_end = nn.functional.cross_entropy(end, batch.end)
    return (loss_start + loss_end) / 2


def trained_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trained tensors by parameter name, detached copies."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
