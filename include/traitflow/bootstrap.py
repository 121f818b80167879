"""Bootstrap confidence intervals over customers, for metric means and ratios of means.

Customers are resampled with replacement; every method's metrics are averaged over the *same*
resamples, so a lift (ratio of two methods' means) gets an interval that accounts for the
methods being scored on the same customers. A resample is a row of counts (how often each
customer is drawn), and all means of a block of resamples are one matrix product.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 1000
LEVEL = 0.95
_MAX_BLOCK_CELLS = 4_000_000  # resamples x customers per block of counts (32 MB of float64)


def resample_means(
    values: np.ndarray, *, n_resamples: int = DEFAULT_RESAMPLES, random_state: int = 0
) -> np.ndarray:
    """Means of ``values`` over bootstrap resamples of its rows.

    Parameters
    ----------
    values : ndarray, shape (n, m) -- one row per customer, one column per metric

    Returns
    -------
    ndarray of float64, shape (n_resamples, m)
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or len(values) == 0:
        raise ValueError(f"values must have shape (n >= 1, m), got {values.shape}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    n = len(values)
    rng = np.random.default_rng(random_state)
    block = max(1, _MAX_BLOCK_CELLS // n)
    out = np.empty((n_resamples, values.shape[1]))
    for start in range(0, n_resamples, block):
        stop = min(start + block, n_resamples)
        b = stop - start
        drawn = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
        counts = np.bincount(drawn.ravel(), minlength=b * n).reshape(b, n).astype(np.float64)
        out[start:stop] = counts @ values / n
    return out


def percentile_interval(samples: np.ndarray, level: float = LEVEL) -> np.ndarray:
    """The central ``level`` percentile interval of each column: shape (m, 2) (one column: (2,))."""
    alpha = (1.0 - level) / 2.0
    return np.nanquantile(samples, [alpha, 1.0 - alpha], axis=0).T


@dataclass(frozen=True)
class Comparison:
    """Means with bootstrap intervals for several methods, and lifts of one over a baseline.

    means, intervals : method -> metric -> mean / [low, high]
    lift, lift_intervals : metric -> ratio of means (focus / baseline) / [low, high]
    """

    means: dict[str, dict[str, float]]
    intervals: dict[str, dict[str, list[float]]]
    lift: dict[str, float]
    lift_intervals: dict[str, list[float]]
    n_resamples: int
    level: float


def compare(
    per_customer: dict[str, dict[str, np.ndarray]],
    *,
    focus: str = "profile",
    baseline: str = "popularity",
    n_resamples: int = DEFAULT_RESAMPLES,
    random_state: int = 0,
    level: float = LEVEL,
) -> Comparison:
    """Bootstrap every method's mean metrics and the lift of ``focus`` over ``baseline``.

    ``per_customer`` maps method -> metric -> ndarray (n,), the same n customers in the same
    order for every method (the resamples are shared: one draw of customers per resample).
    A lift whose baseline mean is 0 on a resample is NaN there (left out of the interval).
    """
    methods = list(per_customer)
    metrics = list(per_customer[methods[0]])
    columns = [per_customer[m][k] for m in methods for k in metrics]
    values = np.column_stack(columns)
    samples = resample_means(values, n_resamples=n_resamples, random_state=random_state)
    samples = samples.reshape(n_resamples, len(methods), len(metrics))
    point = values.mean(axis=0).reshape(len(methods), len(metrics))
    bounds = percentile_interval(samples.reshape(n_resamples, -1), level)
    bounds = bounds.reshape(len(methods), len(metrics), 2)
    means = {m: {k: float(point[i, j]) for j, k in enumerate(metrics)} for i, m in enumerate(methods)}
    intervals = {
        m: {k: [float(bounds[i, j, 0]), float(bounds[i, j, 1])] for j, k in enumerate(metrics)}
        for i, m in enumerate(methods)
    }
    lift: dict[str, float] = {}
    lift_intervals: dict[str, list[float]] = {}
    if focus in per_customer and baseline in per_customer:
        f, b = methods.index(focus), methods.index(baseline)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = np.where(samples[:, b] > 0, samples[:, f] / samples[:, b], np.nan)
        ratio_bounds = percentile_interval(ratios, level)
        for j, k in enumerate(metrics):
            lift[k] = float(point[f, j] / point[b, j]) if point[b, j] > 0 else float("inf")
            lift_intervals[k] = [float(ratio_bounds[j, 0]), float(ratio_bounds[j, 1])]
    return Comparison(means, intervals, lift, lift_intervals, n_resamples, level)
