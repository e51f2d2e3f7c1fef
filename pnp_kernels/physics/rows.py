"""The rows of the physics study (docs/PHYSICS_PREREG.md): Euler, P&P, Restart and the negative
control, each on a uniform or shifted 20-step grid, and the Euler row with the same model calls."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from .. import PnPConfig, RefinePlan
from .generate import DEFAULT_STEPS, sigma_grid

# Placements by sigma window (the steps whose sigma lies in it, on whatever grid the row runs on).
PLACEMENTS = {"early": (0.95, 0.70), "middle": (0.65, 0.40), "late": (0.30, 0.05)}
PAPER_PLAN = "published"  # the published 50-step plan as fractions of the run (pnp_kernels/config.py)
SHIFTS = (1.0, 3.0, 5.0)
KINDS = ("euler", "pnp", "restart", "broken")


@dataclass(frozen=True)
class Row:
    """One way to sample: ``kind`` on a ``num_steps`` grid with ``shift``; P&P / Restart / broken rows
    refine ``plan`` (a plan string; placements are sigma windows) with ``tau``."""

    kind: str
    num_steps: int = DEFAULT_STEPS
    shift: float = 1.0
    plan: str | None = None
    tau: float = 0.0
    name: str = ""  # what the plan is, for labels ("published", "middle K=3")

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if (self.kind == "euler") != (self.plan is None):
            raise ValueError(f"an Euler row has no plan and every other row has one, got {self.kind!r} with {self.plan!r}")

    @cached_property
    def resolved_plan(self) -> RefinePlan:
        """The plan as step indices on this row's grid (empty for Euler)."""
        return RefinePlan.parse(self.plan or "none").resolve(sigma_grid(self.num_steps, self.shift))

    @property
    def planned_calls(self) -> int:
        return self.num_steps + self.resolved_plan.extra_nfe(self.num_steps)

    def config(self) -> PnPConfig | None:
        """The P&P config (P&P and broken rows; None otherwise)."""
        if self.kind not in ("pnp", "broken"):
            return None
        return PnPConfig(plan=self.resolved_plan, tau=self.tau, noise="philox")

    def label(self) -> str:
        grid = "" if self.shift == 1.0 else f", shift {self.shift:g}"
        if self.kind == "euler":
            return f"Euler {self.num_steps}{grid}"
        text = {"pnp": "P&P", "restart": "Restart", "broken": "BROKEN (noise x10) P&P"}[self.kind]
        tau = f" tau {self.tau:g}" if self.kind in ("pnp", "broken") else ""
        return f"{text} {self.name or self.plan}{tau} [{self.resolved_plan}]{grid}"


def placed(kind: str, placement: str, iterations: int, shift: float = 1.0, tau: float = 0.0) -> Row:
    """A row refining a sigma-window placement ``iterations`` times."""
    high, low = PLACEMENTS[placement]
    return Row(kind, shift=shift, plan=f"s{high:.2f}-{low:.2f}:{iterations}", tau=tau,
               name=f"{placement} K={iterations}")


def paper(shift: float, tau: float) -> Row:
    return Row("pnp", shift=shift, plan=PAPER_PLAN, tau=tau, name=PAPER_PLAN)


def matched_euler(rows: list[Row]) -> list[Row]:
    """Euler rows with as many steps as each non-Euler row plans model calls (same grid), new ones only."""
    have = {(r.shift, r.num_steps) for r in rows if r.kind == "euler"}
    extra = []
    for row in rows:
        key = (row.shift, row.planned_calls)
        if row.kind != "euler" and key not in have:
            have.add(key)
            extra.append(Row("euler", row.planned_calls, row.shift))
    return extra


def matching_euler(row: Row, rows: list[Row]) -> Row:
    """The Euler row in ``rows`` with ``row``'s planned model calls on its grid."""
    for other in rows:
        if other.kind == "euler" and other.shift == row.shift and other.num_steps == row.planned_calls:
            return other
    raise ValueError(f"no Euler row with {row.planned_calls} steps (shift {row.shift:g}) for {row.label()}")


def headline_rows() -> list[Row]:
    """Every headline row, Euler 20 first on each grid, matched Euler rows last."""
    rows = [Row("euler"), paper(1.0, 0.0), paper(1.0, 0.25)]
    rows += [placed("pnp", p, k) for p in PLACEMENTS for k in (1, 3)]
    rows += [placed("restart", p, 3) for p in PLACEMENTS]
    rows += [placed("broken", "early", 3)]
    for shift in SHIFTS[1:]:
        rows += [Row("euler", shift=shift), paper(shift, 0.0), paper(shift, 0.25)]
        rows += [placed("pnp", p, 3, shift) for p in PLACEMENTS]
    return rows + matched_euler(rows)


def restart_pairs(rows: list[Row]) -> list[tuple[Row, Row]]:
    """(P&P K=3, Restart K=3) on the same window and grid: the direct comparison at equal calls."""
    return [(p, r) for r in rows if r.kind == "restart" for p in rows
            if p.kind == "pnp" and p.plan == r.plan and p.shift == r.shift and p.tau == 0.0]


def curve_rows() -> list[Row]:
    """The model-quality curve's rows (uniform grid)."""
    rows = [Row("euler"), paper(1.0, 0.0), paper(1.0, 0.25)]
    rows += [placed(kind, p, 3) for kind in ("pnp", "restart") for p in PLACEMENTS]
    return rows + matched_euler(rows)
