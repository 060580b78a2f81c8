"""Early stopping on validation loss: a pure update over the loop state."""

from __future__ import annotations

from training.checkpoint import LoopState


def update_early_stopping(
    state: LoopState, eval_loss: float, *, patience: int, min_delta: float
) -> tuple[bool, bool]:
    """Record an evaluation in `state`.

    Args:
        state: the loop state (best loss, best step and the count of evaluations without
            improvement are updated in place).
        eval_loss: this evaluation's validation loss.
        patience: evaluations without improvement that stop training; 0 never stops.
        min_delta: how much lower than the best a loss must be to count as an improvement.

    Returns:
        (improved, stop).
    """
    if state.best_eval_loss is None or eval_loss < state.best_eval_loss - min_delta:
        state.best_eval_loss = eval_loss
        state.best_step = state.step
        state.evals_without_improvement = 0
        return True, False
    state.evals_without_improvement += 1
    return False, bool(patience) and state.evals_without_improvement >= patience
