"""Predict-and-Perturb sampling loop for flow-matching models (arXiv 2601.18577, SPEC §3)."""
from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Sequence, Union

import torch

from .config import PnPConfig
from .ops.backends import select_backend
from .ops.philox import PhiloxNoise, sample_seeds
from .ops.pnp_update import pnp_update
from .ops.reference import PnPUpdateOutput


@dataclass
class Guided:
    """Conditional and unconditional velocities; guidance ``uncond + scale * (cond - uncond)`` is fused
    into the update in float32."""

    cond: torch.Tensor
    uncond: torch.Tensor
    scale: float


Denoiser = Callable[[torch.Tensor, int, float], Union[torch.Tensor, Guided]]


@dataclass
class StepStats:
    """What happened at one outer step."""

    step: int
    sigma: float
    sigma_next: float
    planned: int  # K of the plan
    iterations_run: int = 0  # P&P iterations run after the first prediction (0..K)
    nfe: int = 1
    certain_fractions: list[list[float]] = field(default_factory=list)  # [iteration 1..][sample]
    exit_iteration: list[int | None] = field(default_factory=list)  # per sample: early exit, if any


@dataclass
class PnPStats:
    """Counts and timings of a sampling run (``summary()`` prints them)."""

    num_steps: int
    backend: str
    nfe: int = 0
    steps: list[StepStats] = field(default_factory=list)
    nfe_per_sample: list[int] = field(default_factory=list)  # model calls each sample needed
    time_total: float = 0.0  # seconds, whole loop
    time_model: float = 0.0  # seconds inside the denoiser (device time on CUDA)
    uncertainty_maps: list[dict] = field(default_factory=list)  # with capture_uncertainty

    @property
    def time_outside_model(self) -> float:
        return max(self.time_total - self.time_model, 0.0)

    @property
    def early_exits(self) -> int:
        """Number of (step, sample) pairs that left a refined step before its K iterations."""
        return sum(e is not None for s in self.steps for e in s.exit_iteration)

    @property
    def iterations_per_step(self) -> list[int]:
        return [s.iterations_run for s in self.steps]

    def to_dict(self) -> dict:
        return {
            "num_steps": self.num_steps,
            "backend": self.backend,
            "nfe": self.nfe,
            "baseline_nfe": self.num_steps,
            "nfe_per_sample": self.nfe_per_sample,
            "early_exits": self.early_exits,
            "time_total_s": self.time_total,
            "time_model_s": self.time_model,
            "time_outside_model_s": self.time_outside_model,
            "steps": [vars(s) for s in self.steps if s.planned > 0],
        }

    def summary(self) -> str:
        share = 100.0 * self.time_outside_model / self.time_total if self.time_total > 0 else 0.0
        refined = [s for s in self.steps if s.planned > 0]
        lines = [
            f"P&P: {self.nfe} model calls ({self.num_steps} without refinement), "
            f"{len(refined)} refined steps, {self.early_exits} early exits, backend {self.backend}",
            f"time {self.time_total:.3f}s, {self.time_model:.3f}s in the model, "
            f"{self.time_outside_model:.3f}s ({share:.2f}%) outside",
        ]
        for s in refined:
            last = [f"{f:.3f}" for f in s.certain_fractions[-1]] if s.certain_fractions else []
            lines.append(
                f"  step {s.step:3d} sigma {s.sigma:.3f}: {s.iterations_run}/{s.planned} iterations, "
                f"certain fraction {'/'.join(last) or '-'}"
            )
        return "\n".join(lines)


class PnPResult(NamedTuple):
    latents: torch.Tensor
    stats: PnPStats


class IterationEvent(NamedTuple):
    """Passed to ``callback`` after every model call."""

    step: int
    iteration: int
    num_steps: int
    planned: int
    nfe: int
    certain_fraction: list[float] | None  # per sample, known at iterations >= 1


class NonFiniteError(FloatingPointError):
    """The model produced NaN or Inf."""


def _check_sigmas(sigmas) -> list[float]:
    if isinstance(sigmas, torch.Tensor):
        if sigmas.dim() != 1:
            raise ValueError(f"sigmas must be 1-D, got shape {tuple(sigmas.shape)}")
        values = sigmas.detach().double().tolist()  # one device-to-host read, before the loop
    elif isinstance(sigmas, Sequence) and not isinstance(sigmas, str):
        values = list(sigmas)
    else:
        raise TypeError(f"sigmas must be a 1-D tensor or a sequence of floats, got {type(sigmas).__name__}")
    if len(values) < 2:
        raise ValueError(f"sigmas must hold at least 2 values (N steps need N + 1), got {len(values)}")
    for i, s in enumerate(values):
        if isinstance(s, bool) or not isinstance(s, numbers.Real) or not 0.0 <= s <= 1.0:
            raise ValueError(f"sigmas[{i}] must be a real number in [0, 1], got {s!r}")
    for i in range(len(values) - 1):
        if values[i + 1] > values[i]:
            raise ValueError(f"sigmas must be non-increasing, got sigmas[{i}]={values[i]} < sigmas[{i + 1}]={values[i + 1]}")
    return [float(s) for s in values]


def _check_noise_source(config: PnPConfig, generator, seed, batch: int):
    """Returns the generator list (generator mode) or per-sample seeds (philox mode)."""
    if config.noise == "philox":
        if generator is not None:
            raise ValueError("generator is not used with noise='philox'; pass seed= instead")
        if seed is None:
            raise ValueError("noise='philox' needs seed= (an integer, or one integer per sample)")
        return sample_seeds(seed, batch)
    if seed is not None:
        raise ValueError("seed= is for noise='philox'; with noise='generator' pass generator=")
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, (list, tuple)):
        if len(generator) != batch:
            raise ValueError(f"generator list has {len(generator)} generators for a batch of {batch}")
        for g in generator:
            if not isinstance(g, torch.Generator):
                raise TypeError(f"generator list must hold torch.Generator objects, got {type(g).__name__}")
        return list(generator)
    raise TypeError(f"generator must be a torch.Generator or a list of them, got {type(generator).__name__}")


def _velocity(output, z: torch.Tensor, step: int, iteration: int) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    where = f"step {step}, iteration {iteration}"
    if isinstance(output, Guided):
        parts, scale = (output.cond, output.uncond), output.scale
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
            raise TypeError(f"denoiser returned Guided with scale {scale!r} at {where}; expected a real number")
    else:
        parts, scale = (output,), 1.0
    for t in parts:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"denoiser must return a tensor or Guided at {where}, got {type(t).__name__}")
        if t.shape != z.shape:
            raise ValueError(f"denoiser returned shape {tuple(t.shape)} at {where}, expected {tuple(z.shape)}")
    return parts[0], (parts[1] if len(parts) == 2 else None), float(scale)


class _ModelTimer:
    """Time inside the denoiser: CUDA events (no sync until the end) or the host clock."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.host_seconds = 0.0
        self.events: list = []

    def start(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def stop(self, started) -> None:
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self.events.append((started, end))
        else:
            self.host_seconds += time.perf_counter() - started

    def seconds(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return sum(a.elapsed_time(b) for a, b in self.events) / 1000.0
        return self.host_seconds


class _GeneratorNoise:
    """Draws perturbation noise in the published order: one latent-shaped float32 ``randn`` per
    perturbation, in (step, iteration) order; with a list, each sample draws from its own generator
    only while it is still iterating. A draw made for an iteration that then does not run (early
    exit) is undone by restoring the generator state, so the sequence matches the published loop."""

    def __init__(self, generator, like: torch.Tensor):
        if generator is None:  # the global RNG of the latents' device, as torch.randn would use
            generator = torch.cuda.default_generators[like.device.index or 0] if like.is_cuda else torch.default_generator
        self.generator = generator
        self.buffer = torch.empty_like(like)
        self.saved: list | None = None

    def draw(self, active: list[bool]) -> torch.Tensor:
        g = self.generator
        if isinstance(g, list):
            self.saved = [gen.get_state() for gen in g]
            for b, (gen, on) in enumerate(zip(g, active)):
                if on:
                    self.buffer[b].copy_(torch.randn(self.buffer.shape[1:], generator=gen, device=gen.device))
                else:
                    self.buffer[b].zero_()
        else:
            self.saved = [g.get_state()]
            device = g.device
            if device == self.buffer.device:
                torch.randn(self.buffer.shape, generator=g, out=self.buffer)
            else:  # e.g. a CPU generator for CUDA latents: draw where the generator lives
                self.buffer.copy_(torch.randn(self.buffer.shape, generator=g, device=device))
        return self.buffer

    def undo(self, samples_done: list[bool]) -> None:
        """Give back the last draw for samples that will not use it."""
        g = self.generator
        if isinstance(g, list):
            for gen, state, done in zip(g, self.saved, samples_done):
                if done:
                    gen.set_state(state)
        elif all(samples_done):
            g.set_state(self.saved[0])


def pnp_sample(
    denoise: Denoiser,
    latents: torch.Tensor,
    sigmas,
    config: PnPConfig | None = None,
    *,
    generator: torch.Generator | list[torch.Generator] | None = None,
    seed: int | Sequence[int] | None = None,
    num_pinned_frames: int = 0,
    capture_uncertainty: bool = False,
    callback: Callable[[IterationEvent], None] | None = None,
    step_end: Callable[[int, torch.Tensor], torch.Tensor | None] | None = None,
) -> PnPResult:
    """Euler sampling with Predict-and-Perturb refinement (arXiv 2601.18577, Alg. 2; SPEC §3).

    denoise(z, step_index, sigma) returns the velocity at (z, sigma), or ``Guided(cond, uncond, scale)``.
    latents: (B, C, F, H, W) initial noise at ``sigmas[0]``; sigmas: N + 1 non-increasing values in
    [0, 1]. generator: perturbation noise for noise="generator" (one per sample for batch
    invariance); seed: for noise="philox". num_pinned_frames: leading latent frames held fixed
    (conditioning). callback(IterationEvent) runs after every model call; step_end(step, z) after each
    outer step, and a tensor it returns replaces the state (diffusers' callback_on_step_end).
    Returns ``PnPResult(latents, stats)``; the input latents are not modified.
    """
    config = PnPConfig() if config is None else config
    if not isinstance(config, PnPConfig):
        raise TypeError(f"config must be a PnPConfig, got {type(config).__name__}")
    if not callable(denoise):
        raise TypeError(f"denoise must be callable, got {type(denoise).__name__}")
    if not isinstance(latents, torch.Tensor) or latents.dim() != 5 or not latents.is_floating_point():
        raise ValueError(
            f"latents must be a floating-point (B, C, F, H, W) tensor, got "
            f"{tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__}"
        )
    sigma_grid = _check_sigmas(sigmas)
    num_steps = len(sigma_grid) - 1
    config.plan.validate(num_steps)
    batch = latents.shape[0]
    noise_source = _check_noise_source(config, generator, seed, batch)
    if isinstance(num_pinned_frames, bool) or not isinstance(num_pinned_frames, numbers.Integral) or not 0 <= num_pinned_frames < latents.shape[2]:
        raise ValueError(f"num_pinned_frames must be an integer in [0, F={latents.shape[2]}), got {num_pinned_frames!r}")

    device = latents.device
    update = dict(tau=config.tau, p_norm=config.p_norm, num_pinned_frames=num_pinned_frames, backend=config.backend)
    z = latents.to(torch.float32, copy=True)
    # Two output slots, used alternately, so that an update never writes what it reads: at most
    # 2 x (x0, z_next, z_perturbed) latent-sized buffers whatever the plan (no history).
    slots = [_empty_slot(z), _empty_slot(z)]
    slot = 0
    gen_noise = _GeneratorNoise(noise_source, z) if config.noise == "generator" and config.plan else None
    max_nfe = num_steps + config.plan.extra_nfe(num_steps)
    nonfinite_log = torch.zeros(max_nfe, dtype=torch.int32, device=device) if config.nan_check else None
    nfe_where: list[tuple[int, int]] = []  # (step, iteration) of each model call, for error messages
    stats = PnPStats(num_steps=num_steps, backend=_backend_name(config.backend, z), nfe_per_sample=[0] * batch)
    timer = _ModelTimer(device)
    started = time.perf_counter()

    def call_model(z_in: torch.Tensor, step: int, iteration: int, sigma: float):
        t0 = timer.start()
        output = denoise(z_in, step, sigma)
        timer.stop(t0)
        nfe_where.append((step, iteration))
        return _velocity(output, z_in, step, iteration)

    def raise_if_nonfinite(counts: list[float]) -> None:
        bad = [i for i, n in enumerate(counts) if n]
        if bad:
            step, iteration = nfe_where[bad[0]]
            raise NonFiniteError(
                f"the model returned NaN/Inf at step {step}, iteration {iteration} "
                "(PnPConfig(nan_check=False) turns this check off)"
            )

    for step in range(num_steps):
        sigma, sigma_next = sigma_grid[step], sigma_grid[step + 1]
        planned = config.plan.iterations(step)
        step_stats = StepStats(step, sigma, sigma_next, planned, exit_iteration=[None] * batch)
        stats.steps.append(step_stats)
        z_in, prev, active, active_host = z, None, None, [True] * batch
        for iteration in range(planned + 1):
            v, v_uncond, scale = call_model(z_in, step, iteration, sigma)
            noise = None
            if iteration < planned:  # another iteration follows: produce its perturbed input
                if gen_noise is not None:
                    noise = gen_noise.draw(active_host)
                else:
                    noise = PhiloxNoise(noise_source, step, iteration + 1)
            out = slots[slot]
            result = pnp_update(
                z_in, v, sigma, sigma_next, v_uncond=v_uncond, guidance_scale=scale,
                prev_x0=prev.x0 if prev is not None else None,
                prev_z_next=prev.z_next if prev is not None else None,
                prev_certain=prev.certain if prev is not None else None,
                noise=noise, active=active, return_uncertainty=capture_uncertainty and prev is not None,
                out=out._replace(z_perturbed=out.z_perturbed if noise is not None else None),
                **update,
            )
            slot = 1 - slot
            nfe_index = len(nfe_where) - 1
            if nonfinite_log is not None:
                nonfinite_log[nfe_index] = result.nonfinite.sum()
            for b in range(batch):
                stats.nfe_per_sample[b] += active_host[b]
            fractions = None
            if prev is not None:
                # The one device-to-host read of this iteration: fractions, who goes on, NaN log.
                still = (active if active is not None else torch.ones(batch, dtype=torch.bool, device=device))
                still = still & ~(result.certain_fraction > config.certain_stop)
                parts = [result.certain_fraction, still.float()]
                if nonfinite_log is not None:
                    parts.append(nonfinite_log[: nfe_index + 1].float())
                host = torch.cat(parts).tolist()
                fractions, still_host = host[:batch], [bool(x) for x in host[batch : 2 * batch]]
                raise_if_nonfinite(host[2 * batch :])
                step_stats.iterations_run = iteration
                step_stats.certain_fractions.append(fractions)
                if capture_uncertainty:
                    stats.uncertainty_maps.append(
                        {"step": step, "iteration": iteration, "sigma": sigma,
                         # copies: the slot buffers are reused (.cpu() of a CPU tensor would alias them)
                         "uncertainty": result.uncertainty.to("cpu", copy=True),
                         "certain": result.certain.to("cpu", copy=True)}
                    )
                done = [was and not now for was, now in zip(active_host, still_host)]
                for b in range(batch):
                    if done[b] and iteration < planned:
                        step_stats.exit_iteration[b] = iteration
                if gen_noise is not None and noise is not None:
                    gen_noise.undo([not s for s in still_host])
                active, active_host = still, still_host
            step_stats.nfe = iteration + 1
            if callback is not None:
                callback(IterationEvent(step, iteration, num_steps, planned, len(nfe_where), fractions))
            prev = result
            if not any(active_host):
                break
            z_in = result.z_perturbed
        z = prev.z_next
        if step_end is not None:
            replaced = step_end(step, z)
            if replaced is not None:
                if not isinstance(replaced, torch.Tensor) or replaced.shape != z.shape:
                    raise ValueError(
                        f"step_end returned {getattr(replaced, 'shape', type(replaced).__name__)} after step {step}, "
                        f"expected a tensor of shape {tuple(z.shape)}"
                    )
                z = replaced.to(device=device, dtype=torch.float32)

    if nonfinite_log is not None and len(nfe_where):
        raise_if_nonfinite(nonfinite_log[: len(nfe_where)].tolist())
    stats.nfe = len(nfe_where)
    stats.time_model = timer.seconds()
    stats.time_total = time.perf_counter() - started
    return PnPResult(z, stats)


def _empty_slot(z: torch.Tensor) -> PnPUpdateOutput:
    mask_shape = (z.shape[0], *z.shape[2:])
    return PnPUpdateOutput(
        x0=torch.empty_like(z),
        z_next=torch.empty_like(z),
        certain=torch.empty(mask_shape, dtype=torch.bool, device=z.device),
        certain_fraction=None,
        nonfinite=None,
        z_perturbed=torch.empty_like(z),
        uncertainty=None,
    )


def _backend_name(requested: str, z: torch.Tensor) -> str:
    return select_backend(requested, z, z, None).name
