"""Normal-approximation intervals and the Bonferroni level, against scipy."""
import math

import numpy as np
import pytest
from scipy import stats

from pnp_kernels.statistics import bonferroni_level, mean_interval


@pytest.mark.parametrize("level", [0.95, 1 - 0.05 / 50])
def test_mean_interval_is_the_normal_approximation(level):
    values = np.random.default_rng().normal(0.3, 2.0, 517)
    interval = mean_interval(values, level)
    half = stats.norm.ppf(0.5 + level / 2) * values.std(ddof=1) / math.sqrt(values.size)
    assert interval.n == 517 and interval.mean == pytest.approx(values.mean())
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
