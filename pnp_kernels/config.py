"""Refinement plans and sampler settings, validated when they are built (SPEC §3, §5, §7)."""
from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence, Union

NOISE_MODES = ("generator", "philox")
BACKENDS = ("auto", "triton", "cuda", "torch")
P_NORMS = (1, 2)


def _check_index(name: str, value, minimum: int = 0) -> int:
    # bool is an int subclass; a plan entry of True is a mistake, not a 1.
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class RefinePlan:
    """Which outer steps get P&P and how many iterations: inclusive ``(first_step, last_step, K)`` ranges.

    ``RefinePlan([(2, 5, 3), (6, 14, 1)])`` refines steps 2..5 with K=3 and 6..14 with K=1 (the
    published default for 50 steps). Dicts ``{"start": 2, "end": 5, "steps": 3}`` (the published
    code's form) are accepted too. Steps not covered are plain Euler steps (K=0).
    """

    ranges: tuple[tuple[int, int, int], ...] = ()

    def __init__(self, ranges: Iterable = ()):
        if isinstance(ranges, (str, bytes)) or not isinstance(ranges, Iterable):
            raise TypeError(
                f"ranges must be a sequence of (first_step, last_step, K) entries, got {ranges!r}; "
                "use RefinePlan.parse() for a string"
            )
        parsed = [self._entry(i, entry) for i, entry in enumerate(ranges)]
        parsed.sort()
        for (a0, a1, _), (b0, b1, _) in zip(parsed, parsed[1:]):
            if b0 <= a1:
                raise ValueError(f"ranges overlap: steps {a0}-{a1} and {b0}-{b1} share step {b0}")
        object.__setattr__(self, "ranges", tuple(parsed))

    @staticmethod
    def _entry(i: int, entry) -> tuple[int, int, int]:
        if isinstance(entry, Mapping):
            missing = {"start", "end", "steps"} - set(entry)
            if missing:
                raise ValueError(f"ranges[{i}] = {dict(entry)!r} lacks key(s) {sorted(missing)}")
            entry = (entry["start"], entry["end"], entry["steps"])
        if isinstance(entry, (str, bytes)) or not isinstance(entry, Sequence) or len(entry) != 3:
            raise TypeError(f"ranges[{i}] must be (first_step, last_step, K), got {entry!r}")
        first = _check_index(f"ranges[{i}] first_step", entry[0])
        last = _check_index(f"ranges[{i}] last_step", entry[1])
        k = _check_index(f"ranges[{i}] K", entry[2])
        if last < first:
            raise ValueError(f"ranges[{i}] = {tuple(entry)!r}: last_step {last} < first_step {first}")
        return first, last, k

    @classmethod
    def parse(cls, text: str) -> "RefinePlan":
        """Parse ``"2-5:3,6-14:1"`` (``first-last:K`` or ``step:K``, comma separated; ``""`` or ``"none"`` = empty)."""
        if not isinstance(text, str):
            raise TypeError(f"plan text must be a string, got {text!r}")
        stripped = text.strip()
        if stripped.lower() in ("", "none"):
            return cls(())
        entries = []
        for part in stripped.split(","):
            m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?:\s*(\d+)\s*", part)
            if m is None:
                raise ValueError(
                    f"plan entry {part.strip()!r} in {text!r} is not 'first-last:K' or 'step:K' "
                    "(non-negative integers)"
                )
            first, last, k = m.group(1), m.group(2) or m.group(1), m.group(3)
            entries.append((int(first), int(last), int(k)))
        return cls(entries)

    def iterations(self, step: int) -> int:
        """K for outer step ``step`` (0 = plain Euler step)."""
        step = _check_index("step", step)
        for first, last, k in self.ranges:
            if first <= step <= last:
                return k
        return 0

    def last_step(self) -> int | None:
        """Highest step index the plan refers to (None for an empty plan)."""
        return self.ranges[-1][1] if self.ranges else None

    def validate(self, num_steps: int) -> None:
        """Raise if the plan names a step index that a ``num_steps`` run does not have."""
        num_steps = _check_index("num_steps", num_steps, minimum=1)
        last = self.last_step()
        if last is not None and last >= num_steps:
            raise ValueError(
                f"plan {self} refers to step {last} but the run has {num_steps} steps (0..{num_steps - 1})"
            )

    def extra_nfe(self, num_steps: int) -> int:
        """Model evaluations added to a ``num_steps`` Euler run (upper bound: early exit can save some)."""
        self.validate(num_steps)
        return sum(k * (last - first + 1) for first, last, k in self.ranges)

    def __bool__(self) -> bool:
        return any(k > 0 for _, _, k in self.ranges)

    def __str__(self) -> str:
        return ",".join(f"{a}-{b}:{k}" if a != b else f"{a}:{k}" for a, b, k in self.ranges) or "none"


# Published defaults (SPEC §3): Wan 2.1 scripts use 50 steps; the Wan 2.2 T2V script uses 40.
DEFAULT_PLAN = RefinePlan([(2, 5, 3), (6, 14, 1)])
WAN22_T2V_PLAN = RefinePlan([(2, 5, 3), (6, 13, 1)])

PlanLike = Union[RefinePlan, str, Sequence]


def as_plan(plan: PlanLike | None) -> RefinePlan:
    """Accept a RefinePlan, a CLI string, a sequence of ranges, or None (= empty plan)."""
    if plan is None:
        return RefinePlan(())
    if isinstance(plan, RefinePlan):
        return plan
    if isinstance(plan, str):
        return RefinePlan.parse(plan)
    return RefinePlan(plan)


@dataclass(frozen=True)
class PnPConfig:
    """Settings of Predict-and-Perturb sampling (SPEC §3, §5).

    plan: refinement plan (RefinePlan, ``"2-5:3,6-14:1"`` or a list of ranges).
    tau: uncertainty threshold; positions with mean |x0 - prev x0| < tau are "certain" and frozen
        for the rest of the step. 0 gives plain P&P (the paper's Algorithm 1).
    p_norm: 1 or 2, the channel norm of the uncertainty (divided by C).
    certain_stop: a sample whose certain fraction exceeds this stops iterating at the step.
    noise: "generator" (torch.Generator, published draw order) or "philox" (counter-based, seeded).
    backend: "auto", "triton", "cuda" or "torch" for the fused update.
    nan_check: raise if the model returns NaN/Inf, naming the step and iteration.
    """

    plan: RefinePlan = field(default_factory=lambda: DEFAULT_PLAN)
    tau: float = 0.25
    p_norm: int = 1
    certain_stop: float = 0.999
    noise: str = "generator"
    backend: str = "auto"
    nan_check: bool = True

    def __post_init__(self):
        object.__setattr__(self, "plan", as_plan(self.plan))
        object.__setattr__(self, "tau", _check_real("tau", self.tau, low=0.0))
        if isinstance(self.p_norm, bool) or self.p_norm not in P_NORMS:
            raise ValueError(f"p_norm must be one of {P_NORMS}, got {self.p_norm!r}")
        object.__setattr__(self, "p_norm", int(self.p_norm))
        stop = _check_real("certain_stop", self.certain_stop)
        if not 0.0 < stop <= 1.0:
            raise ValueError(f"certain_stop must be in (0, 1], got {self.certain_stop!r}")
        object.__setattr__(self, "certain_stop", stop)
        if self.noise not in NOISE_MODES:
            raise ValueError(f"noise must be one of {NOISE_MODES}, got {self.noise!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if not isinstance(self.nan_check, bool):
            raise TypeError(f"nan_check must be a bool, got {self.nan_check!r}")


def _check_real(name: str, value, low: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")
    return value
