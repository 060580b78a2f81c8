"""Reading an adapter version's `metrics.jsonl` as `ragdock train` writes it: only step, loss and
eval loss are kept, a line that is not such a record is skipped, a long run is thinned to every
eval point plus at most 400 train points (the last one kept), and a huge file is read only in
part."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from adapters import training_history
from adapters.training_history import MAX_TRAIN_POINTS


def read_training_history(directory: Path, **limits: int) -> list[dict[str, Any]] | None:
    """The history as the API sends it (each point's logged losses, no nulls)."""
    history = training_history.read_training_history(directory, **limits)
    return None if history is None else [point.model_dump() for point in history]


def _write(directory: Path, records: list[Any]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    (directory / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return directory


def test_no_metrics_file_is_none_and_an_empty_one_is_no_points(tmp_path: Path) -> None:
    assert read_training_history(tmp_path) is None
    (tmp_path / "metrics.jsonl").write_text("")
    assert read_training_history(tmp_path) == []


def test_the_recipes_records_keep_step_loss_and_eval_loss_only(tmp_path: Path) -> None:
    step = {"step": 1, "epoch": 0.01, "loss": 2.5, "lr": 1e-4, "tokens": 512, "seconds": 0.3}
    evaluation = {"step": 1, "eval_loss": 2.25, "best_eval_loss": 2.25}
    both = {"step": 2, "loss": 2, "eval_loss": 1.5}
    assert read_training_history(_write(tmp_path, [step, evaluation, both])) == [
        {"step": 1, "loss": 2.5},
        {"step": 1, "eval_loss": 2.25},
        {"step": 2, "loss": 2, "eval_loss": 1.5},
    ]


def test_malformed_lines_are_skipped(tmp_path: Path) -> None:
    records: list[Any] = [
        "not json",
        "[1, 2]",
        {"loss": 1.0},  # no step
        {"step": "3", "loss": 1.0},
        {"step": True, "loss": 1.0},
        {"step": 4, "loss": "low"},
        {"step": 5, "loss": True},
        {"step": 6},
        '{"step": 7, "loss": NaN}',
        '{"step": 8, "loss": Infinity, "eval_loss": 1.25}',
        {"step": 9, "loss": 0.5},
        "",
    ]
    (tmp_path / "metrics.jsonl").write_bytes(b"\xff\xfe garbage\n")
    with (tmp_path / "metrics.jsonl").open("a") as handle:
        handle.write("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records))
    assert read_training_history(tmp_path) == [
        {"step": 8, "eval_loss": 1.25},
        {"step": 9, "loss": 0.5},
    ]


def test_a_long_run_is_thinned_keeping_every_eval_and_the_last_train_point(
    tmp_path: Path,
) -> None:
    records: list[Any] = []
    for s in range(1, 5001):
        records.append({"step": s, "loss": 1 / s})
        if s % 250 == 0:
            records.append({"step": s, "eval_loss": 2 / s})
    history = read_training_history(_write(tmp_path, records))
    assert history is not None
    train = [p for p in history if "loss" in p]
    evals = [p for p in history if "eval_loss" in p]
    assert len(train) == MAX_TRAIN_POINTS and len(evals) == 20
    assert train[0]["step"] == 1 and train[-1]["step"] == 5000
    steps = [p["step"] for p in history]
    assert steps == sorted(steps)  # file order: each eval after its step
    gaps = {b["step"] - a["step"] for a, b in itertools.pairwise(train)}
    assert gaps <= {12, 13}  # evenly spread


def test_a_short_run_is_returned_whole(tmp_path: Path) -> None:
    records = [{"step": s, "loss": 1.0} for s in range(1, MAX_TRAIN_POINTS + 1)]
    assert read_training_history(_write(tmp_path, records)) == records


def test_only_the_first_bytes_are_read_and_a_cut_record_is_dropped(tmp_path: Path) -> None:
    first = json.dumps({"step": 1, "loss": 1.0}) + "\n"
    second = json.dumps({"step": 2, "loss": 12345.0}) + "\n"
    (tmp_path / "metrics.jsonl").write_text(first + second + first * 1000)
    # The cap falls inside the second record, just before its closing brace.
    cap = len(first) + len(second) - 2
    assert read_training_history(tmp_path, max_bytes=cap) == [{"step": 1, "loss": 1.0}]
    assert read_training_history(tmp_path, max_bytes=cap + 2) == [
        {"step": 1, "loss": 1.0},
        {"step": 2, "loss": 12345.0},
    ]
