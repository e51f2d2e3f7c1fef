"""The scheduler stand-in that turns a stock diffusers loop into a P&P loop.

Every stock flow-matching loop does, per entry of ``scheduler.timesteps``: one model evaluation
(possibly several transformer calls combined into a guided velocity), then
``latents = scheduler.step(velocity, t, latents)``. ``PnPScheduler`` repeats each step's timestep
once per planned model call (1 + K entries for a step refined K times; ``sigmas`` likewise), so the
unchanged loop evaluates the model as often as the plan asks. Its ``step`` feeds each velocity to the
P&P engine and returns the next model input: the perturbed latents while the step iterates, the
state after the step on the step's last entry. Loop entries after an early exit are idle: the
transformer hook (``hooks.py``) skips their model call and ``step`` returns the frozen input.

Stepping is Euler on the wrapped scheduler's sigma grid, whatever the scheduler (UniPC included),
as the published P&P code does. Everything else (config, order, ``scale_noise``, ...) is the wrapped
scheduler's.
"""
from __future__ import annotations

import copy
import functools

import torch

from .layout import LatentLayout


class PnPScheduler:
    """Stands in for ``scheduler`` while P&P is enabled on a pipeline (see the module docstring).

    session: the ``PnPSession`` that owns this pipeline's P&P state (plan, noise, engines, stats).
    A deep copy (LTX-2 copies the scheduler for its audio latents) wraps a copy of the scheduler,
    shares the session and steps its own latents with its own engine; all copies decide together
    whether a loop entry needs a model call.
    """

    def __init__(self, scheduler, session):
        self.scheduler = scheduler
        self.session = session
        # invert_sigmas (Mochi): sigmas rise from 0 to 1 and the model predicts x - eps. The engine
        # runs on sigma' = 1 - sigma with v' = -v, the same Euler step in its own convention.
        self.inverted = bool(getattr(scheduler.config, "invert_sigmas", False))
        self.schedule: list[tuple[int, int, bool]] | None = None  # per loop entry: (step, iteration, last of step)

    def __getattr__(self, name):
        # Only reached for names this object lacks: the wrapped scheduler's config, order, scale_noise, ...
        if name == "scheduler":  # not set yet (copy/unpickle): no recursion
            raise AttributeError(name)
        return getattr(self.scheduler, name)

    def __deepcopy__(self, memo):
        twin = PnPScheduler(copy.deepcopy(self.scheduler, memo), self.session)
        memo[id(self)] = twin
        return twin

    def __repr__(self) -> str:
        return f"PnPScheduler({self.scheduler.__class__.__name__})"

    # ---- the grid ---------------------------------------------------------------------------------

    @property
    def set_timesteps(self):
        """The wrapped scheduler's ``set_timesteps`` (same signature, so ``retrieve_timesteps`` sees
        that it takes ``sigmas=``/``mu=``), followed by the expansion of the grid for the plan."""
        inner = self.scheduler.set_timesteps

        @functools.wraps(inner)
        def set_timesteps(*args, **kwargs):
            inner(*args, **kwargs)
            self._expand_grid()

        return set_timesteps

    def _expand_grid(self) -> None:
        inner = self.scheduler
        num_steps = len(inner.timesteps)
        sigmas = inner.sigmas[: num_steps + 1]
        self.grid = 1.0 - sigmas if self.inverted else sigmas
        self.plan = self.session.resolve_plan(self.grid)
        counts = [1 + self.plan.iterations(step) for step in range(num_steps)]
        self.schedule = [(step, k, k == n - 1) for step, n in enumerate(counts) for k in range(n)]
        self.num_steps = num_steps
        self.timesteps = inner.timesteps.repeat_interleave(torch.tensor(counts, device=inner.timesteps.device))
        repeated = inner.sigmas[:num_steps].repeat_interleave(torch.tensor(counts, device=inner.sigmas.device))
        self.sigmas = torch.cat([repeated, inner.sigmas[num_steps:]])
        self.num_inference_steps = len(self.timesteps)
        self.calls = 0  # step() calls so far: the loop entry of the next model call
        self.engine = None
        self.layout: LatentLayout | None = None
        self.model_input: torch.Tensor | None = None  # engine view of the model input being evaluated
        self.returned: torch.Tensor | None = None  # what the last step() returned to the loop
        self.step_iterating = False  # some sample still iterates in the current step
        self.session.register(self)

    def set_begin_index(self, begin_index: int = 0) -> None:
        if begin_index != 0:
            raise ValueError(
                f"P&P needs the loop to start at the first step (begin_index 0), got begin_index={begin_index} "
                "(a video-to-video strength below 1 starts part-way down the grid)"
            )
        self.scheduler.set_begin_index(0)

    # ---- the loop ---------------------------------------------------------------------------------

    def iterating_samples(self) -> list[bool] | None:
        """Which samples the next model call must compute for this scheduler's latents: None for all
        (a step's first call), else one flag per sample (all False on idle entries)."""
        if self.schedule is None or self.calls >= len(self.schedule) or self.schedule[self.calls][1] == 0:
            return None
        return self.engine.iterating if self.step_iterating else [False] * self.engine.batch

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, *args, return_dict: bool = True, **kwargs):
        """Feed one guided velocity to the engine; return the next model input (see the module docstring)."""
        if self.schedule is None:
            raise RuntimeError("scheduler.step was called before set_timesteps")
        if self.calls >= len(self.schedule):
            raise RuntimeError(
                f"scheduler.step was called more often than the {len(self.schedule)} timesteps set_timesteps gave"
            )
        if self.calls == 0:
            self._check_first_timestep(timestep)
        step, iteration, last = self.schedule[self.calls]
        self.calls += 1
        if iteration == 0:
            self._begin_step(step, sample)
        if self.step_iterating:
            velocity = self.layout.to_engine(model_output)
            proposed = self.engine.feed(-velocity if self.inverted else velocity)
            if proposed is None:
                self.step_iterating = False
            elif last:
                raise RuntimeError(f"the engine planned more iterations at step {step} than the expanded grid holds")
            else:  # samples that left the step are fed their last input again (the engine freezes them)
                self.model_input = proposed
        # After an early exit the remaining entries of the step are idle: the model is fed the last
        # input again until the step's last entry hands over the step's result.
        state = self.engine.z if last else self.model_input
        self.returned = self.layout.from_engine(state, model_output.dtype)
        if last and step == self.num_steps - 1:
            self.session.finished(self)
        if not return_dict:
            return (self.returned,)
        from diffusers.schedulers.scheduling_utils import SchedulerOutput

        return SchedulerOutput(prev_sample=self.returned)

    def _check_first_timestep(self, timestep) -> None:
        """A loop that skips entries of ``timesteps`` (a strength below 1 slices them) would pair each
        velocity with the wrong entry; one host read per call rules that out."""
        first = float(self.timesteps[0])
        given = float(torch.as_tensor(timestep).reshape(-1)[0])  # a scalar, or one per sample
        if given != first:
            raise ValueError(
                f"the loop's first timestep is {given:g}, but the grid starts at {first:g}: P&P needs "
                "the loop to run every timestep from the first (a strength below 1 starts part-way down the grid)"
            )

    def _begin_step(self, step: int, sample: torch.Tensor) -> None:
        if self.layout is None:
            self.layout = LatentLayout(sample.dim())
        # The loop passes back what the last step returned, or latents it replaced (callback_on_step_end).
        replaced = None if sample is self.returned else self.layout.to_engine(sample).float()
        if self.engine is None:
            self.engine = self.session.new_engine(self, replaced)
        # Unreplaced, the engine goes on from its float32 state (the loop holds it in its own dtype).
        self.model_input = self.engine.begin_step(step, replaced)
        self.step_iterating = True
