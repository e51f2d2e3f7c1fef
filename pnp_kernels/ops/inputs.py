"""What one fused P&P update computes on: the op's arguments, checked once and then trusted.

``PnPUpdateInputs`` is the single home of the op's keyword arguments and their defaults (the
xformers ``Inputs`` pattern): ``pnp_update`` and ``pnp_update_reference`` take them as keywords,
backends receive the bundle, and only the torch.library registration (``custom_op.py``) flattens
it to the op schema. The math is docs/ALGORITHM.md and ``reference.py``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..config import P_NORMS
from ..validators import check_bool, check_choice, check_has_data, check_int, check_real
from .philox import PhiloxNoise

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@dataclass(frozen=True, eq=False, slots=True)  # identity, not field-wise comparison of tensors
class PnPUpdateInputs:
    """One Predict-and-Perturb iteration's inputs; construction raises TypeError/ValueError naming a bad one.

    z: (B, C, F, H, W) float32 model input at ``sigma``; v: its velocity (bf16/fp16/fp32), or the
    conditional velocity when ``v_uncond`` and ``guidance_scale`` are given (guidance in fp32).
    sigma, sigma_next: noise levels, 1 >= sigma >= sigma_next >= 0.
    prev_x0, prev_z_next, prev_certain: the previous iteration's merged x0, z_next and certain mask
    (None at iteration 0). tau: finite threshold >= 0 on U; p_norm: 1 or 2 (U's channel norm).
    noise: N(0, 1) tensor or PhiloxNoise for the next model input ``z_perturbed``; None when no
    iteration follows. active: (B,) bool, samples that still iterate (needs a previous iteration).
    num_pinned_frames: leading frames held at their input value (a condition, as in TI2V).
    return_uncertainty: also return the U map. store_state: False skips writing the merged x0 and
    the certain mask (nobody reads them after the last iteration of a step or at a plain step).
    round_products_to: None keeps every product in float32; a dtype d reproduces the published
    code's low-precision Euler arithmetic (see ``pnp_update``); torch backend only.
    """

    z: torch.Tensor
    v: torch.Tensor
    sigma: float
    sigma_next: float
    v_uncond: torch.Tensor | None = None
    guidance_scale: float = 1.0
    prev_x0: torch.Tensor | None = None
    prev_z_next: torch.Tensor | None = None
    prev_certain: torch.Tensor | None = None
    tau: float = 0.25
    p_norm: int = 1
    noise: torch.Tensor | PhiloxNoise | None = None
    active: torch.Tensor | None = None
    num_pinned_frames: int = 0
    return_uncertainty: bool = False
    store_state: bool = True
    round_products_to: torch.dtype | None = None

    def __post_init__(self):
        z = self.z
        check_tensor("z", z, (torch.float32,))
        if z.dim() != 5:
            raise ValueError(f"z must have shape (B, C, F, H, W), got {tuple(z.shape)}")
        check_has_data("z", z.device.type)  # every other tensor must be on z's device
        latent, device = z.shape, z.device
        check_tensor("v", self.v, FLOAT_DTYPES, latent, device)
        if self.v_uncond is not None:
            check_tensor("v_uncond", self.v_uncond, FLOAT_DTYPES, latent, device)
        # The ranges PnPConfig accepts: finite numbers, tau >= 0, 1 >= sigma >= sigma_next >= 0.
        sigma = check_real("sigma", self.sigma, 0.0, 1.0)
        sigma_next = check_real("sigma_next", self.sigma_next, 0.0, 1.0)
        if sigma_next > sigma:
            raise ValueError(f"sigma_next must be <= sigma (sampling goes towards 0), got {sigma_next} > {sigma}")
        set_field = object.__setattr__  # frozen: normalised values are stored once, here
        set_field(self, "sigma", sigma)
        set_field(self, "sigma_next", sigma_next)
        set_field(self, "guidance_scale", check_real("guidance_scale", self.guidance_scale))
        set_field(self, "tau", check_real("tau", self.tau, low=0.0))
        set_field(self, "p_norm", check_choice("p_norm", self.p_norm, P_NORMS))
        # An empty axis gives empty outputs, as torch ops do; with no frames, none can be pinned.
        pinned = check_int("num_pinned_frames", self.num_pinned_frames, 0, max(z.shape[2] - 1, 0))
        set_field(self, "num_pinned_frames", pinned)
        check_bool("return_uncertainty", self.return_uncertainty)
        check_bool("store_state", self.store_state)
        if self.round_products_to is not None and self.round_products_to not in FLOAT_DTYPES:
            raise ValueError(
                f"round_products_to must be None or one of {[str(d) for d in FLOAT_DTYPES]}, got {self.round_products_to!r}"
            )
        self._check_previous_iteration(latent, device)
        if isinstance(self.noise, PhiloxNoise):
            if len(self.noise.seeds) != z.shape[0]:
                raise ValueError(f"philox noise has {len(self.noise.seeds)} seeds for a batch of {z.shape[0]}")
        elif self.noise is not None:
            check_tensor("noise", self.noise, FLOAT_DTYPES, latent, device)

    @classmethod
    def trusted(cls, z: torch.Tensor, v: torch.Tensor, sigma: float, sigma_next: float, **options) -> "PnPUpdateInputs":
        """The bundle without the checks, for a caller that checked every value once per run (the
        engine) or that unflattens a bundle ``pnp_update`` checked (the custom op's body)."""
        values = dict(_DEFAULTS, z=z, v=v, sigma=sigma, sigma_next=sigma_next, **options)
        if len(values) != len(_DEFAULTS) + 4:
            raise TypeError(f"unknown PnPUpdateInputs fields {sorted(set(values) - set(_DEFAULTS) - {'z', 'v', 'sigma', 'sigma_next'})}")
        inputs = object.__new__(cls)
        for name, value in values.items():
            object.__setattr__(inputs, name, value)
        return inputs

    def _check_previous_iteration(self, latent: torch.Size, device: torch.device) -> None:
        if (self.prev_x0 is None) != (self.prev_z_next is None):
            raise ValueError("prev_x0 and prev_z_next must be given together")
        if self.prev_x0 is None:
            if self.prev_certain is not None or self.active is not None:
                raise ValueError("prev_certain and active need a previous iteration (prev_x0, prev_z_next)")
            return
        check_tensor("prev_x0", self.prev_x0, (torch.float32,), latent, device)
        check_tensor("prev_z_next", self.prev_z_next, (torch.float32,), latent, device)
        if self.prev_certain is not None:
            check_tensor("prev_certain", self.prev_certain, (torch.bool,), self.mask_shape, device)
        if self.active is not None:
            check_tensor("active", self.active, (torch.bool,), (self.batch,), device)

    @property
    def batch(self) -> int:
        return self.z.shape[0]

    @property
    def channels(self) -> int:
        return self.z.shape[1]

    @property
    def mask_shape(self) -> tuple[int, int, int, int]:
        """(B, F, H, W): the shape of certain, prev_certain and uncertainty."""
        return (self.z.shape[0], *self.z.shape[2:])

    @property
    def positions(self) -> int:
        """F * H * W: spatial positions per sample."""
        return self.z.shape[2] * self.z.shape[3] * self.z.shape[4]

    @property
    def num_free_positions(self) -> int:
        """Positions per sample outside the pinned frames: the denominator of the certain fraction."""
        return (self.z.shape[2] - self.num_pinned_frames) * self.z.shape[3] * self.z.shape[4]

    @property
    def philox(self) -> PhiloxNoise | None:
        return self.noise if isinstance(self.noise, PhiloxNoise) else None

    @property
    def noise_tensor(self) -> torch.Tensor | None:
        return None if isinstance(self.noise, PhiloxNoise) else self.noise

    def tensors(self) -> list[tuple[str, torch.Tensor]]:
        """(name, tensor) of every input tensor given (for the overlap check of output buffers)."""
        named = (("z", self.z), ("v", self.v), ("v_uncond", self.v_uncond), ("prev_x0", self.prev_x0),
                 ("prev_z_next", self.prev_z_next), ("prev_certain", self.prev_certain), ("active", self.active),
                 ("noise", self.noise_tensor))
        return [(name, t) for name, t in named if t is not None]


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(PnPUpdateInputs) if f.default is not dataclasses.MISSING}


def kernel_limit_reasons(inputs: PnPUpdateInputs, max_channels: int, max_batch: int) -> list[str]:
    """Why a kernel backend with these limits refuses the inputs whatever the device ([] = it does not)."""
    reasons = []
    batch, channels = inputs.z.shape[:2]
    if not 1 <= channels <= max_channels:
        reasons.append(f"handles 1 to {max_channels} channels, got C={channels} (a position's channels stay "
                       "in registers)")
    if batch > max_batch:
        reasons.append(f"handles at most {max_batch} samples per launch, got B={batch} (the sample is a grid axis)")
    if inputs.round_products_to is not None:
        reasons.append(f"round_products_to={inputs.round_products_to} is implemented by the torch backend only")
    return reasons


def contiguous_or_none(t: torch.Tensor | None) -> torch.Tensor | None:
    """``t`` in dense memory (itself when it already is), None kept: the kernels index their inputs densely."""
    return None if t is None else t.contiguous()


def check_tensor(name: str, t, dtypes, shape=None, device=None) -> None:
    """``t`` is a tensor of one of ``dtypes``; with ``shape`` and ``device`` given, of that shape on that device."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype in {[str(d) for d in dtypes]}, got {t.dtype}")
    if shape is None:
        return
    if t.shape != shape:
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(shape)}")
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but z is on {device}")
