"""Which diffusers pipelines P&P runs in, and why the others are refused.

``enable_pnp`` accepts a pipeline whose loop has the shape P&P needs: a flow-matching scheduler of
order 1, a denoiser called ``transformer`` (and ``transformer_2`` for two experts), a ``__call__``
that calls ``scheduler.step``. ``TESTED`` lists the pipelines checked against a naive P&P loop in
tests/diffusers; ``REFUSED`` the ones whose loop is known not to fit, with the reason.
"""
from __future__ import annotations

import inspect
import logging

import torch

from ..compat import cache_config
from .caches import cache_problem

logger = logging.getLogger("pnp_kernels")

# Class name -> number of leading latent frames that hold a condition (held fixed, never uncertain).
TESTED = {
    "WanPipeline": lambda pipe: 0,
    # TI2V-5B image-to-video writes the encoded image into latent frame 0 before every model call.
    "WanImageToVideoPipeline": lambda pipe: 1 if pipe.config.get("expand_timesteps") else 0,
    "LTX2Pipeline": lambda pipe: 0,
    "HunyuanVideo15Pipeline": lambda pipe: 0,
    "MochiPipeline": lambda pipe: 0,
    "SkyReelsV2Pipeline": lambda pipe: 0,
}

_CONDITIONING_MASK = ("a per-token conditioning mask holds the image tokens, which P&P's uncertainty and "
                      "re-noising would treat as sampled tokens")
_DIFFUSION_FORCING = "diffusion forcing gives each frame block its own timestep and scheduler"
_EDM_SIGMAS = ("its flow-matching scheduler runs EDM sigmas up to 80 (z = x + sigma eps), not the straight path "
               "z = (1 - sigma) x + sigma eps that P&P re-noises along")
REFUSED = {
    "WanVideoToVideoPipeline": "its strength starts the loop part-way down the timesteps, which the plan is not laid "
    "out for",
    "LTX2ImageToVideoPipeline": _CONDITIONING_MASK,
    "LTX2ConditionPipeline": _CONDITIONING_MASK,
    "SkyReelsV2DiffusionForcingPipeline": _DIFFUSION_FORCING,
    "SkyReelsV2DiffusionForcingImageToVideoPipeline": _DIFFUSION_FORCING,
    "SkyReelsV2DiffusionForcingVideoToVideoPipeline": _DIFFUSION_FORCING,
    "Cosmos2TextToImagePipeline": _EDM_SIGMAS,
    "Cosmos2VideoToWorldPipeline": _EDM_SIGMAS,
}

# Flow-matching schedulers whose step is not a deterministic ODE step that Euler can stand in for.
REFUSED_SCHEDULERS = {
    "FlowMatchLCMScheduler": "it re-noises after every step (a consistency sampler), which P&P's Euler steps would drop",
}

DENOISER_NAMES = ("transformer", "transformer_2")


def is_flow_matching(scheduler) -> bool:
    """Flow-matching schedulers: the FlowMatch family, and multistep solvers run on flow sigmas."""
    if type(scheduler).__name__.startswith("FlowMatch"):
        return True
    config = scheduler.config
    return config.get("prediction_type") == "flow_prediction" and bool(config.get("use_flow_sigmas"))


def stock_class(pipe) -> type:
    """The diffusers pipeline class whose loop runs: the pipeline's own, or the one a P&P subclass
    (``pnp_kernels.wan``, or the class ``enable_pnp`` swaps in) names as ``stock_pipeline``."""
    return getattr(type(pipe), "stock_pipeline", type(pipe))


def denoisers(pipe) -> list[tuple[str, torch.nn.Module]]:
    """The pipeline's transformers (the modules its loop evaluates), by component name."""
    return [(name, getattr(pipe, name)) for name in DENOISER_NAMES
            if isinstance(getattr(pipe, name, None), torch.nn.Module)]


def refusal(pipe) -> str | None:
    """Why P&P cannot run in ``pipe`` (None if it can)."""
    name = stock_class(pipe).__name__
    if name in REFUSED:
        return f"{name} is not supported: {REFUSED[name]}"
    scheduler = getattr(pipe, "scheduler", None)
    if scheduler is None:
        return f"{name} has no scheduler component"
    scheduler_name = type(scheduler).__name__
    if scheduler_name in REFUSED_SCHEDULERS:
        return f"{name} uses {scheduler_name}: {REFUSED_SCHEDULERS[scheduler_name]}"
    if not is_flow_matching(scheduler):
        return (f"{name} uses {scheduler_name}, which is not a flow-matching scheduler (P&P re-noises along the "
                "straight path z = (1 - sigma) x + sigma eps)")
    if getattr(scheduler, "order", 1) != 1:
        return (f"{scheduler_name} evaluates the model {scheduler.order} times per step (order {scheduler.order}); "
                "P&P steps with Euler and needs a scheduler of order 1 (e.g. FlowMatchEulerDiscreteScheduler)")
    if not denoisers(pipe):
        return f"{name} has no transformer component for P&P to run"
    try:
        source = inspect.getsource(stock_class(pipe).__call__)
    except (OSError, TypeError):
        source = None
    if source is not None and "scheduler.step(" not in source:
        return f"{name}.__call__ never calls scheduler.step, through which P&P receives each velocity"
    return cache_refusal(pipe)


def cache_refusal(pipe) -> str | None:
    """Why a cache enabled on the pipeline's transformers rules P&P out (None if none does; caches.py)."""
    for component, model in denoisers(pipe):
        config = cache_config(model)
        problem = None if config is None else cache_problem(config)
        if problem is not None:
            return f"{component} has a cache enabled: {problem}; call pipe.{component}.disable_cache() first"
    return None


def pinned_frames(pipe) -> int:
    """Leading latent frames that hold a condition in this pipeline (0 for untested pipelines)."""
    rule = TESTED.get(stock_class(pipe).__name__)
    return rule(pipe) if rule is not None else 0


def warn_if_untested(pipe) -> None:
    name = stock_class(pipe).__name__
    if name not in TESTED:
        logger.warning(
            "P&P has not been tested with %s; its loop has the expected shape, but check the output "
            "(tested: %s)", name, ", ".join(sorted(TESTED)),
        )
