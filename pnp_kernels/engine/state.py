"""Predict-and-Perturb as a call-driven state machine: it holds one sampling run's state, the caller
owns the model calls (docs/ALGORITHM.md, "The loop").

    engine = PnPEngine(config, sigmas, latents, generator=g)
    for step in range(engine.num_steps):
        z_in = engine.begin_step(step)
        while z_in is not None:                                  # one model call per pass
            z_in = engine.feed(model(z_in, engine.sigmas[step]))
    stats = engine.finish()                                      # the sample is engine.z

``feed`` is ``update`` (the fused op on the velocity of the last input) followed by ``advance`` (go on
to the next, perturbed input, or end the step). Callers that drive several engines with one model call
(video and audio latents of one joint model) call ``update`` on each and then ``advance_together``,
which continues the step while any engine wants to: the engines that wanted to stop freeze their
samples (they are fed their last input again and their results stay as they were).
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import torch

from ..config import PnPConfig
from ..ops.outputs import PnPUpdateOutput
from ..ops.philox import PhiloxNoise
from ..ops.inputs import FLOAT_DTYPES, PnPUpdateInputs, check_tensor
from ..ops.pnp_update import update_checked
from ..validators import (check_bool, check_callable, check_has_data, check_int, check_latent_shape, check_real,
                          check_sigma_grid)
from .noise import GeneratorNoise, check_noise_source, noise_fingerprint
from .ranks import RankAgreement
from .stats import IterationEvent, ModelTimer, NonFiniteError, PnPStats, StepStats

# Model calls that may pass without reading the NaN log back from the device. Refined iterations read it
# with their one host read anyway; plain steps read it every this many calls, so a NaN is reported at
# most this many model calls after it appeared (with its own step and iteration) for one small read.
NAN_READ_INTERVAL = 8


def check_sigmas(sigmas) -> list[float]:
    """N + 1 non-increasing values in [0, 1] as floats (a tensor is read to the host once, here)."""
    if isinstance(sigmas, torch.Tensor):
        if sigmas.dim() != 1:
            raise ValueError(f"sigmas must be 1-D, got shape {tuple(sigmas.shape)}")
        sigmas = sigmas.detach().double()
    return check_sigma_grid(sigmas)


def _check_latents(latents) -> None:
    if not isinstance(latents, torch.Tensor):
        raise TypeError(f"latents must be a torch.Tensor, got {type(latents).__name__}")
    if latents.dim() != 5 or not latents.is_floating_point():
        raise ValueError(
            f"latents must be a floating-point (B, C, F, H, W) tensor, got {latents.dtype} {tuple(latents.shape)}"
        )
    check_latent_shape("latents", latents.shape)
    check_has_data("latents", latents.device.type)


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


class PnPEngine:
    """One Predict-and-Perturb sampling run, driven call by call (see the module docstring).

    config: PnPConfig; its plan is resolved against ``sigmas`` (N + 1 non-increasing values in [0, 1]).
    latents: (B, C, F, H, W) floating-point noise at ``sigmas[0]`` (copied; never modified).
    generator (noise="generator", one per sample for batch invariance; None: torch's global random state
    of the latents' device) or seed (noise="philox").
    num_pinned_frames: leading latent frames held fixed (a conditioning frame).
    capture_uncertainty: keep every refined iteration's uncertainty and certain maps in the stats.
    callback(IterationEvent): runs after every model call.
    group: the torch.distributed ranks that run this sampling together (sequence / context parallel:
    every rank holds the whole latents): they agree on every early exit and NaN stop, and must start
    from the same noise (checked). "auto" = the default group when torch.distributed is initialised
    with more than one rank; None = this rank decides alone (data parallel).

    ``z`` is the state after the last finished step (the initial latents before the first). Tensors the
    engine hands out (model inputs, ``z``) are its own buffers, rewritten by later updates: copy them to
    keep them.
    """

    def __init__(
        self,
        config: PnPConfig,
        sigmas,
        latents: torch.Tensor,
        *,
        generator: torch.Generator | list[torch.Generator] | None = None,
        seed: int | Sequence[int] | None = None,
        num_pinned_frames: int = 0,
        capture_uncertainty: bool = False,
        callback: Callable[[IterationEvent], None] | None = None,
        group="auto",
    ):
        if not isinstance(config, PnPConfig):
            raise TypeError(f"config must be a PnPConfig, got {type(config).__name__}")
        _check_latents(latents)
        self.sigmas = check_sigmas(sigmas)
        self.num_steps = len(self.sigmas) - 1
        self.plan = config.plan.resolve(self.sigmas)
        self.config = config
        self.batch = latents.shape[0]
        self._noise_source = check_noise_source(config, generator, seed, self.batch, latents.device)
        self.num_pinned_frames = check_int("num_pinned_frames", num_pinned_frames, 0, latents.shape[2] - 1)
        self.capture_uncertainty = check_bool("capture_uncertainty", capture_uncertainty)
        self.callback = check_callable("callback", callback)
        if config.nan_check and not bool(torch.isfinite(latents).all()):  # one host read, before any work
            raise ValueError("latents contain NaN/Inf: the initial noise must be finite")
        self._ranks = RankAgreement.of(group, latents.device)
        if self._ranks is not None:
            self._ranks.check_same_noise(*noise_fingerprint(self._noise_source))

        # The state, its two output slots (used alternately so that an update never writes what it reads),
        # and the noise buffer: O(1) latent-sized buffers whatever the plan, all contiguous.
        self._state = torch.empty(latents.shape, dtype=torch.float32, device=latents.device)
        self._state.copy_(latents)
        self.z = self._state
        self._slots = [_empty_slot(self._state), _empty_slot(self._state)]
        self._slot = 0
        has_noise = config.noise == "generator" and bool(self.plan)
        self._generator_noise = GeneratorNoise(self._noise_source, self._state) if has_noise else None
        # Model calls of the run when no sample exits early (its upper bound).
        self.planned_nfe = self.num_steps + self.plan.extra_nfe(self.num_steps)
        # One int32 per model call, filled on the device, read with the host reads already made (empty
        # without nan_check).
        log_size = self.planned_nfe if config.nan_check else 0
        self._nonfinite_log = torch.zeros(log_size, dtype=torch.int32, device=latents.device)
        self._computed: list[tuple[int, int]] = []  # (step, iteration) of each model output used: one log entry each
        self._log_read = 0  # log entries read back so far
        # The backend asked for until the first update reports the one that ran.
        self.stats = PnPStats(num_steps=self.num_steps, backend=config.backend, nfe_per_sample=[0] * self.batch)
        self._timer = ModelTimer(latents.device)
        self._started = time.perf_counter()
        self._step: StepStats | None = None  # the step in progress
        self._awaiting_velocity = False  # an input was handed out and its velocity not yet fed
        self._iteration = 0
        self._iterates_again = False
        self.iterating: list[bool] = [True] * self.batch  # the samples the next model call computes

    # ----------------------------------------------------------------------------------------- steps

    @property
    def iteration(self) -> int:
        """P&P iteration of the next velocity ``update`` expects (0 = the step's first prediction)."""
        return self._iteration

    @property
    def iterates_again(self) -> bool:
        """After ``update``: whether this engine would run another iteration at this step."""
        return self._iterates_again

    def set_state(self, z: torch.Tensor, source: str = "z") -> None:
        """Replace the state between steps (a callback edited the latents); the values are copied and,
        with ``nan_check``, must be finite (one host read)."""
        if self._step is not None:
            raise RuntimeError(f"set_state during step {self._step.step}: finish the step first")
        if not isinstance(z, torch.Tensor) or not z.is_floating_point() or z.shape != self._state.shape:
            raise ValueError(
                f"{source} must be a floating-point tensor of shape {tuple(self._state.shape)}, got "
                f"{getattr(z, 'dtype', type(z).__name__)} {tuple(getattr(z, 'shape', ()))}"
            )
        if self.config.nan_check and not bool(torch.isfinite(z).all()):  # else blamed on the next model call
            raise NonFiniteError(f"{source} contains NaN/Inf (PnPConfig(nan_check=False) turns this check off)")
        self._state.copy_(z)
        self.z = self._state

    def begin_step(self, step: int, z: torch.Tensor | None = None) -> torch.Tensor:
        """Start outer step ``step`` (0, 1, ... in order) and return its first model input.

        z: the state to start from, when the caller changed it since the last step (copied).
        """
        check_int("step", step, 0, self.num_steps - 1)
        if self._step is not None:
            raise RuntimeError(f"begin_step({step}) while step {self._step.step} is still running")
        if step != len(self.stats.steps):
            raise ValueError(f"step must be {len(self.stats.steps)} (steps run in order), got {step}")
        if z is not None:
            self.set_state(z)
        sigma, sigma_next = self.sigmas[step], self.sigmas[step + 1]
        self._step = StepStats(step, sigma, sigma_next, self.plan.iterations(step), nfe=0,
                               exit_iteration=[None] * self.batch)
        self.stats.steps.append(self._step)
        self._iteration = 0
        self._input = self.z
        self._prev: PnPUpdateOutput | None = None
        self._iterating_device: torch.Tensor | None = None  # None: every sample iterates
        self.iterating = [True] * self.batch
        self._iterates_again = False
        self._hand_out()
        return self._input

    def feed(self, v: torch.Tensor, v_uncond: torch.Tensor | None = None, scale: float = 1.0) -> torch.Tensor | None:
        """The velocity of the last input (or cond/uncond velocities and a guidance scale); returns the
        next model input, or None when the step is done (then ``z`` holds its result)."""
        self.update(v, v_uncond, scale)
        return self.advance()

    def update(self, v: torch.Tensor, v_uncond: torch.Tensor | None = None, scale: float = 1.0) -> bool:
        """Run the fused update on the velocity of the last input; returns whether this engine wants
        another iteration at this step. ``advance`` must follow."""
        step = self._require_step("update")
        if not self._awaiting_velocity:
            raise RuntimeError(f"update twice at step {step.step}, iteration {self._iteration}: call advance between")
        k = self._iteration
        where = f"step {step.step}, iteration {k}"
        self._check_velocity(f"velocity at {where}", v)
        if v_uncond is not None:
            self._check_velocity(f"unconditional velocity at {where}", v_uncond)
        scale = check_real(f"guidance scale at {where}", scale)
        self._timer.stop()
        self._awaiting_velocity = False
        self.stats.nfe += 1
        step.nfe += 1
        fractions = None
        if not any(self.iterating):  # frozen by a joint decision: this call's output is not used
            self._iterates_again = False
        else:
            result = self._run_update(v, v_uncond, scale)
            self._computed.append((step.step, k))
            if self.config.nan_check:
                self._nonfinite_log[len(self._computed) - 1] = result.nonfinite.sum()
            for b, on in enumerate(self.iterating):
                self.stats.nfe_per_sample[b] += on
            if self._prev is None:
                self._iterating_next = self.iterating
                self._read_nonfinite_if_due()
            else:
                fractions = self._read_after_refined_iteration(result)
                step.iterations_run = k
            self._prev = result
            self._iterates_again = k < step.planned and any(self._iterating_next)
        if self.callback is not None:
            self.callback(IterationEvent(step.step, k, self.num_steps, step.planned, self.stats.nfe, fractions))
        return self._iterates_again

    def advance(self, keep_going: bool | None = None) -> torch.Tensor | None:
        """Next model input, or None when the step ends (``z`` is then its result).

        keep_going: the joint decision of several engines sharing one model call (None: this engine's
        own). When True although this engine wanted to stop, its samples freeze: they are fed their last
        input again and keep their results.
        """
        step = self._require_step("advance")
        if self._awaiting_velocity:
            raise RuntimeError(f"advance before update at step {step.step}, iteration {self._iteration}")
        go_on = self._iterates_again if keep_going is None else check_bool("keep_going", keep_going)
        # The samples the next call computes: those that iterate again, while this engine's plan lasts.
        iterating = list(self._iterating_next) if go_on and self._iterates_again else [False] * self.batch
        if self._generator_noise is not None and self._generator_noise.saved:
            self._generator_noise.undo(iterating)
        for b, (was, now) in enumerate(zip(self.iterating, iterating)):
            if was and not now and self._iteration < step.planned:
                step.exit_iteration[b] = self._iteration
        if not go_on:
            self.z = self._prev.z_next
            self._step = None
            return None
        if any(iterating):
            next_input = self._prev.z_perturbed
            for b, on in enumerate(iterating):
                if not on:  # a frozen sample sees its last input again (its output is discarded)
                    next_input[b].copy_(self._input[b])
            if not all(iterating):
                self._iterating_device = self._iterating_next_device  # the device copy of ``iterating``
            self._input = next_input
        # else: every sample of this engine is frozen; it hands out its last input again.
        self.iterating = iterating
        self._iteration += 1
        self._hand_out()
        return self._input

    def finish(self) -> PnPStats:
        """Check the NaN log of the calls not yet read, fill in counts and timings, return the stats."""
        if self._step is not None:
            raise RuntimeError(f"finish() while step {self._step.step} is still running")
        self._read_nonfinite()
        self.stats.time_model = self._timer.seconds()
        self.stats.time_total = time.perf_counter() - self._started
        return self.stats

    # -------------------------------------------------------------------------------------- internals

    def _hand_out(self) -> None:
        self._awaiting_velocity = True
        self._timer.start()

    def _require_step(self, what: str) -> StepStats:
        if self._step is None:
            raise RuntimeError(f"{what} outside a step: call begin_step first")
        return self._step

    def _check_velocity(self, name: str, v) -> None:
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(v).__name__}")
        check_tensor(name, v, FLOAT_DTYPES, self._state.shape, self._state.device)

    def _run_update(self, v, v_uncond, scale) -> PnPUpdateOutput:
        step, k, prev = self._step, self._iteration, self._prev
        noise = None
        if k < step.planned:  # another iteration may follow: the op also produces its perturbed input
            if self._generator_noise is not None:
                noise = self._generator_noise.draw(self.iterating)
            else:
                noise = PhiloxNoise.trusted(self._noise_source, step.step, k + 1)
        out = self._slots[self._slot]
        self._slot = 1 - self._slot
        capture = self.capture_uncertainty and prev is not None  # refined iterations have uncertainty maps
        # Every value but the velocities was checked when the run began, those by ``update``.
        inputs = PnPUpdateInputs.trusted(
            self._input, v, step.sigma, step.sigma_next, v_uncond=v_uncond, guidance_scale=scale,
            prev_x0=prev.x0 if prev is not None else None,
            prev_z_next=prev.z_next if prev is not None else None,
            prev_certain=prev.certain if prev is not None else None,
            noise=noise, active=self._iterating_device,  # None until a refined iteration freezes a sample
            return_uncertainty=capture,
            # x0 and the mask are read by a next iteration or an uncertainty capture only
            store_state=k < step.planned or capture,
            # rounding to float32 changes nothing: no need to restrict the backends then
            round_products_to=v.dtype if self.config.published_rounding and v.dtype != torch.float32 else None,
            tau=self.config.tau, p_norm=self.config.p_norm, num_pinned_frames=self.num_pinned_frames,
        )
        out = out._replace(z_perturbed=out.z_perturbed if noise is not None else None)
        result = update_checked(inputs, out, self.config.backend)
        self.stats.backend = result.backend
        return result

    def _read_after_refined_iteration(self, result: PnPUpdateOutput) -> list[float]:
        """The one device-to-host read of a refined iteration: certain fractions, who goes on, NaN log."""
        batch, k = self.batch, self._iteration
        iterating_next = ~(result.certain_fraction > self.config.certain_stop)
        if self._iterating_device is not None:
            iterating_next &= self._iterating_device
        logged = len(self._computed)
        flags = self._agree(torch.cat([iterating_next.to(torch.int32), self._unread_log(logged)]))
        host = torch.cat([result.certain_fraction, flags.float()]).tolist()
        fractions = host[:batch]
        self._iterating_next = [bool(x) for x in host[batch : 2 * batch]]
        self._iterating_next_device = flags[:batch].bool()
        self._raise_if_nonfinite(host[2 * batch :], self._log_read)
        self._log_read = logged
        self._step.certain_fractions.append(fractions)
        if self.capture_uncertainty:
            self.stats.uncertainty_maps.append(
                {"step": self._step.step, "iteration": k, "sigma": self._step.sigma,
                 # copies: the slot buffers are reused (.cpu() of a CPU tensor would alias them)
                 "uncertainty": result.uncertainty.to("cpu", copy=True),
                 "certain": result.certain.to("cpu", copy=True)}
            )
        return fractions

    def _read_nonfinite_if_due(self) -> None:
        if len(self._computed) - self._log_read >= NAN_READ_INTERVAL:
            self._read_nonfinite()

    def _read_nonfinite(self) -> None:
        logged = len(self._computed)
        if self.config.nan_check and logged > self._log_read:
            self._raise_if_nonfinite(self._agree(self._unread_log(logged)).tolist(), self._log_read)
            self._log_read = logged

    def _unread_log(self, logged: int) -> torch.Tensor:
        """NaN/Inf counts of the model calls not yet read (empty without nan_check)."""
        return self._nonfinite_log[self._log_read : logged]

    def _agree(self, flags: torch.Tensor) -> torch.Tensor:
        """The elementwise maximum of ``flags`` over the ranks that must decide alike (itself alone)."""
        return flags if self._ranks is None else self._ranks.maximum(flags)

    def _raise_if_nonfinite(self, counts: list[float], first_entry: int) -> None:
        bad = [i for i, n in enumerate(counts) if n]
        if bad:
            step, iteration = self._computed[first_entry + bad[0]]
            raise NonFiniteError(
                f"the model returned NaN/Inf at step {step}, iteration {iteration} "
                "(PnPConfig(nan_check=False) turns this check off)"
            )


def advance_together(engines: Sequence[PnPEngine]) -> list[torch.Tensor | None]:
    """Advance engines that share one model call (after ``update`` on each): the step goes on while
    any of them wants to. Engines are advanced in reverse order so that generators they share are
    rewound in the reverse order of their draws."""
    keep_going = any(e.iterates_again for e in engines)
    inputs = [e.advance(keep_going) for e in reversed(engines)]
    return inputs[::-1]
