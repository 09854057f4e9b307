"""Bootstrap intervals: coverage on synthetic data, paired differences, a generic statistic."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from honing.evals import stats
from honing.evals.metrics import macro_f1
from honing.evals.stats import Interval, bootstrap_mean, bootstrap_paired_difference, bootstrap_statistic


def test_bootstrap_mean_covers_the_true_mean():
    # 300 evaluation sets of 80 Bernoulli(0.3) scores: a 95% interval should hold 0.3 about 95%
    # of the time (the percentile bootstrap runs a little under at this n, hence the band).
    rng = np.random.default_rng(1234)
    samples = rng.binomial(1, 0.3, size=(300, 80)).astype(float)
    covered = 0
    for i, sample in enumerate(samples):
        interval = bootstrap_mean(sample, resamples=1000, seed=i)
        assert interval.low <= interval.mean <= interval.high
        covered += interval.low <= 0.3 <= interval.high
    assert 0.90 <= covered / 300 <= 0.985


def test_bootstrap_mean_edge_cases_and_determinism():
    empty = bootstrap_mean([])
    assert empty.n == 0 and all(math.isnan(x) for x in (empty.mean, empty.low, empty.high))
    assert bootstrap_mean([0.7]) == Interval(0.7, 0.7, 0.7, 1)
    assert bootstrap_mean([0.5] * 10) == Interval(0.5, 0.5, 0.5, 10)
    values = [1.0, 0.0, 1.0, 1.0, 0.0, 0.5]
    assert bootstrap_mean(values, seed=7) == bootstrap_mean(values, seed=7)
    assert bootstrap_mean(values, seed=7) != bootstrap_mean(values, seed=8)
    interval = bootstrap_mean(values)
    assert interval.mean == pytest.approx(3.5 / 6)
    assert interval.as_dict() == {"mean": interval.mean, "low": interval.low, "high": interval.high, "n": 6}
    # a wider confidence gives a wider interval
    wide = bootstrap_mean(values, confidence=0.99)
    assert wide.low <= interval.low and wide.high >= interval.high
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_mean(values, confidence=95)


def test_bootstrap_mean_in_chunks_equals_one_draw(monkeypatch):
    values = np.random.default_rng(0).random(51)
    whole = bootstrap_mean(values, resamples=400, seed=3)
    monkeypatch.setattr(stats, "MAX_DRAWS_PER_CHUNK", 51 * 7)  # 7 resamples a chunk, the last one short
    # numpy's Generator yields the same index stream whether drawn in one call or in several
    assert bootstrap_mean(values, resamples=400, seed=3) == whole


def test_paired_difference_of_a_constant_shift_is_a_point():
    a = np.random.default_rng(5).random(40)
    b = a + 0.1
    interval = bootstrap_paired_difference(a, b)
    # every per-example difference is -0.1, so every resample's mean is too
    assert interval.mean == pytest.approx(-0.1)
    assert interval.low == pytest.approx(-0.1)
    assert interval.high == pytest.approx(-0.1)
    assert interval.n == 40


def test_paired_difference_excludes_zero_when_the_models_differ():
    rng = np.random.default_rng(11)
    difficulty = rng.random(200)  # shared per-example difficulty cancels in the pairing
    a = np.clip(difficulty + 0.15 + rng.normal(0, 0.05, 200), 0, 1)
    b = np.clip(difficulty + rng.normal(0, 0.05, 200), 0, 1)
    interval = bootstrap_paired_difference(a, b, seed=1)
    assert 0 < interval.low < interval.mean < interval.high
    assert interval.mean == pytest.approx(float(np.mean(a - b)))
    with pytest.raises(ValueError, match="same examples"):
        bootstrap_paired_difference([1.0, 0.0], [1.0])


def test_bootstrap_statistic_with_macro_f1():
    label_set = ["pos", "neg", "neu"]
    labels = ["pos", "pos", "pos", "neg", "neg", "neu"] * 10
    predictions = ["pos", "neg", "pos", "neg", "maybe", "pos"] * 10
    statistic = functools.partial(macro_f1, label_set=label_set)
    interval = bootstrap_statistic(statistic, [predictions, labels], resamples=300, seed=0)
    # the point estimate is the full-data macro-F1 (7/18, see test_metrics), inside the interval
    assert interval.mean == pytest.approx(7 / 18)
    assert interval.n == 60
    assert 0.0 <= interval.low < interval.mean < interval.high <= 1.0
    assert interval == bootstrap_statistic(statistic, [predictions, labels], resamples=300, seed=0)
    with pytest.raises(ValueError, match="same length"):
        bootstrap_statistic(statistic, [predictions, labels[:-1]])


def test_bootstrap_statistic_passes_lists_of_the_callers_values():
    seen = []

    def first_types(column):
        seen.append((type(column), type(column[0])))
        return float(len(column))

    interval = bootstrap_statistic(first_types, [[("a", 1), ("b", 2)]], resamples=5)
    assert interval == Interval(2.0, 2.0, 2.0, 2)
    assert set(seen) == {(list, tuple)}
