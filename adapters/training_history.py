"""An adapter version's loss curve, read from the `metrics.jsonl` its training run left beside it.

`ragdock train` writes one JSON line per logged step (`step`, `loss`, and more) and one per
evaluation (`step`, `eval_loss`); a pushed run directory keeps that file. The console plots it, so
only the three numbers are kept and a long run is thinned to a curve's worth of points: every
evaluation (there are few, and they decide early stopping), and at most `MAX_TRAIN_POINTS` train
points evenly spread, the first and the last among them. The file is the pusher's, so it is read
defensively: at most its first `MAX_BYTES`, and a line that is not such a record is skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ragdock.contracts.training_history import METRICS_LOG, HistoryPoint

MAX_BYTES = 4 * 2**20
MAX_TRAIN_POINTS = 400


def read_training_history(
    directory: Path, *, max_bytes: int = MAX_BYTES, max_train_points: int = MAX_TRAIN_POINTS
) -> list[HistoryPoint] | None:
    """The version's training records, in file order: `step` with `loss` and/or `eval_loss`.

    Returns:
        None when the directory has no readable `metrics.jsonl`; otherwise its well-formed
        records, thinned to every eval point plus at most `max_train_points` train points.
    """
    path = directory / METRICS_LOG
    try:
        if not path.is_file():
            return None
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError:
        return None
    if len(data) > max_bytes:
        # Cut at the cap: whatever follows the last whole line is a piece of a record.
        data = data[:max_bytes]
        data = data[: data.rfind(b"\n") + 1]
    points = [p for line in data.splitlines() if (p := _point(line)) is not None]
    return _thin(points, max_train_points)


def _point(line: bytes) -> HistoryPoint | None:
    try:
        record: Any = json.loads(line)
    except ValueError:  # not JSON, or not UTF-8
        return None
    if not isinstance(record, dict):
        return None
    try:
        # Only the curve's fields are read: a record's other fields (lr, tokens...) are the
        # run's business, and a line that is no such record is skipped, not an error.
        point = HistoryPoint.model_validate(
            {k: record.get(k) for k in ("step", "loss", "eval_loss")}
        )
    except ValidationError:
        return None
    return point if point.loss is not None or point.eval_loss is not None else None


def _thin(points: list[HistoryPoint], max_train_points: int) -> list[HistoryPoint]:
    """Every eval point, and train points evenly spread (the last one kept), in file order."""
    train = [i for i, p in enumerate(points) if p.eval_loss is None]
    if len(train) <= max_train_points:
        return points
    last, slots = len(train) - 1, max(2, max_train_points) - 1
    kept = {train[round(k * last / slots)] for k in range(slots + 1)}
    return [p for i, p in enumerate(points) if p.eval_loss is not None or i in kept]
