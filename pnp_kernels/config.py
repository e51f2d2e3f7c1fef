"""Refinement plans and sampler settings, validated when they are built (docs/ALGORITHM.md, "Plans").

Torch-free on purpose: the command line validates its arguments before importing torch.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping, NamedTuple, Sequence, Union

from .presets import PRESETS
from .validators import check_bool, check_choice, check_int, check_real, check_sigma_grid, quoted

NOISE_MODES = ("generator", "philox")
BACKENDS = ("auto", "triton", "cuda", "torch")
P_NORMS = (1, 2)
EXPERTS = ("high", "low")

# K, the P&P iterations of one step, is at most this. Published plans use K <= 3 and the certain mask
# of a step settles within a few iterations; every iteration is a full model evaluation, so a larger K
# is almost surely a typo (30 for 3), and it keeps every run's model-call bound and NaN log small.
MAX_ITERATIONS = 16
# Step indices in a plan are at most this: far beyond any sampler's step count, small enough that a
# plan can never describe an absurd amount of work.
MAX_STEP_INDEX = 9_999
MAX_STEPS = MAX_STEP_INDEX + 1  # the longest run a plan can name every step of
_MAX_NUMBER_CHARS = 20  # a number in a plan string longer than this is refused before it is converted


class RelativeRange(NamedTuple):
    """A plan entry that does not name step indices; ``RefinePlan.resolve`` maps it onto a run.

    unit "fraction": steps i of an N-step run with start <= i / N < end;
    unit "sigma": steps whose sigma (at the step's start) has start >= sigma > end;
    unit "step": steps start..end (inclusive), only with an expert;
    unit "all": every step.
    expert "high" / "low": only the steps of that expert (sigma >= / < the boundary sigma).
    """

    unit: str
    start: float
    end: float
    k: int
    expert: str | None

    def __str__(self) -> str:
        span = {
            "fraction": f"f{self.start!r}-{self.end!r}",
            "sigma": f"s{self.start!r}-{self.end!r}",
            "step": f"{int(self.start)}-{int(self.end)}" if self.start != self.end else f"{int(self.start)}",
            "all": "all",
        }[self.unit]
        return f"{span}:{self.k}" + (f"@{self.expert}" if self.expert else "")

    def covers(self, step: int, sigmas: Sequence[float], boundary_sigma: float | None) -> bool:
        sigma = sigmas[step]
        if self.expert is not None and (sigma >= boundary_sigma) != (self.expert == "high"):
            return False
        if self.unit == "fraction":
            return self.start <= step / (len(sigmas) - 1) < self.end
        if self.unit == "sigma":
            return self.start >= sigma > self.end
        if self.unit == "step":
            return self.start <= step <= self.end
        return True  # "all"


_NUMBER = r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+"
_ENTRY = re.compile(
    r"\s*(?:(?P<first>[0-9]+)(?:\s*-\s*(?P<last>[0-9]+))?"
    rf"|(?P<unit>[fs])\s*(?P<start>{_NUMBER})\s*-\s*(?P<end>{_NUMBER})"
    r"|(?P<all>all))"
    r"\s*:\s*(?P<k>[0-9]+)\s*(?:@\s*(?P<expert>[a-z]+)\s*)?",
    re.ASCII | re.IGNORECASE,
)


@dataclass(frozen=True)
class RefinePlan:
    """Which outer steps get P&P and how many iterations K (0 = plain Euler step).

    ``RefinePlan([(2, 5, 3), (6, 14, 1)])`` refines steps 2..5 with K=3 and 6..14 with K=1 (the
    published default for 50 steps); dicts ``{"start": 2, "end": 5, "steps": 3}`` are accepted too.
    ``RefinePlan.parse`` also reads plans that fit any step count (fractions of the run, sigma
    intervals, one expert of a two-expert model) and named presets; ``resolve`` maps such a plan
    onto a run's sigma grid. The syntax is in docs/ALGORITHM.md.
    """

    ranges: tuple[tuple[int, int, int], ...] = ()  # inclusive (first_step, last_step, K), sorted
    relative: tuple[RelativeRange, ...] = ()  # entries resolved against a run's sigma grid
    source: str | None = field(default=None, compare=False, repr=False)  # the text it was parsed from

    def __init__(self, ranges: Sequence = ()):
        if isinstance(ranges, (str, bytes)) or not isinstance(ranges, Sequence):
            raise TypeError(
                f"ranges must be a sequence of (first_step, last_step, K) entries, got {quoted(ranges)} "
                f"({type(ranges).__name__}); use RefinePlan.parse() for a string"
            )
        self._set([_step_range(f"ranges[{i}]", entry) for i, entry in enumerate(ranges)], [], None)

    def _set(self, ranges: list, relative: list, source: str | None) -> None:
        ranges = sorted(ranges)
        named = f"plan {quoted(source)}" if source is not None else "ranges"
        for (a0, a1, _), (b0, b1, _) in zip(ranges, ranges[1:]):
            if b0 <= a1:
                raise ValueError(f"{named} overlap: steps {a0}-{a1} and {b0}-{b1} share step {b0}")
        for i, a in enumerate(relative):
            for b in relative[i + 1 :]:
                if _always_overlap(a, b):
                    raise ValueError(f"{named}: entries {str(a)!r} and {str(b)!r} overlap")
        object.__setattr__(self, "ranges", tuple(ranges))
        object.__setattr__(self, "relative", tuple(relative))
        object.__setattr__(self, "source", source)

    @classmethod
    def _build(cls, ranges: list, relative: list, source: str | None) -> "RefinePlan":
        plan = cls.__new__(cls)
        plan._set(ranges, relative, source)
        return plan

    @classmethod
    def parse(cls, text: str) -> "RefinePlan":
        """Parse a plan string: comma-separated ``first-last:K`` / ``step:K`` entries, ``fA-B:K``
        (fractions of the run), ``sA-B:K`` (sigma from A down to B), ``all:K``, each optionally
        ``@high`` / ``@low`` (one expert); or a preset name (``published``, ``published-wan22``,
        ``distilled``); ``""`` or ``"none"`` is the empty plan."""
        if not isinstance(text, str):
            raise TypeError(f"plan text must be a string, got {quoted(text)} ({type(text).__name__})")
        stripped = text.strip()
        if stripped.lower() in ("", "none"):
            return cls._build([], [], text)
        body = PRESETS.get(stripped.lower(), stripped)
        return cls._build(*_parse_entries(body, text), text)

    @property
    def is_resolved(self) -> bool:
        """True when the plan names step indices only (it needs no sigma grid)."""
        return not self.relative

    def resolve(self, sigmas, boundary_sigma: float | None = None) -> "RefinePlan":
        """The step-index plan this plan means on a run with this sigma grid (N + 1 values for N steps;
        a sequence or a 1-D tensor). boundary_sigma: where a two-expert model switches from the
        high-noise expert (sigma >= boundary) to the low-noise one, for ``@high`` / ``@low`` entries.
        A step-index plan is checked against the run and returned as it is."""
        values = check_sigma_grid(sigmas)
        num_steps = len(values) - 1
        self._check_fits(num_steps)
        if self.is_resolved:
            return self
        if boundary_sigma is not None:
            boundary_sigma = check_real("boundary_sigma", boundary_sigma)
        elif any(r.expert for r in self.relative):
            entry = next(r for r in self.relative if r.expert)
            raise ValueError(
                f"plan {self._name()}: entry {str(entry)!r} refines one expert, but no expert boundary was "
                "given (boundary_sigma=None): only two-expert models such as Wan 2.2 A14B have one"
            )
        owner: dict[int, str] = {}  # step -> the entry that covers it
        k_of: dict[int, int] = {}
        for first, last, k in self.ranges:
            for step in range(first, last + 1):
                owner[step], k_of[step] = (f"{first}-{last}:{k}", k)
        for entry in self.relative:
            for step in range(num_steps):
                if entry.covers(step, values, boundary_sigma):
                    if step in owner:
                        raise ValueError(
                            f"plan {self._name()}: entries {owner[step]!r} and {str(entry)!r} both cover step "
                            f"{step} (sigma {values[step]:.4g}) of this {num_steps}-step run"
                        )
                    owner[step], k_of[step] = str(entry), entry.k
        ranges = []
        for step in sorted(s for s in k_of if k_of[s] > 0):
            if ranges and ranges[-1][1] == step - 1 and ranges[-1][2] == k_of[step]:
                ranges[-1][1] = step
            else:
                ranges.append([step, step, k_of[step]])
        return self._build([tuple(r) for r in ranges], [], self.source)

    def iterations(self, step: int) -> int:
        """K for outer step ``step`` (0 = plain Euler step)."""
        self._require_resolved("iterations")
        step = check_int("step", step, 0)
        for first, last, k in self.ranges:
            if first <= step <= last:
                return k
        return 0

    def last_step(self) -> int | None:
        """Highest step index the plan refers to (None for an empty plan)."""
        self._require_resolved("last_step")
        return self.ranges[-1][1] if self.ranges else None

    def validate(self, num_steps: int) -> None:
        """Raise if the plan names a step index that a ``num_steps`` run does not have (a plan that
        needs a sigma grid must be resolved first)."""
        self._require_resolved("validate")
        self._check_fits(check_int("num_steps", num_steps, 1))

    def _check_fits(self, num_steps: int) -> None:
        named_steps = [last for _, last, _ in self.ranges] + [int(r.end) for r in self.relative if r.unit == "step"]
        last = max(named_steps, default=None)
        if last is not None and last >= num_steps:
            raise ValueError(
                f"plan {self._name()} refers to step {last} but the run has {num_steps} steps (0..{num_steps - 1})"
            )

    def extra_nfe(self, num_steps: int) -> int:
        """Model evaluations added to a ``num_steps`` Euler run (upper bound: early exit can save some)."""
        self.validate(num_steps)
        return sum(k * (last - first + 1) for first, last, k in self.ranges)

    def _require_resolved(self, what: str) -> None:
        if not self.is_resolved:
            raise ValueError(
                f"plan {self._name()} depends on the run's sigma grid: call plan.resolve(sigmas) before {what}()"
            )

    def _name(self) -> str:
        return quoted(self.source if self.source is not None else str(self))

    def __bool__(self) -> bool:
        return any(k > 0 for _, _, k in self.ranges) or any(r.k > 0 for r in self.relative)

    def __str__(self) -> str:
        steps = [f"{a}-{b}:{k}" if a != b else f"{a}:{k}" for a, b, k in self.ranges]
        return ",".join(steps + [str(r) for r in self.relative]) or "none"


def _step_range(where: str, entry) -> tuple[int, int, int]:
    """An inclusive (first_step, last_step, K) entry given as a tuple or a ``{"start", "end", "steps"}`` dict."""
    if isinstance(entry, Mapping):
        missing = {"start", "end", "steps"} - set(entry)
        if missing:
            raise ValueError(f"{where} = {quoted(dict(entry))} lacks key(s) {sorted(missing)}")
        entry = (entry["start"], entry["end"], entry["steps"])
    if isinstance(entry, (str, bytes)) or not isinstance(entry, Sequence) or len(entry) != 3:
        raise TypeError(f"{where} must be (first_step, last_step, K), got {quoted(entry)}")
    first = check_int(f"{where} first_step", entry[0], 0, MAX_STEP_INDEX)
    last = check_int(f"{where} last_step", entry[1], 0, MAX_STEP_INDEX)
    k = check_int(f"{where} K", entry[2], 0, MAX_ITERATIONS)
    if last < first:
        raise ValueError(f"{where} = {quoted(tuple(entry))}: last_step {last} < first_step {first}")
    return first, last, k


def _parse_entries(body: str, text: str) -> tuple[list, list]:
    """Step ranges and relative entries of a plan string; errors quote ``text`` as the user wrote it."""
    ranges, relative = [], []
    plan = quoted(text)  # once: a long plan string is quoted shortened, and not once per entry
    for part in body.split(","):
        where = f"{quoted(part.strip())} in plan {plan}"
        m = _ENTRY.fullmatch(part)
        if m is None:
            raise ValueError(
                f"plan entry {where} is not 'first-last:K', 'step:K', 'fA-B:K', 'sA-B:K' or 'all:K' "
                "(optionally followed by @high or @low)"
            )
        for number in filter(None, m.group("first", "last", "start", "end", "k")):
            if len(number) > _MAX_NUMBER_CHARS:
                raise ValueError(f"plan entry {where}: number {number[:12]}... is too long")
        k = check_int(f"K of {where}", int(m["k"]), 0, MAX_ITERATIONS)
        expert = m["expert"].lower() if m["expert"] else None
        if expert is not None and expert not in EXPERTS:
            raise ValueError(f"plan entry {where}: expert must be 'high' or 'low', got {quoted(m['expert'])}")
        if m["first"] is not None:
            first = check_int(f"first step of {where}", int(m["first"]), 0, MAX_STEP_INDEX)
            last = check_int(f"last step of {where}", int(m["last"] or m["first"]), 0, MAX_STEP_INDEX)
            if last < first:
                raise ValueError(f"plan entry {where}: last step {last} < first step {first}")
            if expert is None:
                ranges.append((first, last, k))
            else:
                relative.append(RelativeRange("step", first, last, k, expert))
        elif m["all"] is not None:
            relative.append(RelativeRange("all", 0.0, 1.0, k, expert))
        else:
            unit = "fraction" if m["unit"].lower() == "f" else "sigma"
            start = check_real(f"start of {where}", float(m["start"]), 0.0, 1.0)
            end = check_real(f"end of {where}", float(m["end"]), 0.0, 1.0)
            if unit == "fraction" and not start < end:
                raise ValueError(f"plan entry {where}: a fraction range runs forward, start < end (e.g. f0.1-0.3)")
            if unit == "sigma" and not start > end:
                raise ValueError(f"plan entry {where}: a sigma range runs from high to low noise, start > end (e.g. s0.9-0.5)")
            relative.append(RelativeRange(unit, start, end, k, expert))
    return ranges, relative


def _always_overlap(a: RelativeRange, b: RelativeRange) -> bool:
    """Entries of one unit whose intervals intersect cover a common step on fine enough grids."""
    if a.unit != b.unit or (a.expert and b.expert and a.expert != b.expert):
        return False
    if a.unit == "all":
        return True
    if a.unit == "sigma":  # (end, start]
        return max(a.end, b.end) < min(a.start, b.start)
    if a.unit == "step":  # [start, end]
        return max(a.start, b.start) <= min(a.end, b.end)
    return max(a.start, b.start) < min(a.end, b.end)  # fraction: [start, end)


PlanLike = Union[RefinePlan, str, Sequence]


def as_plan(plan: PlanLike | None) -> RefinePlan:
    """Accept a RefinePlan, a plan string, a sequence of ranges, or None (= empty plan)."""
    if plan is None:
        return RefinePlan(())
    if isinstance(plan, RefinePlan):
        return plan
    if isinstance(plan, str):
        return RefinePlan.parse(plan)
    return RefinePlan(plan)


@dataclass(frozen=True)
class PnPConfig:
    """Settings of Predict-and-Perturb sampling (docs/ALGORITHM.md).

    plan: refinement plan (RefinePlan, a plan string such as ``"2-5:3,6-14:1"`` or ``"published"``,
        or a list of ranges); resolved against each run's sigma grid. The default, the ``published``
        preset, is the published 50-step plan 2-5:3,6-14:1 as fractions of the run: the same steps at
        50 steps, and a fitting plan at any other step count.
    tau: uncertainty threshold (finite, >= 0); positions with mean |x0 - prev x0| < tau are "certain"
        and frozen for the rest of the step. 0 gives plain P&P (the paper's Algorithm 1).
    p_norm: 1 or 2, the channel norm of the uncertainty (divided by C).
    certain_stop: in (0, 1]; a sample whose certain fraction exceeds this stops iterating at the step.
    noise: "generator" (torch.Generator, published draw order) or "philox" (counter-based, seeded).
    backend: "auto", "triton", "cuda" or "torch" for the fused update.
    nan_check: raise if the input latents or the model's outputs hold NaN/Inf, naming the step and
        iteration.
    published_rounding: round ``sigma * v`` and ``(sigma_next - sigma) * v`` to the velocity's dtype
        before they are added to the float32 state, as the published code and diffusers' Euler step do
        (torch backend only); off, both products stay float32.
    """

    plan: RefinePlan = field(default_factory=lambda: RefinePlan.parse("published"))
    tau: float = 0.25
    p_norm: int = 1
    certain_stop: float = 0.999
    noise: str = "generator"
    backend: str = "auto"
    nan_check: bool = True
    published_rounding: bool = False

    def __post_init__(self):
        object.__setattr__(self, "plan", as_plan(self.plan))
        object.__setattr__(self, "tau", check_real("tau", self.tau, low=0.0))
        object.__setattr__(self, "p_norm", check_choice("p_norm", self.p_norm, P_NORMS))
        object.__setattr__(self, "certain_stop", check_real("certain_stop", self.certain_stop, 0.0, 1.0, low_open=True))
        check_choice("noise", self.noise, NOISE_MODES)
        check_choice("backend", self.backend, BACKENDS)
        check_bool("nan_check", self.nan_check)
        check_bool("published_rounding", self.published_rounding)
