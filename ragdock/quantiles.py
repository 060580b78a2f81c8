"""The one percentile formula: the gateway's last-minute status, the eval and the benchmarks all
report p50/p95 with it, so a figure means the same wherever it is printed."""

from __future__ import annotations

from collections.abc import Sequence


def nearest_rank(values: Sequence[float], q: float) -> float:
    """The q-quantile of `values` by nearest rank: the measured value whose rank lies nearest to
    q of the way from the smallest to the largest (halves round up), never an interpolation.

    Args:
        values: measured values, in any order.
        q: from 0 (the smallest) to 1 (the largest); 0.5 is the median, 0.95 the p95.

    Returns:
        One of `values`.

    Raises:
        ValueError: `values` is empty, or `q` is outside [0, 1].
    """
    if not values:
        raise ValueError("the quantile of no values is undefined")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must lie in [0, 1], got {q}")
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1) + 0.5)]
