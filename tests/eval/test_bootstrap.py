"""Paired bootstrap intervals: seeded, centred on the observed delta, paired."""

from __future__ import annotations

import random

import pytest

from eval.stats import paired_bootstrap


def test_interval_contains_the_delta_and_reproduces() -> None:
    rng = random.Random(1)
    base = [float(rng.random() < 0.5) for _ in range(200)]
    cand = [1.0 if b else float(rng.random() < 0.3) for b in base]  # never worse, sometimes better
    first = paired_bootstrap(cand, base, resamples=500, seed=7)
    again = paired_bootstrap(cand, base, resamples=500, seed=7)
    assert first == again
    assert first.low <= first.delta <= first.high
    assert first.low > 0  # a consistent improvement is significant when paired


def test_identical_models_give_a_zero_width_interval() -> None:
    values = [0.0, 1.0, 1.0, 0.0, 1.0]
    interval = paired_bootstrap(values, values, resamples=200)
    assert (interval.delta, interval.low, interval.high) == (0.0, 0.0, 0.0)


def test_pairing_narrows_the_interval() -> None:
    # Both models share most of the per-example variance; pairing removes it.
    rng = random.Random(3)
    hard = [rng.random() for _ in range(100)]
    base = [h for h in hard]
    cand = [h + 0.05 for h in hard]
    interval = paired_bootstrap(cand, base, resamples=300)
    assert interval.delta == pytest.approx(0.05)
    assert interval.high - interval.low < 1e-9


def test_misaligned_samples_are_refused() -> None:
    with pytest.raises(ValueError, match="aligned"):
        paired_bootstrap([1.0], [1.0, 0.0])


def test_none_values_are_skipped() -> None:
    interval = paired_bootstrap([1.0, None, 1.0], [0.0, None, 0.0], resamples=100)
    assert interval.delta == pytest.approx(1.0)
