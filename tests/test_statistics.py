"""Confidence intervals of a mean: the normal approximation and the Bonferroni level against scipy, the
percentile bootstrap against a naive loop over the same resamples and by its coverage of a known mean."""
import math

import numpy as np
import pytest
from scipy import stats

from pnp_kernels.statistics import (bonferroni_level, bootstrap_mean, holm_significant, mean_interval, paired_differences,
                                    two_sided_p)


@pytest.mark.parametrize("level", [0.95, 1 - 0.05 / 50])
def test_mean_interval_is_the_normal_approximation(level):
    values = np.random.default_rng().normal(0.3, 2.0, 517)
    interval = mean_interval(values, level)
    half = stats.norm.ppf(0.5 + level / 2) * values.std(ddof=1) / math.sqrt(values.size)
    assert interval.n == 517 and interval.mean == pytest.approx(values.mean()) and interval.level == level
    assert interval.low == pytest.approx(values.mean() - half) and interval.high == pytest.approx(values.mean() + half)


def test_nan_values_are_left_out_and_counted():
    interval = mean_interval([1.0, np.nan, 3.0, np.nan])
    assert interval.n == 2 and interval.mean == 2.0 and interval.low < 2.0 < interval.high
    assert mean_interval([np.nan]).n == 0 and math.isnan(mean_interval([]).mean)
    single = mean_interval([4.0])
    assert single.n == 1 and single.mean == 4.0 and math.isnan(single.low) and not single.excludes_zero()


def test_bonferroni_level_splits_the_error_rate():
    assert bonferroni_level(1) == pytest.approx(0.95) and bonferroni_level(50) == pytest.approx(0.999)
    with pytest.raises(ValueError, match="comparisons"):
        bonferroni_level(0)
    with pytest.raises(ValueError, match="level"):
        mean_interval([1.0, 2.0], level=1.0)


def naive_bootstrap(values, level, resamples, seed):
    """The percentile bootstrap written out: the same resample indices, each mean summed by hand, and the
    percentiles interpolated linearly between the sorted means."""
    finite = [value for value in values if math.isfinite(value)]
    picks = np.random.default_rng(seed).integers(0, len(finite), size=(resamples, len(finite)))
    means = sorted(sum(finite[i] for i in row) / len(finite) for row in picks.tolist())

    def percentile(q):
        position = q / 100 * (len(means) - 1)
        below = math.floor(position)
        above = min(below + 1, len(means) - 1)
        return means[below] + (position - below) * (means[above] - means[below])

    tail = 100 * (1 - level) / 2
    return sum(finite) / len(finite), percentile(tail), percentile(100 - tail)


@pytest.mark.parametrize("level, resamples", [(0.95, 997), (0.8, 250), (1 - 0.05 / 7, 1301)])
def test_bootstrap_matches_a_naive_percentile_bootstrap(level, resamples):
    rng = np.random.default_rng()
    values = rng.exponential(1.5, size=int(rng.integers(5, 60)))
    values[rng.integers(0, values.size)] = np.nan
    seed = int(rng.integers(0, 2**31))
    interval = bootstrap_mean(values, level, resamples=resamples, seed=seed)
    mean, low, high = naive_bootstrap(values.tolist(), level, resamples, seed)
    assert interval.n == values.size - 1 and interval.level == level
    assert (interval.mean, interval.low, interval.high) == pytest.approx((mean, low, high), rel=1e-12)


def test_bootstrap_covers_the_known_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng()
    true_mean, trials = 0.3, 300
    covered = 0
    for trial in range(trials):
        values = rng.normal(true_mean, 1.0, size=41)
        interval = bootstrap_mean(values, resamples=1000, seed=trial)
        assert interval.low <= interval.mean <= interval.high
        assert interval.mean == pytest.approx(values.mean())
        covered += interval.low <= true_mean <= interval.high
    # Percentile intervals run slightly narrow at n = 41; binomial spread at 300 trials is about 1.3%.
    assert 0.88 <= covered / trials <= 0.99


def test_bootstrap_width_matches_the_standard_error():
    values = np.random.default_rng().exponential(2.0, size=400)
    interval = bootstrap_mean(values)
    standard_error = values.std(ddof=1) / np.sqrt(values.size)
    assert interval.high - interval.low == pytest.approx(2 * 1.96 * standard_error, rel=0.1)


def test_bootstrap_is_seeded_and_nan_aware():
    values = [0.5, np.nan, 1.5, 2.0, np.nan]
    first, second = bootstrap_mean(values, seed=3), bootstrap_mean(values, seed=3)
    assert first == second and first.n == 3 and first.mean == pytest.approx(4 / 3)
    assert bootstrap_mean([np.nan]).n == 0
    single = bootstrap_mean([0.25])
    assert (single.mean, single.low, single.high) == (0.25, 0.25, 0.25)


def test_paired_differences_and_bad_arguments():
    assert paired_differences([3.0, 1.0], [1.0, 1.5]).tolist() == [2.0, -0.5]
    with pytest.raises(ValueError, match="pair up"):
        paired_differences([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="level"):
        bootstrap_mean([1.0], level=1.5)
    with pytest.raises(TypeError, match="resamples"):
        bootstrap_mean([1.0], resamples=10.0)


def test_two_sided_p_is_the_z_test():
    values = np.random.default_rng().normal(0.1, 1.0, 301)
    z = values.mean() / (values.std(ddof=1) / math.sqrt(values.size))
    assert two_sided_p(values) == pytest.approx(2 * stats.norm.sf(abs(z)))
    assert two_sided_p([1.0, np.nan, 1.0]) == 0.0 and two_sided_p([0.0, 0.0]) == 1.0 and math.isnan(two_sided_p([2.0]))


def _holm_naive(p_values, family_error):
    """Holm by adjusted p-values: the running maximum of (m - i) p_(i), capped at 1."""
    order = np.argsort(p_values)
    adjusted, running = np.empty(len(p_values)), 0.0
    for i, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - i) * p_values[index]))
        adjusted[index] = running
    return list(adjusted <= family_error)


@pytest.mark.parametrize("tests", [1, 7, 72])
def test_holm_equals_the_adjusted_p_values(tests):
    rng = np.random.default_rng()
    p_values = np.concatenate([rng.uniform(0, 0.004, tests // 3), rng.uniform(0, 1, tests - tests // 3)])
    rng.shuffle(p_values)
    assert holm_significant(p_values, 0.05) == _holm_naive(p_values, 0.05)
    assert holm_significant([0.01, 0.04, 0.03], 0.05) == [True, False, False]  # 0.03 > 0.05 / 2 stops it
    assert holm_significant([0.01, np.nan], 0.05) == [True, False]
    with pytest.raises(ValueError, match="family_error"):
        holm_significant([0.01], 0.0)
