"""Early stopping over a scripted sequence of validation losses."""

from __future__ import annotations

from training.checkpoint import LoopState
from training.stopping import update_early_stopping


def replay(losses: list[float], patience: int, min_delta: float = 0.0) -> tuple[LoopState, int]:
    state = LoopState()
    for step, loss in enumerate(losses, start=1):
        state.step = step
        _, stop = update_early_stopping(state, loss, patience=patience, min_delta=min_delta)
        if stop:
            return state, step
    return state, 0


def test_stops_after_patience_evaluations_without_improvement() -> None:
    state, stopped_at = replay([3.0, 2.0, 2.5, 1.9, 2.0, 2.1, 1.0], patience=2)
    assert stopped_at == 6 and state.best_step == 4 and state.best_eval_loss == 1.9


def test_patience_zero_never_stops_but_tracks_the_best() -> None:
    state, stopped_at = replay([3.0, 4.0, 5.0, 6.0], patience=0)
    assert stopped_at == 0 and state.best_step == 1 and state.evals_without_improvement == 3


def test_min_delta_ignores_tiny_improvements() -> None:
    state, stopped_at = replay([2.0, 1.99, 1.98], patience=2, min_delta=0.05)
    assert stopped_at == 3 and state.best_step == 1
