"""The settings of the authors' published P&P scripts: their step-index plans, and per Wan model what
the Wan pipelines and ``pnp-sample`` use for every option left unset. The named plans that carry these
plans to any step count are in ``presets``. Torch-free, so the command line can list them in ``--help``
without importing torch.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .config import RefinePlan

# The published step-index plans: Wan 2.1 scripts use 50 steps; the Wan 2.2 T2V script uses 40.
DEFAULT_PLAN = RefinePlan([(2, 5, 3), (6, 14, 1)])
WAN22_T2V_PLAN = RefinePlan([(2, 5, 3), (6, 13, 1)])


@dataclass(frozen=True)
class Defaults:
    """What a run uses for every option left unset."""

    steps: int
    plan: RefinePlan
    tau: float
    guidance: float
    guidance_2: float | None  # the low-noise expert's guidance (two-expert models only)
    negative_prompt: str
    height: int = 480
    width: int = 832
    frames: int = 81
    fps: int = 16


# Every default of the Wan pipelines and pnp-sample; each follows the authors' published P&P scripts
# for that model.
# Wan 2.1 T2V script: 50 steps, plan 2-5:3,6-14:1, tau 0.25, guidance 5, 480x832, 81 frames at 16 fps,
# negative prompt "low quality".
WAN21_T2V = Defaults(steps=50, plan=DEFAULT_PLAN, tau=0.25, guidance=5.0, guidance_2=None,
                     negative_prompt="low quality")
# Wan 2.2 A14B T2V script: 40 steps, plan 2-5:3,6-13:1, tau 0.2, guidance 4 (high-noise expert) / 3.
WAN22_T2V = replace(WAN21_T2V, steps=40, plan=WAN22_T2V_PLAN, tau=0.2, guidance=4.0, guidance_2=3.0)
# The published image-to-video pipeline: tau 0 (plain P&P: every region is re-predicted).
WAN21_I2V = replace(WAN21_T2V, tau=0.0)
# Wan 2.2 I2V A14B script: plan 1-5:3,6-13:1, tau 0, guidance 3.5 for both experts.
WAN22_I2V = replace(WAN22_T2V, plan=RefinePlan([(1, 5, 3), (6, 13, 1)]), tau=0.0, guidance=3.5, guidance_2=3.5)
