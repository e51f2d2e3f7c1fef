"""The guider stand-in: under P&P a diffusers guider (``pipe.guider``: CFG, APG, CFG-Zero*, ...) sees outer steps.

A pipeline that guides through a guider calls, for loop entry i, ``guider.set_state(step=i,
num_inference_steps=..., timestep=t)``, ``guider.prepare_inputs(...)`` and ``guider(...)`` once. Under P&P
the loop has one entry per model call (scheduler.py), so the guider would count P&P's extra calls as
steps: its step index and step windows (``start`` / ``stop``, CFG-Zero*'s zeroed first steps) and its
running state (APG's momentum) would advance on them. ``PnPGuider`` passes the guider the outer step of
the entry and the run's real step count, and gives every call of a step the guider's state from before
the step's first call; after an extra call the state goes back to what the step's first call left. The
guider's state thus advances once per outer step, as in a run without P&P (docs/DIFFUSERS.md).
"""
from __future__ import annotations

import copy

from ..compat import set_component_keeping_config


def _state(guider) -> dict:
    """A copy of everything the guider holds (its step, counters, momentum buffers, ...)."""
    return copy.deepcopy(vars(guider))


def _restore(guider, state: dict) -> None:
    vars(guider).update(copy.deepcopy(state))  # a copy again: the guider may change what it is given


class PnPGuider:
    """Stands in for ``pipe.guider`` while P&P is enabled (see the module docstring)."""

    def __init__(self, guider, session):
        self.guider = guider
        self.session = session
        self.before: dict | None = None  # the guider's state before the current step's first call
        self.after: dict | None = None  # and after it
        self.iteration = 0  # P&P iteration of the current loop entry

    def __getattr__(self, name):
        # Only reached for names this object lacks: the guider's config, prepare_inputs, ...
        if name == "guider":  # not set yet (copy/unpickle): no recursion
            raise AttributeError(name)
        return getattr(self.guider, name)

    def __repr__(self) -> str:
        return f"PnPGuider({self.guider.__class__.__name__})"

    def set_state(self, step: int, num_inference_steps: int, timestep) -> None:
        scheduler = self.session.scheduler
        if scheduler.schedule is None or not 0 <= step < len(scheduler.schedule):
            raise RuntimeError(
                f"guider.set_state(step={step}) does not name an entry of the {len(scheduler.schedule or ())} "
                "timesteps the P&P scheduler gave the loop"
            )
        outer, self.iteration, _ = scheduler.schedule[step]
        if self.iteration == 0:
            self.before = _state(self.guider)
        else:
            _restore(self.guider, self.before)
        self.guider.set_state(step=outer, num_inference_steps=scheduler.num_steps, timestep=timestep)

    def __call__(self, *args, **kwargs):
        output = self.guider(*args, **kwargs)
        if self.iteration == 0:
            self.after = _state(self.guider)
        else:
            _restore(self.guider, self.after)
        return output


def install_guider(pipe, session) -> None:
    """Put the stand-in in the place of the pipeline's guider, if it has one."""
    from diffusers.guiders.guider_utils import BaseGuidance

    guider = getattr(pipe, "guider", None)
    if isinstance(guider, BaseGuidance):
        set_component_keeping_config(pipe, "guider", PnPGuider(guider, session))


def remove_guider(pipe) -> None:
    """Give the pipeline its guider back."""
    if isinstance(getattr(pipe, "guider", None), PnPGuider):
        set_component_keeping_config(pipe, "guider", pipe.guider.guider)
