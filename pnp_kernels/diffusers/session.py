"""What ``enable_pnp`` attaches to one pipeline: its P&P settings, and the state of the call in progress."""
from __future__ import annotations

import contextlib
import dataclasses
import inspect

import torch

from ..compat import set_component_keeping_config
from ..config import PnPConfig
from ..engine import PnPEngine, PnPStats, check_sigmas
from ..ops.philox import sample_seeds
from .scheduler import PnPScheduler
from .support import cache_refusal, pinned_frames

# Philox seeds of the m-th copy of the scheduler (LTX-2's audio latents): the pipeline's seeds plus
# m * 2**32, so its noise never repeats the video's.
COPY_SEED_OFFSET = 2**32


def philox_seed(generator) -> int | list[int]:
    """The philox seed when none is given: the generator's ``initial_seed()`` (one per generator of a
    list), or a draw from torch's global RNG without a generator."""
    if isinstance(generator, torch.Generator):
        return generator.initial_seed()
    if isinstance(generator, (list, tuple)):
        return [g.initial_seed() for g in generator]
    return int(torch.randint(0, 2**62, ()).item())


def check_seed_noise(name: str, seed, config: PnPConfig) -> None:
    """A philox seed is only meaningful with ``noise="philox"``; refuse it otherwise."""
    if seed is not None and config.noise != "philox":
        raise ValueError(f"{name}={seed!r} is only used with PnPConfig(noise='philox'), got noise={config.noise!r}")


def engine_noise(config: PnPConfig, seed, generator) -> dict:
    """The engine's noise keywords: the call's generator (noise="generator"), or philox seeds (``seed``,
    by default derived from the generator, see ``philox_seed``)."""
    if config.noise == "generator":
        return {"generator": generator}
    return {"seed": philox_seed(generator) if seed is None else seed}


class PnPSession:
    """P&P state of one pipeline: the settings, the scheduler stand-in, and per call the schedulers
    in use (the pipeline's own and the copies its loop made), their engines and statistics."""

    def __init__(self, pipe, config: PnPConfig, seed, group):
        self.pipe = pipe
        self.config = config
        self.seed = seed
        self.group = group
        self.original_class = type(pipe)
        self.original_scheduler = pipe.scheduler
        self.scheduler = PnPScheduler(pipe.scheduler, self)
        # Two experts (Wan 2.2 A14B) switch at sigma = boundary_ratio (t = boundary_ratio * 1000).
        self.boundary_sigma = pipe.config.get("boundary_ratio")
        self.num_pinned_frames = pinned_frames(pipe)
        self.hooks: list = []  # (model, SkipIdleCallsHook)
        self.in_call = False
        self._reset_call()

    def _reset_call(self) -> None:
        self.members: list[PnPScheduler] = []  # schedulers whose set_timesteps ran in this call
        self.stats: dict[int, PnPStats] = {}  # id(member) -> stats of its finished run
        self.generator = None
        for _, hook in self.hooks:
            hook.reset()

    # ---- called by the schedulers and the hooks ---------------------------------------------------

    def resolve_plan(self, sigmas):
        if float(sigmas.max()) > 1.0 or float(sigmas.min()) < 0.0:
            raise ValueError(
                f"the scheduler's sigmas run from {float(sigmas[0]):g} to {float(sigmas[-1]):g}; P&P needs flow-matching "
                "sigmas in [0, 1] (z = (1 - sigma) x + sigma eps)"
            )
        return self.config.plan.resolve(check_sigmas(sigmas), boundary_sigma=self.boundary_sigma)

    def register(self, member: PnPScheduler) -> None:
        if not self.in_call:
            raise RuntimeError(
                "the P&P scheduler stand-in was used outside a call of the pipeline P&P is enabled on (was "
                "pipe.scheduler given to another pipeline?); use the real scheduler, pipe.components['scheduler']"
            )
        if member not in self.members:
            self.members.append(member)

    def loop_entry(self):
        """Identifies the loop entry the next model call belongs to (changes once per entry)."""
        return sum(m.calls for m in self.members)

    def model_call_needed(self) -> bool:
        return not self.members or any(m.next_call_needed() for m in self.members)

    def new_engine(self, member: PnPScheduler, z: torch.Tensor) -> PnPEngine:
        config = dataclasses.replace(self.config, plan=member.plan)
        is_copy = member is not self.scheduler
        noise = engine_noise(config, self.seed, self.generator)
        if is_copy and "seed" in noise:
            copy_index = [m for m in self.members if m is not self.scheduler].index(member) + 1
            noise["seed"] = [(s + copy_index * COPY_SEED_OFFSET) % 2**64 for s in sample_seeds(noise["seed"], z.shape[0])]
        pinned = 0 if is_copy else self.num_pinned_frames
        return PnPEngine(config, member.grid, z, num_pinned_frames=pinned, group=self.group, **noise)

    def finished(self, member: PnPScheduler) -> None:
        self.stats[id(member)] = member.engine.finish()

    # ---- around one pipeline call -----------------------------------------------------------------

    @contextlib.contextmanager
    def call(self, args: tuple, kwargs: dict):
        """Checks, the generator of the call, and ``pnp_stats`` afterwards."""
        pipe = self.pipe
        reason = cache_refusal(pipe)
        if reason is not None:
            raise ValueError(f"P&P cannot run: {reason}")
        if pipe.scheduler is not self.scheduler:
            raise ValueError(
                "pipe.scheduler was replaced after enable_pnp; call disable_pnp(pipe) and enable_pnp again"
            )
        bound = inspect.signature(self.original_class.__call__).bind_partial(pipe, *args, **kwargs)
        self._reset_call()
        self.generator = bound.arguments.get("generator")
        self.in_call = True
        try:
            yield
            self._collect_stats()
        finally:
            self.in_call = False
            self._reset_call()

    @contextlib.contextmanager
    def stock_scheduler(self):
        """The pipeline's own scheduler in place of the stand-in for the duration of the block."""
        set_component_keeping_config(self.pipe, "scheduler", self.original_scheduler)
        try:
            yield
        finally:
            set_component_keeping_config(self.pipe, "scheduler", self.scheduler)

    def _collect_stats(self) -> None:
        pipe = self.pipe
        unfinished = [m for m in self.members if id(m) not in self.stats]
        if unfinished and not getattr(pipe, "interrupt", False):
            m = unfinished[0]
            raise RuntimeError(
                f"the pipeline's loop called scheduler.step {m.calls} times for the {len(m.schedule or ())} "
                "timesteps it was given; P&P needs one step call per timestep"
            )
        pipe.pnp_stats = self.stats.get(id(self.scheduler))
        pipe.pnp_stats_copies = [self.stats[id(m)] for m in self.members if m is not self.scheduler and id(m) in self.stats]
