"""`metrics.jsonl`, the log a training run writes: one line per optimizer step and one per
evaluation. The registry keeps it with a pushed version and the console draws its loss curve."""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field, SerializerFunctionWrapHandler, field_validator, model_serializer

from ragdock.contracts.base import Contract

METRICS_LOG = "metrics.jsonl"


class StepRecord(Contract):
    """One optimizer step."""

    step: int = Field(ge=0)
    epoch: float
    loss: float
    lr: float
    tokens: int
    label_tokens: int
    tokens_per_s: float
    seconds: float


class EvalRecord(Contract):
    """One evaluation on the validation split."""

    step: int = Field(ge=0)
    eval_loss: float
    best_eval_loss: float | None = None


class HistoryPoint(Contract):
    """What a loss curve needs of either record: the step and the loss(es) it logged.

    Non-finite losses are dropped (NaN is no JSON a browser parses); a point with no loss left is
    no point (see `history_point`).
    """

    step: int = Field(ge=0, strict=True)
    loss: float | None = None
    eval_loss: float | None = None

    @field_validator("loss", "eval_loss", mode="before")
    @classmethod
    def _finite(cls, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, int | float) or value is None:
            return None
        return value if math.isfinite(value) else None

    @model_serializer(mode="wrap")
    def _only_logged(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A point carries the losses its record logged; the other is absent, not null.
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None}
