"""The ComfyUI nodes: "P&P Sampler" (a SAMPLER for SamplerCustomAdvanced / SamplerCustom) and "P&P Plan"
(docs/COMFYUI.md). ComfyUI's V1 node schema: INPUT_TYPES, RETURN_TYPES, FUNCTION, CATEGORY.

Importing this module needs neither ComfyUI nor torch; ComfyUI's sampler class is looked up when a
node runs.
"""
from __future__ import annotations

import importlib

from ..config import PnPConfig, RefinePlan
from ..presets import PRESETS

PLAN_TYPE = "PNP_PLAN"  # the plan node's output type; the sampler's plan input takes only it
CUSTOM = "custom"
PLAN_CHOICES = [*PRESETS, CUSTOM, "none"]
NORMS = {"L1 (published)": 1, "L2": 2}

_PLAN_HELP = (
    "Comma-separated entries, steps counted from 0: '2-5:3' refines steps 2 to 5 with 3 extra model calls "
    "each; 'f0.04-0.12:3' the steps between 4% and 12% of this sampler's steps; 's0.95-0.8:2' the steps "
    "whose sigma lies between 0.95 and 0.8 (the right form for split sigmas); 'all:1'. Steps not named "
    "run as plain Euler steps."
)


class _Node:
    """What the nodes share: their menu place."""

    CATEGORY = "model/sampling/samplers"  # beside KSamplerSelect


class PnPPlanNode(_Node):
    """Which sampling steps P&P refines, and how many extra model calls each gets."""

    DESCRIPTION = "Which sampling steps Predict-and-Perturb refines, and how many extra model calls each refined step gets."
    FUNCTION = "build"
    RETURN_TYPES = (PLAN_TYPE,)
    RETURN_NAMES = ("plan",)
    OUTPUT_TOOLTIPS = ("The refinement plan, for the plan input of a P&P Sampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "preset": (PLAN_CHOICES, {"default": "published", "tooltip": (
                    "published: the paper's default (extra calls at 4-30% of the steps, 3 then 1 per step); "
                    "published-wan22: its Wan 2.2 plan; distilled: one extra call at 10-50% of the steps of a "
                    f"4-8 step distilled model; {CUSTOM}: the plan typed below; none: plain Euler."
                )}),
                "custom_plan": ("STRING", {"default": PRESETS["published"], "multiline": False, "tooltip": (
                    f"Used when preset is '{CUSTOM}'. " + _PLAN_HELP
                )}),
            }
        }

    def build(self, preset: str, custom_plan: str):
        if preset not in PLAN_CHOICES:
            raise ValueError(f"preset must be one of {PLAN_CHOICES}, got {preset!r}")
        return (RefinePlan.parse(custom_plan if preset == CUSTOM else preset),)


class PnPSamplerNode(_Node):
    """Predict-and-Perturb sampling (Euler with self-refinement) as a SAMPLER."""

    DESCRIPTION = (
        "Predict-and-Perturb self-refining sampling for flow-matching models (Wan, LTX, HunyuanVideo, Flux, "
        "SD3): at the planned steps it re-noises the model's clean prediction and predicts again, keeping "
        "what stays uncertain; other steps are plain Euler steps. Connect it to SamplerCustomAdvanced or "
        "SamplerCustom; the perturbation noise follows their noise seed."
    )
    FUNCTION = "get_sampler"
    RETURN_TYPES = ("SAMPLER",)
    RETURN_NAMES = ("sampler",)
    OUTPUT_TOOLTIPS = ("The P&P sampler, for the sampler input of SamplerCustomAdvanced or SamplerCustom.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "uncertainty_threshold": ("FLOAT", {"default": 0.25, "min": 0.0, "max": 10.0, "step": 0.01, "tooltip": (
                    "A position counts as settled, and is kept from then on, when its clean prediction changes by "
                    "less than this between two tries (mean absolute change per channel). 0 re-predicts "
                    "everything at every try. Published: 0.25."
                )}),
                "uncertainty_norm": (list(NORMS), {"default": "L1 (published)", "tooltip": (
                    "How the change of a position's channels is measured: L1 (mean absolute change, as "
                    "published) or L2 (root of the summed squares, divided by the channel count)."
                )}),
                "stop_when_settled": ("FLOAT", {"default": 0.999, "min": 0.001, "max": 1.0, "step": 0.001, "advanced": True, "tooltip": (
                    "A sample stops refining a step once more than this share of its positions is settled "
                    "(saves model calls). Published: 0.999."
                )}),
            },
            "optional": {
                "plan": (PLAN_TYPE, {"tooltip": "The refinement plan from a P&P Plan node; unconnected: the published plan."}),
            },
        }

    def get_sampler(self, uncertainty_threshold: float, uncertainty_norm: str, stop_when_settled: float, plan=None):
        if uncertainty_norm not in NORMS:
            raise ValueError(f"uncertainty_norm must be one of {list(NORMS)}, got {uncertainty_norm!r}")
        config = PnPConfig(
            plan=RefinePlan.parse("published") if plan is None else plan, tau=uncertainty_threshold,
            p_norm=NORMS[uncertainty_norm], certain_stop=stop_when_settled, noise="philox",
        )
        samplers = importlib.import_module("comfy.samplers")
        from .sampler import sample_pnp  # torch is imported when a node runs, not when ComfyUI lists nodes

        return (samplers.KSAMPLER(sample_pnp, extra_options={"pnp_config": config}),)


NODE_CLASS_MAPPINGS = {"PnPKernelsSampler": PnPSamplerNode, "PnPKernelsPlan": PnPPlanNode}
NODE_DISPLAY_NAME_MAPPINGS = {"PnPKernelsSampler": "P&P Sampler (Predict-and-Perturb)", "PnPKernelsPlan": "P&P Plan"}
