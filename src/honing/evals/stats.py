"""Bootstrap confidence intervals, so a report says how far a score can be trusted.

Percentile bootstrap over examples: resample the evaluation set with replacement, recompute
the statistic, and take the central `confidence` share of the results. Comparisons between
two models are paired (the same resampled examples for both), which is far tighter than two
separate intervals because per-example difficulty cancels. Everything is deterministic given
`seed`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

MAX_DRAWS_PER_CHUNK = 50_000_000
"""Resampled indices held at once (int64: 400 MB); above this they are drawn in chunks, same result."""


@dataclass(frozen=True)
class Interval:
    """A point estimate on the full data and its bootstrap interval, over `n` examples."""

    mean: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check(confidence: float, resamples: int) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")


def _percentiles(estimates: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2
    low, high = np.quantile(estimates, [tail, 1 - tail])
    return float(low), float(high)


def bootstrap_mean(
    values: Sequence[float], *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> Interval:
    """Mean of `values` with a percentile-bootstrap interval (NaN for no values; a point for one)."""
    _check(confidence, resamples)
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(values.mean())
    if n == 1:
        return Interval(mean, mean, mean, 1)
    rng = np.random.default_rng(seed)
    rows_per_chunk = max(1, MAX_DRAWS_PER_CHUNK // n)
    means = np.empty(resamples)
    for start in range(0, resamples, rows_per_chunk):
        rows = min(rows_per_chunk, resamples - start)
        indices = rng.integers(0, n, size=(rows, n))  # (rows, n)
        means[start : start + rows] = values[indices].mean(axis=1)
    low, high = _percentiles(means, confidence)
    return Interval(mean, low, high, n)


def bootstrap_paired_difference(
    a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> Interval:
    """Mean of a - b over the same examples, resampled jointly: an interval that excludes 0 means
    the two differ on this evaluation set."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired scores must cover the same examples: got {len(a)} and {len(b)}")
    # Resampling the per-example differences is resampling the examples jointly.
    return bootstrap_mean(a - b, confidence=confidence, resamples=resamples, seed=seed)


def bootstrap_statistic(
    fn: Callable[..., float],
    columns: Sequence[Sequence[Any]],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """Interval for any statistic of whole columns (macro-F1 is not a mean of per-example scores).

    Rows are resampled together; `fn(*columns)` receives each resampled column as a list.
    """
    _check(confidence, resamples)
    if not columns:
        raise ValueError("bootstrap_statistic needs at least one column")
    n = len(columns[0])
    if any(len(column) != n for column in columns):
        raise ValueError(f"columns must have the same length: got {[len(column) for column in columns]}")
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    estimate = float(fn(*[list(column) for column in columns]))
    if n == 1:
        return Interval(estimate, estimate, estimate, 1)
    # Object arrays: fancy indexing keeps the caller's values (str stays str, not numpy.str_).
    arrays = []
    for column in columns:
        array = np.empty(n, dtype=object)
        for row, value in enumerate(column):  # not array[:] = column: numpy would unpack tuple values
            array[row] = value
        arrays.append(array)
    rng = np.random.default_rng(seed)
    estimates = np.empty(resamples)
    for i in range(resamples):
        indices = rng.integers(0, n, size=n)
        estimates[i] = fn(*[array[indices].tolist() for array in arrays])
    low, high = _percentiles(estimates, confidence)
    return Interval(estimate, low, high, n)
