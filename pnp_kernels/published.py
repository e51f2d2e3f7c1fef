"""The one home of P&P's named settings: the plan presets (the published plans in a form that fits any
step count, and our own few-step preset with its measurement), the published step-index plans, and the
settings of the authors' published P&P scripts per Wan model, which the Wan pipelines and
``pnp-sample`` use for every option left unset. Torch-free, so the command line can list them in
``--help`` without importing torch.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .config import RefinePlan

# Named plans (the whole plan string, accepted wherever a plan is). "published" is the published
# default, steps 2-5 with K=3 and 6-14 with K=1 of a 50-step run, written as fractions of the run so
# that it fits any step count; "published-wan22" is the published Wan 2.2 T2V plan (2-5:3,6-13:1 of 40
# steps) in the same form. "distilled" is for 4-8 step distilled models: one iteration at the steps
# between 10% and 50% of the run (step 1 of 4; steps 1-3 of 8), never the first step, whose sigma-1
# perturbation only redraws the noise. It follows the published plan's reasoning (refine the early
# steps that lay out the video); it is not tuned, and no measurement on distilled models backs it yet.
PRESETS = {
    "published": "f0.04-0.12:3,f0.12-0.30:1",
    "published-wan22": "f0.05-0.15:3,f0.15-0.35:1",
    "distilled": "f0.1-0.5:1",
}

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
