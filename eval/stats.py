"""Paired bootstrap confidence intervals for the difference between two models on the same examples.

Both models answered the same questions, so the examples are resampled together (one index draw
serves both): the interval then reflects how much the DIFFERENCE moves with the sample, which is far
narrower than comparing two independent intervals. The generator is seeded, so a report reproduces
exactly and a gate cannot flip between two runs on the same outputs.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Interval:
    delta: float  # statistic(candidate) - statistic(reference) on the full sample
    low: float
    high: float
    level: float
    n: int

    def as_json(self) -> dict[str, float]:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}


def mean_of(values: Sequence[float | None], indices: Sequence[int]) -> float:
    """Mean of the values at `indices`, skipping None (examples a metric does not count)."""
    picked = [v for i in indices if (v := values[i]) is not None]
    return sum(picked) / len(picked) if picked else 0.0


def paired_bootstrap(
    candidate: Sequence[float | None],
    reference: Sequence[float | None],
    *,
    statistic: Callable[[Sequence[float | None], Sequence[int]], float] = mean_of,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile interval of statistic(candidate) - statistic(reference) under paired resampling.

    Args:
        candidate, reference: per-example values, aligned (same example at the same index);
            None where an example does not count for this metric.
        statistic: maps (values, indices) to a number; the mean by default.
        resamples: bootstrap draws; 2000 keeps the 2.5% tails stable to about +-0.005.
        level: two-sided confidence level.
        seed: fixes the draws, so the same outputs always give the same interval.

    Raises:
        ValueError: the two sequences differ in length or are empty.
    """
    if len(candidate) != len(reference) or not candidate:
        raise ValueError(
            f"paired bootstrap needs two aligned, non-empty samples (got {len(candidate)} and "
            f"{len(reference)})"
        )
    n = len(candidate)
    everything = range(n)
    delta = statistic(candidate, everything) - statistic(reference, everything)
    rng = random.Random(seed)
    draws = []
    for _ in range(resamples):
        sample = [rng.randrange(n) for _ in range(n)]
        draws.append(statistic(candidate, sample) - statistic(reference, sample))
    draws.sort()
    tail = (1 - level) / 2
    low = draws[int(tail * (resamples - 1))]
    high = draws[round((1 - tail) * (resamples - 1))]
    return Interval(delta=delta, low=low, high=high, level=level, n=n)
