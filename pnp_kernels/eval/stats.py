"""Paired differences and their seeded percentile-bootstrap confidence intervals (numpy only)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..validators import check_int, check_real

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0  # fixed: the same results give the same report


@dataclass(frozen=True)
class Interval:
    """Mean of the paired differences with a percentile-bootstrap confidence interval."""

    n: int  # pairs with a finite value on both sides
    mean: float
    low: float
    high: float

    def to_dict(self) -> dict:
        return asdict(self)


def bootstrap_mean(values, confidence: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                   seed: int = BOOTSTRAP_SEED) -> Interval:
    """Mean of ``values`` and the percentile interval of the means of ``resamples`` resamples drawn
    with replacement; NaNs are left out. All NaN (or empty) gives n = 0 and NaN bounds."""
    confidence = check_real("confidence", confidence, 0.0, 1.0, low_open=True)
    resamples = check_int("resamples", resamples, low=1)
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return Interval(0, float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, values.size, size=(resamples, values.size))
    means = values[picks].mean(axis=1)
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return Interval(int(values.size), float(values.mean()), float(low), float(high))


def paired_differences(setting: list[float], baseline: list[float]) -> np.ndarray:
    """``setting - baseline`` per pair (NaN where either side is NaN)."""
    setting, baseline = np.asarray(setting, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if setting.shape != baseline.shape:
        raise ValueError(f"setting and baseline must pair up, got {setting.shape} and {baseline.shape} values")
    return setting - baseline
