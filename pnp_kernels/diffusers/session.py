"""What ``enable_pnp`` attaches to one pipeline: its P&P settings, and the state of the call in progress."""
from __future__ import annotations

import contextlib
import dataclasses
import inspect

import torch

from ..compat import hook_registry, set_component_keeping_config
from ..config import PnPConfig
from ..engine import IterationEvent, PnPEngine, PnPStats, check_process_group, check_sigmas
from ..ops.philox import stream_seeds
from ..validators import check_int
from .guiders import install_guider, remove_guider
from .hooks import HOOK_NAME, SkipIdleCallsHook
from .progress import ModelCallProgress
from .scheduler import PnPScheduler
from .support import cache_refusal, denoisers, pinned_frames, stock_class



def philox_seed(generator) -> int | list[int]:
    """The philox seed when none is given: the generator's ``initial_seed()`` (one per generator of a
    list), or a draw from torch's global RNG without a generator."""
    if isinstance(generator, torch.Generator):
        return generator.initial_seed()
    if isinstance(generator, (list, tuple)):
        return [g.initial_seed() for g in generator]
    return int(torch.randint(0, 2**62, ()).item())


def check_pnp_arguments(config, seed, group, names: tuple[str, str, str], default: PnPConfig) -> PnPConfig:
    """The P&P settings of ``enable_pnp`` or a Wan P&P call, named as the caller names them: the config
    (``default`` for None), the philox seed (noise="philox" only) and the process group."""
    config_name, seed_name, group_name = names
    config = default if config is None else config
    if not isinstance(config, PnPConfig):
        raise TypeError(f"{config_name} must be a PnPConfig or None, got {type(config).__name__}")
    if seed is not None:
        if config.noise != "philox":
            raise ValueError(f"{seed_name}={seed!r} is only used with PnPConfig(noise='philox'), got noise={config.noise!r}")
        for s in seed if isinstance(seed, (list, tuple)) else [seed]:
            check_int(seed_name, s, 0)
    check_process_group(group_name, group)
    return config


def engine_noise(config: PnPConfig, seed, generator) -> dict:
    """The engine's noise keywords: the call's generator (noise="generator"), or philox seeds (``seed``,
    by default derived from the generator, see ``philox_seed``)."""
    if config.noise == "generator":
        return {"generator": generator}
    return {"seed": philox_seed(generator) if seed is None else seed}


class PnPSession:
    """P&P state of one pipeline: the settings, the scheduler stand-in, and per call the schedulers
    in use (the pipeline's own and the copies its loop made), their engines and statistics.

    callback (an ``IterationEvent`` after every model call) and capture_uncertainty (the uncertainty
    maps in the statistics) go to the engine of the pipeline's own latents.
    """

    def __init__(self, pipe, config: PnPConfig, seed, group, *, callback=None, capture_uncertainty: bool = False):
        self.pipe = pipe
        self.config = config
        self.seed = seed
        self.group = group
        self.callback = callback
        self.capture_uncertainty = capture_uncertainty
        self.stock_class = stock_class(pipe)
        self.original_scheduler = pipe.scheduler
        self.scheduler = PnPScheduler(pipe.scheduler, self)
        # Two experts (Wan 2.2 A14B) switch at sigma = boundary_ratio (t = boundary_ratio * 1000).
        self.boundary_sigma = pipe.config.get("boundary_ratio")
        self.num_pinned_frames = pinned_frames(pipe)
        self.hooks: list = []  # (model, SkipIdleCallsHook)
        self.in_call = False
        self.progress: ModelCallProgress | None = None
        self._reset_call()

    def attach(self) -> None:
        """Put the scheduler stand-in and the transformer hooks in place (``detach`` takes them out)."""
        for _, model in denoisers(self.pipe):
            hook = SkipIdleCallsHook(self)
            hook_registry(model).register_hook(hook, HOOK_NAME)
            self.hooks.append((model, hook))
        set_component_keeping_config(self.pipe, "scheduler", self.scheduler)
        install_guider(self.pipe, self)
        self.pipe._pnp_session = self

    def detach(self) -> None:
        for model, _ in self.hooks:
            hook_registry(model).remove_hook(HOOK_NAME, recurse=False)
        self.hooks = []
        if self.pipe.scheduler is self.scheduler:
            set_component_keeping_config(self.pipe, "scheduler", self.original_scheduler)
        remove_guider(self.pipe)
        self.pipe.__dict__.pop("_pnp_session", None)

    @contextlib.contextmanager
    def attached(self):
        self.attach()
        try:
            yield self
        finally:
            self.detach()

    def _reset_call(self) -> None:
        self.members: list[PnPScheduler] = []  # schedulers whose set_timesteps ran in this call
        self.stats: dict[int, PnPStats] = {}  # id(member) -> stats of its finished run
        self.generator = None
        self.progress = None
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

    def iterating_samples(self) -> list[bool] | None:
        """The samples the next model call must compute: None for all, else one flag per sample, the
        union over the schedulers in use (joint latents such as LTX-2's video and audio share each call)."""
        wanted = [m.iterating_samples() for m in self.members]
        if not wanted or any(w is None for w in wanted):
            return None
        return [any(flags) for flags in zip(*wanted)]

    def new_engine(self, member: PnPScheduler, z: torch.Tensor) -> PnPEngine:
        config = dataclasses.replace(self.config, plan=member.plan)
        is_copy = member is not self.scheduler
        noise = engine_noise(config, self.seed, self.generator)
        if is_copy and "seed" in noise:
            copy_index = [m for m in self.members if m is not self.scheduler].index(member) + 1
            noise["seed"] = list(stream_seeds(noise["seed"], z.shape[0], copy_index))  # LTX-2's audio: its own noise
        if is_copy:
            return PnPEngine(config, member.grid, z, group=self.group, **noise)
        return PnPEngine(config, member.grid, z, num_pinned_frames=self.num_pinned_frames, group=self.group,
                         capture_uncertainty=self.capture_uncertainty, callback=self._model_call_done, **noise)

    def _model_call_done(self, event: IterationEvent) -> None:
        if self.progress is not None:
            self.progress.model_call(event)
        if self.callback is not None:
            self.callback(event)

    def progress_bar(self, bar):
        """The loop's progress bar, counting model calls while a call runs (see ``ModelCallProgress``)."""
        if not self.in_call:
            return bar
        upper_bound = len(self.scheduler.schedule) if self.scheduler.schedule is not None else None
        self.progress = ModelCallProgress(bar, upper_bound)
        return self.progress

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
        bound = inspect.signature(self.stock_class.__call__).bind_partial(pipe, *args, **kwargs)
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
        """The pipeline's own scheduler (and guider) in place of the stand-ins for the duration of the block."""
        guider = getattr(self.pipe, "guider", None)
        set_component_keeping_config(self.pipe, "scheduler", self.original_scheduler)
        remove_guider(self.pipe)
        try:
            yield
        finally:
            set_component_keeping_config(self.pipe, "scheduler", self.scheduler)
            if guider is not None:
                set_component_keeping_config(self.pipe, "guider", guider)

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
