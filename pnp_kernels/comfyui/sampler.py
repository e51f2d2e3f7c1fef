"""Predict-and-Perturb as a ComfyUI sampler function (docs/COMFYUI.md).

ComfyUI's ``KSAMPLER`` calls ``sample_pnp(model, x, sigmas, extra_args=..., callback=..., disable=...,
**extra_options)``: ``x`` is the noised latent at ``sigmas[0]``, ``model(x, sigma * ones(B),
**extra_args)`` returns the denoised sample x0, and ``callback`` takes a dict with "i", "x",
"denoised", "sigma" and "sigma_hat" once per step (it draws the preview and moves ComfyUI's progress
bar). For flow-matching models (ComfyUI's CONST model sampling, x = (1 - sigma) x0 + sigma noise)
the velocity the engine needs is v = (x - x0) / sigma.
"""
from __future__ import annotations

import importlib

import torch
from tqdm.auto import tqdm

from ..config import PnPConfig
from ..engine import PnPEngine, advance_together, check_sigmas
from ..ops.philox import stream_seeds
from .latents import Modalities

# ComfyUI wraps the model in a few layers (inpainting, guider); the one holding model_sampling is at
# most this deep.
_MAX_WRAPPERS = 8


def base_model(model):
    """The innermost object of ``model.inner_model.inner_model...`` that has ``model_sampling``."""
    obj = model
    for _ in range(_MAX_WRAPPERS):
        if getattr(obj, "model_sampling", None) is not None:
            return obj
        obj = getattr(obj, "inner_model", None)
        if obj is None:
            break
    raise TypeError(
        f"the model given to the P&P sampler ({type(model).__name__}) has no model_sampling on it or on its "
        "inner_model chain: connect the P&P sampler to SamplerCustomAdvanced or SamplerCustom"
    )


def check_flow_matching(model_sampling) -> None:
    """Refuse models whose denoised output is not x0 of x = (1 - sigma) x0 + sigma noise.

    ComfyUI builds a model's sampling class at load time from a schedule class and a prediction class;
    flow-matching models use the prediction class CONST. Its image-to-image variants start from the
    image instead of noise and are refused too. Checked by class name, so ComfyUI need not be imported.
    """
    names = [cls.__name__ for cls in type(model_sampling).__mro__]
    if "CONST" in names and not any(name.startswith("IMG_TO_IMG") for name in names):
        return
    kinds = [name for name in names if name not in ("ModelSampling", "Module", "object")]
    raise ValueError(
        f"the P&P sampler needs a flow-matching model (ComfyUI model sampling CONST, as Wan, LTX-Video, "
        f"HunyuanVideo, Flux and SD3 use); this model samples with {', '.join(kinds) or type(model_sampling).__name__}. "
        "Use one of ComfyUI's own samplers for it"
    )


def _interruption_check():
    """ComfyUI's check that raises when the user pressed Cancel (a no-op outside ComfyUI)."""
    try:
        management = importlib.import_module("comfy.model_management")
    except ModuleNotFoundError:
        return lambda: None
    return management.throw_exception_if_processing_interrupted


def _grid(sigmas) -> list[float]:
    grid = check_sigmas(sigmas)
    starts = [i for i, s in enumerate(grid[:-1]) if s <= 0.0]
    if starts:
        raise ValueError(
            f"sigmas[{starts[0]}] = 0 starts a step of the sigmas given to the P&P sampler ({len(grid) - 1} steps); "
            "a step must start above 0 (only the last sigma may be 0)"
        )
    return grid


def sample_pnp(model, x, sigmas, extra_args=None, callback=None, disable=None, pnp_config: PnPConfig | None = None):
    """Sample with Predict-and-Perturb over ``sigmas`` (any slice of a schedule; sigma-based plans are
    resolved on it). pnp_config: the settings (noise "philox", seeded with ComfyUI's noise seed, the
    ``seed`` of ``extra_args``; 0 when the caller gives none). Returns the sample in ``x``'s layout."""
    config = PnPConfig(noise="philox") if pnp_config is None else pnp_config
    if not isinstance(config, PnPConfig) or config.noise != "philox":
        raise ValueError(f"pnp_config must be a PnPConfig with noise='philox', got {config!r}")
    extra_args = {} if extra_args is None else extra_args
    base = base_model(model)
    check_flow_matching(base.model_sampling)
    if len(sigmas) <= 1:  # nothing to do, as ComfyUI's own samplers
        return x
    grid = _grid(sigmas)
    modalities = Modalities(x, getattr(base, "latent_shapes", None))
    seed = extra_args.get("seed")
    seed = 0 if seed is None else seed
    engines = [
        PnPEngine(config, grid, part, seed=stream_seeds(seed, x.shape[0], m), group=None)
        for m, part in enumerate(modalities.split(x))
    ]
    ones = x.new_ones([x.shape[0]])  # the model takes one sigma per sample
    with torch.no_grad(), tqdm(total=len(grid) - 1, disable=bool(disable), desc="P&P") as bar:
        for step in range(len(grid) - 1):
            denoised, start = _run_step(model, engines, modalities, step, sigmas[step] * ones, extra_args, bar)
            if callback is not None:
                callback({"i": step, "x": start, "denoised": denoised, "sigma": sigmas[step], "sigma_hat": sigmas[step]})
            bar.update(1)
    for engine in engines:
        engine.finish()
    return modalities.join([engine.z for engine in engines]).to(x.dtype, copy=True)


def _run_step(model, engines, modalities, step, sigma_in, extra_args, bar):
    """One outer step: the model's prediction, then every P&P iteration the engines ask for, with
    ComfyUI's interruption check before each model call. Returns the last denoised output and the
    state the step started from."""
    interrupted = _interruption_check()
    start = modalities.join([engine.z for engine in engines]).clone()
    sigma = engines[0].sigmas[step]
    inputs = [engine.begin_step(step) for engine in engines]
    while inputs[0] is not None:
        interrupted()
        z = modalities.join(inputs)
        denoised = model(z, sigma_in, **extra_args)
        velocity = (z - denoised) / sigma
        for engine, part in zip(engines, modalities.split(velocity)):
            engine.update(part)
        inputs = advance_together(engines)
        bar.set_postfix_str(f"step {step}, model calls {engines[0].stats.nfe}", refresh=False)
    return denoised, start
