"""Confidence intervals of a mean, each a ``MeanInterval``: the normal approximation with a Bonferroni level
(the physics study's per-seed results, docs/PHYSICS_PREREG.md) and the seeded percentile bootstrap of
paired differences (pnp-eval's reports, docs/EVAL.md). Both leave NaNs and infinities out."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

from .validators import check_int, check_real

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0  # fixed: the same results give the same report


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


def _finite(values) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).ravel()
    return values[np.isfinite(values)]


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
    values = _finite(values)
    if values.size == 0:
        return MeanInterval(0, math.nan, math.nan, math.nan, level)
    mean = float(values.mean())
    if values.size < 2:
        return MeanInterval(1, mean, math.nan, math.nan, level)
    half = NormalDist().inv_cdf(0.5 + level / 2) * float(values.std(ddof=1)) / math.sqrt(values.size)
    return MeanInterval(int(values.size), mean, mean - half, mean + half, level)


def bootstrap_mean(values, level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                   seed: int = BOOTSTRAP_SEED) -> MeanInterval:
    """Mean of the finite values and the percentile interval of the means of ``resamples`` resamples drawn
    with replacement (numpy's generator seeded with ``seed``). No finite value gives n = 0 and NaN bounds."""
    level = check_real("level", level, 0.0, 1.0, low_open=True)
    resamples = check_int("resamples", resamples, low=1)
    values = _finite(values)
    if values.size == 0:
        return MeanInterval(0, math.nan, math.nan, math.nan, level)
    picks = np.random.default_rng(seed).integers(0, values.size, size=(resamples, values.size))
    means = values[picks].mean(axis=1)
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return MeanInterval(int(values.size), float(values.mean()), float(low), float(high), level)


def paired_differences(setting, baseline) -> np.ndarray:
    """``setting - baseline`` per pair (NaN where either side is NaN)."""
    setting, baseline = np.asarray(setting, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if setting.shape != baseline.shape:
        raise ValueError(f"setting and baseline must pair up, got {setting.shape} and {baseline.shape} values")
    return setting - baseline


def two_sided_p(values) -> float:
    """p-value of the two-sided z-test that the mean of the finite values is 0 (the normal approximation
    of ``mean_interval``). Fewer than two values give NaN; no spread gives 1 for a zero mean, else 0."""
    values = _finite(values)
    if values.size < 2:
        return math.nan
    spread = float(values.std(ddof=1)) / math.sqrt(values.size)
    mean = float(values.mean())
    if spread == 0.0:
        return 1.0 if mean == 0.0 else 0.0
    return 2.0 * NormalDist().cdf(-abs(mean) / spread)


def holm_significant(p_values, family_error: float = 0.05) -> list[bool]:
    """Holm's step-down correction: which tests reject at family-wise error rate ``family_error``. The
    smallest p-values are tested first against family_error / (tests left); the first that fails stops
    the rejections. A NaN p-value never rejects."""
    family_error = check_real("family_error", family_error, 0.0, 1.0, low_open=True)
    p = np.asarray(p_values, dtype=np.float64).ravel()
    p = np.where(np.isnan(p), 1.0, p)
    significant = [False] * p.size
    for rank, index in enumerate(np.argsort(p, kind="stable")):
        if p[index] > family_error / (p.size - rank):
            break
        significant[int(index)] = True
    return significant
