"""Intervals for paired per-seed results: normal-approximation means and a Bonferroni level."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

from .validators import check_int, check_real


@dataclass(frozen=True)
class MeanInterval:
    """Mean of ``n`` finite values with a two-sided interval at ``level``."""

    n: int
    mean: float
    low: float
    high: float
    level: float

    def to_dict(self) -> dict:
        return asdict(self)

    def excludes_zero(self) -> bool:
        return self.n > 1 and (self.low > 0 or self.high < 0)


def bonferroni_level(comparisons: int, family_level: float = 0.95) -> float:
    """The per-interval level that keeps ``comparisons`` intervals simultaneously at ``family_level``."""
    comparisons = check_int("comparisons", comparisons, low=1)
    family_level = check_real("family_level", family_level, 0.0, 1.0, low_open=True)
    return 1.0 - (1.0 - family_level) / comparisons


def mean_interval(values, level: float = 0.95) -> MeanInterval:
    """Mean ± z sd / sqrt(n) over the finite values (n < 2 gives NaN bounds)."""
    level = check_real("level", level, 0.0, 1.0, low_open=True)
    if level == 1.0:
        raise ValueError("level must be < 1, got 1.0")
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return MeanInterval(0, math.nan, math.nan, math.nan, level)
    mean = float(values.mean())
    if values.size < 2:
        return MeanInterval(1, mean, math.nan, math.nan, level)
    half = NormalDist().inv_cdf(0.5 + level / 2) * float(values.std(ddof=1)) / math.sqrt(values.size)
    return MeanInterval(int(values.size), mean, mean - half, mean + half, level)
