"""Predict-and-Perturb as a call-driven engine: it holds one sampling run's state, the caller owns the
model calls (docs/ALGORITHM.md, "The loop").

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

import hashlib
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Sequence

import torch

from .config import PnPConfig
from .ops.philox import PhiloxNoise, sample_seeds
from .ops.pnp_update import pnp_update
from .ops.outputs import PnPUpdateOutput
from .validators import check_bool, check_callable, check_choice, check_int, check_real, check_sigma_grid

# Model calls that may pass without reading the NaN log back from the device. Refined iterations read it
# with their one host read anyway; plain steps read it every this many calls, so a NaN is reported at
# most this many model calls after it appeared (with its own step and iteration) for one small read.
NAN_READ_INTERVAL = 8


@dataclass
class StepStats:
    """What happened at one outer step."""

    step: int
    sigma: float
    sigma_next: float
    planned: int  # K of the plan
    iterations_run: int = 0  # P&P iterations computed after the first prediction (0..K)
    nfe: int = 1  # model calls at this step
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
    time_model: float = 0.0  # seconds between handing out a model input and getting its velocity
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


def check_sigmas(sigmas) -> list[float]:
    """N + 1 non-increasing values in [0, 1] as floats (a tensor is read to the host once, here)."""
    if isinstance(sigmas, torch.Tensor):
        if sigmas.dim() != 1:
            raise ValueError(f"sigmas must be 1-D, got shape {tuple(sigmas.shape)}")
        sigmas = sigmas.detach().double()
    return check_sigma_grid(sigmas)


def _check_noise_source(config: PnPConfig, generator, seed, batch: int, device: torch.device):
    """The generator (or list of them) in generator mode, the per-sample seeds in philox mode."""
    if config.noise == "philox":
        if generator is not None:
            raise ValueError("generator is not used with noise='philox'; pass seed= instead")
        if seed is None:
            raise ValueError("noise='philox' needs seed= (an integer, or one integer per sample)")
        return tuple(check_int(f"seed[{b}]", s) for b, s in enumerate(sample_seeds(seed, batch)))
    if seed is not None:
        raise ValueError("seed= is for noise='philox'; with noise='generator' pass generator=")
    if generator is None:  # the global RNG of the latents' device, as torch.randn would use
        return torch.cuda.default_generators[device.index or 0] if device.type == "cuda" else torch.default_generator
    if isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, (list, tuple)):
        if len(generator) != batch:
            raise ValueError(f"generator list has {len(generator)} generators for a batch of {batch}")
        for g in generator:
            if not isinstance(g, torch.Generator):
                raise TypeError(f"generator list must hold torch.Generator objects, got {type(g).__name__}")
        return list(generator)
    raise TypeError(f"generator must be a torch.Generator or a list of them, got {type(generator).__name__}")


class _GeneratorNoise:
    """Perturbation noise in the published order: one latent-shaped float32 ``randn`` per perturbation,
    in (step, iteration) order, filled in logical (B, C, F, H, W) order whatever the latents' strides.
    With a list, each sample draws from its own generator only while it iterates. A draw made for an
    iteration that then does not run is undone by restoring the generator state (``undo``), but only
    while nothing else has drawn from that generator since: engines sharing a generator must never
    hand out numbers another engine already used."""

    def __init__(self, generator: torch.Generator | list[torch.Generator], like: torch.Tensor):
        self.generator = generator
        self.buffer = torch.empty(like.shape, dtype=torch.float32, device=like.device)  # contiguous
        self.saved: list = []  # per generator: (state before the last draw, state after it)

    def draw(self, active: list[bool]) -> torch.Tensor:
        g = self.generator
        if isinstance(g, list):
            before = [gen.get_state() for gen in g]
            for b, (gen, on) in enumerate(zip(g, active)):
                if on:
                    _randn_into(self.buffer[b], gen)
                else:
                    self.buffer[b].zero_()
            self.saved = [(state, gen.get_state()) for state, gen in zip(before, g)]
        else:
            before = g.get_state()
            _randn_into(self.buffer, g)
            self.saved = [(before, g.get_state())]
        return self.buffer

    def undo(self, continuing: list[bool]) -> None:
        """Give the last draw back for the samples that will not use it."""
        g = self.generator
        if isinstance(g, list):
            for gen, saved, on in zip(g, self.saved, continuing):
                if not on:
                    _rewind(gen, *saved)
        elif not any(continuing):
            _rewind(g, *self.saved[0])
        self.saved = []


def _randn_into(buffer: torch.Tensor, generator: torch.Generator) -> None:
    """Fill the contiguous ``buffer`` with one ``randn`` draw, made where the generator lives (e.g. a CPU
    generator for CUDA latents draws on the CPU and is copied over)."""
    if generator.device == buffer.device:
        torch.randn(buffer.shape, generator=generator, out=buffer)
    else:
        buffer.copy_(torch.randn(buffer.shape, generator=generator, device=generator.device))


def _rewind(generator: torch.Generator, before: torch.Tensor, after: torch.Tensor) -> None:
    """Restore ``before`` unless someone drew from the generator after us (then the draw stays spent)."""
    if torch.equal(generator.get_state(), after):
        generator.set_state(before)


class _ModelTimer:
    """Time between handing out a model input and getting its velocity: CUDA events (no sync until the
    end) or the host clock."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.host_seconds = 0.0
        self.events: list = []
        self.started = None

    def start(self) -> None:
        if self.cuda:
            self.started = torch.cuda.Event(enable_timing=True)
            self.started.record()
        else:
            self.started = time.perf_counter()

    def stop(self) -> None:
        if self.started is None:
            return
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self.events.append((self.started, end))
        else:
            self.host_seconds += time.perf_counter() - self.started
        self.started = None

    def seconds(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return sum(a.elapsed_time(b) for a, b in self.events) / 1000.0
        return self.host_seconds


def check_process_group(name: str, group):
    """``group`` as the engine takes it: "auto", None, or a torch.distributed ProcessGroup."""
    if isinstance(group, str):
        return check_choice(name, group, ("auto",))
    if group is None:
        return None
    import torch.distributed as dist

    if not (dist.is_available() and isinstance(group, dist.ProcessGroup)):
        raise TypeError(f"{name} must be 'auto', None or a torch.distributed ProcessGroup, got {group!r}")
    return group


class _RankAgreement:
    """Makes the ranks of a process group decide alike. In a sequence- or context-parallel run every rank
    holds the whole latents and calls the model together; if rounding made one rank stop a step early,
    the ranks would make different numbers of model calls and the model's collectives would hang. So the
    per-sample "still iterating" flags and the NaN counts are combined with MAX at the host reads the run
    makes anyway: a sample iterates while any rank wants it to, and a NaN on any rank stops every rank."""

    def __init__(self, group, device: torch.device):
        import torch.distributed as dist

        self.dist, self.group = dist, group
        self.world_size = dist.get_world_size(group)
        # Gloo reduces CPU tensors; NCCL and the others reduce tensors on the latents' device.
        self.device = torch.device("cpu") if dist.get_backend(group) == "gloo" else device

    @classmethod
    def of(cls, group, device: torch.device) -> "_RankAgreement | None":
        """For ``group`` ("auto": the default group when torch.distributed runs more than one rank; None:
        every rank decides alone), or None when there is nobody to agree with."""
        import torch.distributed as dist

        check_process_group("group", group)
        if group == "auto":
            if not (dist.is_available() and dist.is_initialized()):
                return None
            group = dist.group.WORLD
        elif group is None:
            return None
        agreement = cls(group, device)
        return agreement if agreement.world_size > 1 else None

    def maximum(self, flags: torch.Tensor) -> torch.Tensor:
        reduced = flags.to(self.device, copy=True)
        self.dist.all_reduce(reduced, op=self.dist.ReduceOp.MAX, group=self.group)
        return reduced.to(flags.device)

    def check_same_noise(self, fingerprint: bytes, what: str) -> None:
        """Raise on every rank unless all ranks start from the same noise source."""
        digest = hashlib.sha256(fingerprint).digest()
        words = torch.tensor([int.from_bytes(digest[i : i + 8], "little", signed=True) for i in (0, 8)],
                             dtype=torch.int64, device=self.device)
        gathered = [torch.empty_like(words) for _ in range(self.world_size)]
        self.dist.all_gather(gathered, words, group=self.group)
        differing = [rank for rank, other in enumerate(gathered) if not torch.equal(other, gathered[0])]
        if differing:
            raise ValueError(
                f"the ranks of the process group start from different {what} (ranks {differing} differ from rank "
                "0): in a sequence- or context-parallel run every rank must seed the same noise. For ranks that "
                "sample different videos (data parallel), pass group=None (enable_pnp(..., group=None); "
                "pnp_group=None to the Wan P&P pipelines)"
            )


def _noise_fingerprint(source) -> tuple[bytes, str]:
    """Bytes that identify the noise a run will draw, and what they are, for the cross-rank check."""
    if isinstance(source, tuple):  # philox seeds
        return repr(source).encode(), "philox seeds"
    generators = source if isinstance(source, list) else [source]
    return b"".join(bytes(g.get_state().tolist()) for g in generators), "generator states"


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
    generator (noise="generator", one per sample for batch invariance) or seed (noise="philox").
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
        if not isinstance(latents, torch.Tensor):
            raise TypeError(f"latents must be a torch.Tensor, got {type(latents).__name__}")
        if latents.dim() != 5 or not latents.is_floating_point():
            raise ValueError(
                f"latents must be a floating-point (B, C, F, H, W) tensor, got {latents.dtype} {tuple(latents.shape)}"
            )
        empty = [f"{axis} = 0" for axis, size in zip("BCFHW", latents.shape) if size == 0]
        if empty:
            raise ValueError(
                f"latents have {'no frames' if latents.shape[2] == 0 else 'an empty axis'} "
                f"({', '.join(empty)} in (B, C, F, H, W) = {tuple(latents.shape)})"
            )
        self.sigmas = check_sigmas(sigmas)
        self.num_steps = len(self.sigmas) - 1
        self.plan = config.plan.resolve(self.sigmas)
        self.config = config
        self.batch = latents.shape[0]
        self._noise_source = _check_noise_source(config, generator, seed, self.batch, latents.device)
        self.num_pinned_frames = check_int("num_pinned_frames", num_pinned_frames, 0, latents.shape[2] - 1)
        self.capture_uncertainty = check_bool("capture_uncertainty", capture_uncertainty)
        self.callback = check_callable("callback", callback)
        if config.nan_check and not bool(torch.isfinite(latents).all()):  # one host read, before any work
            raise ValueError("latents contain NaN/Inf: the initial noise must be finite")
        self._ranks = _RankAgreement.of(group, latents.device)
        if self._ranks is not None:
            self._ranks.check_same_noise(*_noise_fingerprint(self._noise_source))

        # The state, its two output slots (used alternately so that an update never writes what it reads),
        # and the noise buffer: O(1) latent-sized buffers whatever the plan, all contiguous.
        self._state = torch.empty(latents.shape, dtype=torch.float32, device=latents.device)
        self._state.copy_(latents)
        self.z = self._state
        self._slots = [_empty_slot(self._state), _empty_slot(self._state)]
        self._slot = 0
        has_noise = config.noise == "generator" and bool(self.plan)
        self._generator_noise = _GeneratorNoise(self._noise_source, self._state) if has_noise else None
        max_nfe = self.num_steps + self.plan.extra_nfe(self.num_steps)
        # One int32 per model call, filled on the device, read with the host reads already made (empty
        # without nan_check).
        log_size = max_nfe if config.nan_check else 0
        self._nonfinite_log = torch.zeros(log_size, dtype=torch.int32, device=latents.device)
        self._computed: list[tuple[int, int]] = []  # (step, iteration) of each model output used: one log entry each
        self._log_read = 0  # log entries read back so far
        # The backend asked for until the first update reports the one that ran.
        self.stats = PnPStats(num_steps=self.num_steps, backend=config.backend, nfe_per_sample=[0] * self.batch)
        self._timer = _ModelTimer(latents.device)
        self._started = time.perf_counter()
        self._step: StepStats | None = None  # the step in progress
        self._awaiting_velocity = False  # an input was handed out and its velocity not yet fed
        self._iteration = 0
        self._wants_more = False
        self.active: list[bool] = [True] * self.batch  # samples the next model call must compute

    # ----------------------------------------------------------------------------------------- steps

    @property
    def iteration(self) -> int:
        """P&P iteration of the next velocity ``update`` expects (0 = the step's first prediction)."""
        return self._iteration

    @property
    def wants_more(self) -> bool:
        """After ``update``: whether this engine would run another iteration at this step."""
        return self._wants_more

    @property
    def step_stats(self) -> StepStats | None:
        """Statistics of the step in progress, or of the last finished one."""
        return self.stats.steps[-1] if self.stats.steps else None

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
        self._active_device: torch.Tensor | None = None  # None = every sample active
        self.active = [True] * self.batch
        self._wants_more = False
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
        if not any(self.active):  # frozen by a joint decision: this call's output is not used
            self._wants_more = False
        else:
            result = self._run_update(v, v_uncond, scale)
            self._computed.append((step.step, k))
            if self.config.nan_check:
                self._nonfinite_log[len(self._computed) - 1] = result.nonfinite.sum()
            for b, on in enumerate(self.active):
                self.stats.nfe_per_sample[b] += on
            if self._prev is None:
                self._still = self.active
                self._read_nonfinite_if_due()
            else:
                fractions = self._read_after_refined_iteration(result)
                step.iterations_run = k
            self._prev = result
            self._wants_more = k < step.planned and any(self._still)
        if self.callback is not None:
            self.callback(IterationEvent(step.step, k, self.num_steps, step.planned, self.stats.nfe, fractions))
        return self._wants_more

    def advance(self, keep_going: bool | None = None) -> torch.Tensor | None:
        """Next model input, or None when the step ends (``z`` is then its result).

        keep_going: the joint decision of several engines sharing one model call (None: this engine's
        own). When True although this engine wanted to stop, its samples freeze: they are fed their last
        input again and keep their results.
        """
        step = self._require_step("advance")
        if self._awaiting_velocity:
            raise RuntimeError(f"advance before update at step {step.step}, iteration {self._iteration}")
        go_on = self._wants_more if keep_going is None else check_bool("keep_going", keep_going)
        # Samples that compute the next call: those still iterating, while this engine's plan lasts.
        continuing = list(self._still) if go_on and self._wants_more else [False] * self.batch
        if self._generator_noise is not None and self._generator_noise.saved:
            self._generator_noise.undo(continuing)
        for b, (was, now) in enumerate(zip(self.active, continuing)):
            if was and not now and self._iteration < step.planned:
                step.exit_iteration[b] = self._iteration
        if not go_on:
            self.z = self._prev.z_next
            self._step = None
            return None
        if any(continuing):
            next_input = self._prev.z_perturbed
            for b, on in enumerate(continuing):
                if not on:  # a frozen sample sees its last input again (its output is discarded)
                    next_input[b].copy_(self._input[b])
            if not all(continuing):
                self._active_device = self._still_device  # the device copy of ``continuing``
            self._input = next_input
        # else: every sample of this engine is frozen; it hands out its last input again.
        self.active = continuing
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
        if v.shape != self._state.shape:
            raise ValueError(f"{name} has shape {tuple(v.shape)}, expected {tuple(self._state.shape)}")

    def _run_update(self, v, v_uncond, scale) -> PnPUpdateOutput:
        step, k, prev = self._step, self._iteration, self._prev
        noise = None
        if k < step.planned:  # another iteration may follow: the op also produces its perturbed input
            if self._generator_noise is not None:
                noise = self._generator_noise.draw(self.active)
            else:
                noise = PhiloxNoise(self._noise_source, step.step, k + 1)
        out = self._slots[self._slot]
        self._slot = 1 - self._slot
        capture = self.capture_uncertainty and prev is not None  # refined iterations have uncertainty maps
        result = pnp_update(
            self._input, v, step.sigma, step.sigma_next, v_uncond=v_uncond, guidance_scale=scale,
            prev_x0=prev.x0 if prev is not None else None,
            prev_z_next=prev.z_next if prev is not None else None,
            prev_certain=prev.certain if prev is not None else None,
            noise=noise, active=self._active_device,  # None until a refined iteration freezes a sample
            return_uncertainty=capture,
            # x0 and the mask are read by a next iteration or an uncertainty capture only
            store_state=k < step.planned or capture,
            # rounding to float32 changes nothing: no need to restrict the backends then
            round_products_to=v.dtype if self.config.published_rounding and v.dtype != torch.float32 else None,
            out=out._replace(z_perturbed=out.z_perturbed if noise is not None else None),
            tau=self.config.tau, p_norm=self.config.p_norm, num_pinned_frames=self.num_pinned_frames,
            backend=self.config.backend,
        )
        self.stats.backend = result.backend
        return result

    def _read_after_refined_iteration(self, result: PnPUpdateOutput) -> list[float]:
        """The one device-to-host read of a refined iteration: certain fractions, who goes on, NaN log."""
        batch, k = self.batch, self._iteration
        still = ~(result.certain_fraction > self.config.certain_stop)
        if self._active_device is not None:
            still &= self._active_device
        logged = len(self._computed)
        flags = self._agree(torch.cat([still.to(torch.int32), self._unread_log(logged)]))
        host = torch.cat([result.certain_fraction, flags.float()]).tolist()
        fractions = host[:batch]
        self._still = [bool(x) for x in host[batch : 2 * batch]]
        self._still_device = flags[:batch].bool()
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
    keep_going = any(e.wants_more for e in engines)
    inputs = [e.advance(keep_going) for e in reversed(engines)]
    return inputs[::-1]
