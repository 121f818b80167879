"""Bootstrap intervals over customers: known answers on planted hit probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from traitflow.bootstrap import compare, percentile_interval, resample_means


def test_resample_means_draws_customers_with_replacement():
    values = np.column_stack([np.arange(5.0), np.ones(5)])
    samples = resample_means(values, n_resamples=2000, random_state=3)
    assert samples.shape == (2000, 2)
    np.testing.assert_array_equal(samples[:, 1], 1.0)  # every resample of a constant is the constant
    assert set(np.round(samples[:, 0] * 5).astype(int)) <= set(range(21))  # sums of 5 draws of 0..4
    assert samples[:, 0].mean() == pytest.approx(2.0, abs=0.05)
    # The standard error of a mean of 5 draws: sqrt(var / n) with the population variance 2.
    assert samples[:, 0].std() == pytest.approx(np.sqrt(2.0 / 5), rel=0.1)
    np.testing.assert_array_equal(samples, resample_means(values, n_resamples=2000, random_state=3))


def test_blocks_of_resamples_give_the_same_draws_as_one_block(monkeypatch):
    values = np.random.default_rng(0).random((50, 3))
    whole = resample_means(values, n_resamples=64, random_state=1)
    monkeypatch.setattr("traitflow.bootstrap._MAX_BLOCK_CELLS", 50 * 7)  # blocks of 7 resamples
    blocked = resample_means(values, n_resamples=64, random_state=1)
    np.testing.assert_allclose(blocked, whole, rtol=1e-12)


def test_intervals_cover_the_planted_lift_at_about_the_nominal_rate():
    # Two methods scored on the same customers: profile hits with probability 0.6, popularity
    # with 0.4 (correlated: popularity hits imply profile hits), so the true lift is 1.5.
    rng = np.random.default_rng(7)
    n, repeats = 800, 120
    covered_lift = covered_mean = 0
    for repeat in range(repeats):
        u = rng.random(n)
        per_customer = {
            "profile": {"hit@10": (u < 0.6).astype(float)},
            "popularity": {"hit@10": (u < 0.4).astype(float)},
        }
        result = compare(per_customer, n_resamples=400, random_state=repeat)
        low, high = result.lift_intervals["hit@10"]
        covered_lift += low <= 1.5 <= high
        low, high = result.intervals["profile"]["hit@10"]
        covered_mean += low <= 0.6 <= high
        assert result.lift["hit@10"] == pytest.approx(
            result.means["profile"]["hit@10"] / result.means["popularity"]["hit@10"]
        )
    # 95% intervals: coverage within a few binomial standard errors (sd ~ 0.02 at 120 repeats).
    assert 0.88 <= covered_lift / repeats <= 1.0
    assert 0.88 <= covered_mean / repeats <= 1.0


def test_interval_width_shrinks_with_more_customers():
    rng = np.random.default_rng(0)
    widths = []
    for n in (200, 3200):
        hits = {
            "profile": {"hit@10": (rng.random(n) < 0.6).astype(float)},
            "popularity": {"hit@10": (rng.random(n) < 0.4).astype(float)},
        }
        low, high = compare(hits, n_resamples=500).lift_intervals["hit@10"]
        widths.append(high - low)
    assert widths[1] < widths[0] / 2.5  # ~1/sqrt(n): 16x the customers, about a quarter the width


def test_percentile_interval_of_known_samples():
    samples = np.arange(1001.0)[:, None]
    np.testing.assert_allclose(percentile_interval(samples), [[25.0, 975.0]])
