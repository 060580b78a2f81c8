"""What every task hands back to the runner, and what every task is given."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eval.gateway import EvalGateway

PerExample = dict[str, list[float | None]]  # metric -> value per example (None: not counted)


@dataclass
class TaskContext:
    """The models to compare and how to ask them."""

    gateway: EvalGateway
    models: dict[str, str]  # role (candidate, base, previous) -> model name on the gateway
    seed: int
    concurrency: int
    progress: Callable[[str, int], Callable[[], None]]  # (label, total) -> tick


@dataclass
class TaskResult:
    """Scores of one task for every model, with per-example values for paired intervals."""

    name: str
    kind: str
    data: dict[str, dict[str, Any]]  # role of the file -> {path, sha256, examples}
    metrics: dict[str, dict[str, float]]  # model role -> metric -> value
    per_example: dict[str, PerExample] = field(default_factory=dict)  # model role -> values
    predictions: list[dict[str, Any]] = field(default_factory=list)  # every output, for review
    failures: list[dict[str, Any]] = field(default_factory=list)  # the candidate's worst cases
    relative: dict[str, dict[str, float]] = field(default_factory=dict)  # derived, vs base
    notes: list[str] = field(default_factory=list)
