"""The one percentile formula (ragdock/quantiles.py), on values small enough to rank by hand."""

from __future__ import annotations

import pytest

from ragdock.quantiles import nearest_rank


def test_it_picks_the_measured_value_of_the_nearest_rank() -> None:
    twenty = [float(i) for i in range(20, 0, -1)]  # 20..1: the order given does not matter
    # rank = q * (n - 1) from 0, halves up: p50 -> 9.5 -> 10 (the 11th value), p95 -> 18.05 -> 18
    assert nearest_rank(twenty, 0.5) == 11.0
    assert nearest_rank(twenty, 0.95) == 19.0
    assert nearest_rank(twenty, 0.0) == 1.0 and nearest_rank(twenty, 1.0) == 20.0


def test_it_never_interpolates() -> None:
    assert nearest_rank([1.0, 100.0], 0.5) == 100.0  # rank 0.5 rounds up, never 50.5
    assert nearest_rank([1.0, 100.0], 0.49) == 1.0
    assert nearest_rank([3.0, 1.0, 2.0, 5.0, 4.0], 0.95) == 5.0
    assert nearest_rank([7.0], 0.95) == 7.0


@pytest.mark.parametrize(("values", "q"), [([], 0.5), ([1.0], -0.1), ([1.0], 1.5)])
def test_no_values_or_a_q_outside_0_1_is_refused(values: list[float], q: float) -> None:
    with pytest.raises(ValueError):
        nearest_rank(values, q)
