"""Public fused P&P update: argument checks, backend choice, optional caller-owned outputs.

Validation stays in Python; the work goes through the ``pnp_kernels::pnp_update`` custom op
(``custom_op.py``) so that ``torch.compile`` and CUDA graphs see one opaque, shape-known op.
"""
from __future__ import annotations

import math
import numbers

import torch

from .backends import select_backend
from .custom_op import philox_key_words, pnp_update_op
from .philox import PhiloxNoise
from .reference import PnPUpdateOutput

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _check_latent(name: str, t, like: torch.Tensor | None, dtypes=FLOAT_DTYPES) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype in {[str(d) for d in dtypes]}, got {t.dtype}")
    if like is None:
        if t.dim() != 5:
            raise ValueError(f"{name} must have shape (B, C, F, H, W), got {tuple(t.shape)}")
        return
    if t.shape != like.shape:
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(like.shape)} (like z)")
    if t.device != like.device:
        raise ValueError(f"{name} is on {t.device} but z is on {like.device}")


def _check_mask(name: str, t, z: torch.Tensor, dtype=torch.bool) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {t.dtype}")
    expected = (z.shape[0], *z.shape[2:])
    if tuple(t.shape) != expected:
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected (B, F, H, W) = {expected}")
    if t.device != z.device:
        raise ValueError(f"{name} is on {t.device} but z is on {z.device}")


def _check_scalar(name: str, value, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not low <= value <= high:  # also rejects NaN
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")
    return value


def validate_update_args(
    z, v, sigma, sigma_next, v_uncond, guidance_scale, prev_x0, prev_z_next, prev_certain,
    tau, p_norm, noise, active, num_pinned_frames,
) -> tuple[float, float, float, float]:
    """Raise TypeError/ValueError naming the first bad argument; returns the scalars as floats."""
    _check_latent("z", z, None, dtypes=(torch.float32,))
    _check_latent("v", v, z)
    if v_uncond is not None:
        _check_latent("v_uncond", v_uncond, z)
    guidance_scale = _check_scalar("guidance_scale", guidance_scale, float("-inf"), float("inf"))
    if not math.isfinite(guidance_scale):
        raise ValueError(f"guidance_scale must be finite, got {guidance_scale!r}")
    sigma = _check_scalar("sigma", sigma, 0.0, 1.0)
    sigma_next = _check_scalar("sigma_next", sigma_next, 0.0, 1.0)
    if sigma_next > sigma:
        raise ValueError(f"sigma_next must be <= sigma (sampling goes towards 0), got {sigma_next} > {sigma}")
    tau = _check_scalar("tau", tau, 0.0, float("inf"))
    if isinstance(p_norm, bool) or p_norm not in (1, 2):
        raise ValueError(f"p_norm must be 1 or 2, got {p_norm!r}")
    if (prev_x0 is None) != (prev_z_next is None):
        raise ValueError("prev_x0 and prev_z_next must be given together")
    if prev_x0 is None and (prev_certain is not None or active is not None):
        raise ValueError("prev_certain and active need a previous iteration (prev_x0, prev_z_next)")
    if prev_x0 is not None:
        _check_latent("prev_x0", prev_x0, z, dtypes=(torch.float32,))
        _check_latent("prev_z_next", prev_z_next, z, dtypes=(torch.float32,))
    if prev_certain is not None:
        _check_mask("prev_certain", prev_certain, z)
    if active is not None:
        if not isinstance(active, torch.Tensor) or active.dtype != torch.bool or tuple(active.shape) != (z.shape[0],):
            raise ValueError(f"active must be a ({z.shape[0]},) bool tensor, got {active!r}")
        if active.device != z.device:
            raise ValueError(f"active is on {active.device} but z is on {z.device}")
    if isinstance(noise, PhiloxNoise):
        if len(noise.seeds) != z.shape[0]:
            raise ValueError(f"philox noise has {len(noise.seeds)} seeds for a batch of {z.shape[0]}")
    elif noise is not None:
        _check_latent("noise", noise, z)
    if isinstance(num_pinned_frames, bool) or not isinstance(num_pinned_frames, numbers.Integral):
        raise TypeError(f"num_pinned_frames must be an integer, got {num_pinned_frames!r}")
    if not 0 <= num_pinned_frames < z.shape[2]:
        raise ValueError(f"num_pinned_frames must be in [0, F={z.shape[2]}), got {num_pinned_frames}")
    return sigma, sigma_next, guidance_scale, tau


def _check_out(out, z: torch.Tensor) -> PnPUpdateOutput:
    """``out`` as a PnPUpdateOutput (all None when not given), every given field checked."""
    if out is None:
        return PnPUpdateOutput(None, None, None, None, None, None, None)
    if not isinstance(out, PnPUpdateOutput):
        raise TypeError(f"out must be a PnPUpdateOutput or None, got {type(out).__name__}")
    batch, mask_shape = z.shape[0], (z.shape[0], *z.shape[2:])
    expected = {
        "x0": (z.shape, torch.float32), "z_next": (z.shape, torch.float32),
        "certain": (mask_shape, torch.bool), "certain_fraction": ((batch,), torch.float32),
        "nonfinite": ((batch,), torch.int32), "z_perturbed": (z.shape, torch.float32),
        "uncertainty": (mask_shape, torch.float32),
    }
    for name, (shape, dtype) in expected.items():
        t = getattr(out, name)
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"out.{name} must be a torch.Tensor or None, got {type(t).__name__}")
        if tuple(t.shape) != tuple(shape) or t.dtype != dtype or t.device != z.device:
            raise ValueError(
                f"out.{name} has shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}; "
                f"expected {tuple(shape)}, {dtype}, {z.device}"
            )
    return out


def _buffer(given: torch.Tensor | None, shape, dtype, device) -> torch.Tensor:
    return given if given is not None else torch.empty(shape, dtype=dtype, device=device)


def pnp_update(
    z: torch.Tensor,
    v: torch.Tensor,
    sigma: float,
    sigma_next: float,
    *,
    v_uncond: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    prev_x0: torch.Tensor | None = None,
    prev_z_next: torch.Tensor | None = None,
    prev_certain: torch.Tensor | None = None,
    tau: float = 0.25,
    p_norm: int = 1,
    noise: torch.Tensor | PhiloxNoise | None = None,
    active: torch.Tensor | None = None,
    num_pinned_frames: int = 0,
    return_uncertainty: bool = False,
    store_state: bool = True,
    round_products_to: torch.dtype | None = None,
    out: PnPUpdateOutput | None = None,
    backend: str = "auto",
) -> PnPUpdateOutput:
    """One fused Predict-and-Perturb iteration (SPEC §3, §5); see ``ops/reference.py`` for the math.

    z: (B, C, F, H, W) float32 model input at ``sigma``; v: its velocity (bf16/fp16/fp32), or the
    conditional velocity when ``v_uncond`` and ``guidance_scale`` are given (guidance in fp32).
    prev_*: the previous iteration's merged x0, z_next and certain mask (None at iteration 0).
    noise: N(0, 1) tensor or PhiloxNoise for the next model input ``z_perturbed``; None when no
    iteration follows. out: tensors to write into (any field may be None to allocate it).
    store_state: False skips writing the merged x0 and the certain mask (returned as None): nobody
    reads them after the last iteration of a step or at a plain step; z_next, the statistics and
    z_perturbed / uncertainty (when asked for) are still produced.
    round_products_to: None (default) keeps every product in float32. A dtype d (e.g.
    torch.bfloat16) reproduces the published code's arithmetic with bf16 velocities, which is also
    diffusers' FlowMatchEulerDiscreteScheduler.step: there a 0-dim float32 sigma multiplies a bf16
    velocity, and torch casts both the scale and the product to bf16. With r(x) = x rounded to d,
    s = float32(sigma), s' = float32(sigma_next) and v the (guided, float32) velocity:
    ``x0 = z - float32(r(r(s) * r(v)))`` and ``z_next = z + float32(r(r(s' - s) * r(v)))``, with
    s' - s taken in float32; everything else is unchanged. Only the torch backend implements it
    ("auto" picks it; an explicit other backend refuses).
    The result's ``backend`` field names the backend that ran.
    """
    sigma, sigma_next, guidance_scale, tau = validate_update_args(
        z, v, sigma, sigma_next, v_uncond, guidance_scale, prev_x0, prev_z_next, prev_certain,
        tau, p_norm, noise, active, num_pinned_frames,
    )
    if not isinstance(return_uncertainty, bool):
        raise TypeError(f"return_uncertainty must be a bool, got {return_uncertainty!r}")
    if not isinstance(store_state, bool):
        raise TypeError(f"store_state must be a bool, got {store_state!r}")
    if round_products_to is not None and round_products_to not in FLOAT_DTYPES:
        raise ValueError(f"round_products_to must be None or one of {[str(d) for d in FLOAT_DTYPES]}, got {round_products_to!r}")
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {backend!r}")
    out = _check_out(out, z)
    chosen = select_backend(backend, z, v, v_uncond, round_products_to)

    mask_shape = (z.shape[0], *z.shape[2:])
    x0 = _buffer(out.x0, z.shape, torch.float32, z.device) if store_state else None
    z_next = _buffer(out.z_next, z.shape, torch.float32, z.device)
    certain = _buffer(out.certain, mask_shape, torch.bool, z.device) if store_state else None
    z_perturbed = None if noise is None else _buffer(out.z_perturbed, z.shape, torch.float32, z.device)
    uncertainty = _buffer(out.uncertainty, mask_shape, torch.float32, z.device) if return_uncertainty else None
    philox = isinstance(noise, PhiloxNoise)
    certain_fraction, nonfinite = pnp_update_op(
        z, v, v_uncond, prev_x0, prev_z_next, prev_certain, active,
        None if philox else noise,
        philox_key_words(noise) if philox else None,
        noise.step if philox else 0,
        noise.iteration if philox else 0,
        sigma, sigma_next, guidance_scale, tau, int(p_norm), int(num_pinned_frames), round_products_to, chosen.name,
        x0, z_next, certain, z_perturbed, uncertainty,
    )
    if out.certain_fraction is not None:
        certain_fraction = out.certain_fraction.copy_(certain_fraction)
    if out.nonfinite is not None:
        nonfinite = out.nonfinite.copy_(nonfinite)
    return PnPUpdateOutput(x0, z_next, certain, certain_fraction, nonfinite, z_perturbed, uncertainty, chosen.name)
