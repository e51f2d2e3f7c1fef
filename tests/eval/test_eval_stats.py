"""Bootstrap intervals: coverage of a known mean, determinism, NaN handling, argument checks."""
import numpy as np
import pytest

from pnp_kernels.eval.stats import bootstrap_mean, paired_differences


def test_interval_covers_the_known_mean_about_95_percent_of_the_time():
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


def test_interval_width_matches_the_standard_error():
    values = np.random.default_rng().exponential(2.0, size=400)
    interval = bootstrap_mean(values)
    standard_error = values.std(ddof=1) / np.sqrt(values.size)
    assert interval.high - interval.low == pytest.approx(2 * 1.96 * standard_error, rel=0.1)


def test_seeded_and_nan_aware():
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
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_mean([1.0], confidence=1.5)
    with pytest.raises(TypeError, match="resamples"):
        bootstrap_mean([1.0], resamples=10.0)
