"""The transformer hook that makes an early exit save its model calls.

The stock loop runs the model on every entry of the (expanded) timesteps. When every sample of a
step has left it early, the remaining entries of that step are idle: the scheduler ignores their
velocity. The hook, registered in diffusers' hook registry of each denoiser (the mechanism of its
caching methods), then returns the output of the same call of the previous entry instead of running
the model, so the loop's guidance arithmetic sees tensors of the right kind and nothing is computed.
"""
from __future__ import annotations

from diffusers.hooks import ModelHook

from ..compat import call_original_forward

HOOK_NAME = "pnp_kernels_skip_idle_calls"


class SkipIdleCallsHook(ModelHook):
    """Runs the wrapped transformer only when the session says the current loop entry needs it."""

    def __init__(self, session):
        super().__init__()
        self.session = session
        self.entry = None  # the loop entry the last call belonged to
        self.position = 0  # index of the call within its entry (cond, uncond, ...)
        self.outputs: dict[int, object] = {}  # per position: the output of the latest entry

    def new_forward(self, module, *args, **kwargs):
        entry = self.session.loop_entry()
        if entry != self.entry:
            self.entry, self.position = entry, 0
        position = self.position
        self.position += 1
        if position in self.outputs and not self.session.model_call_needed():
            return self.outputs[position]
        output = call_original_forward(self, *args, **kwargs)
        self.outputs[position] = output
        return output

    def reset(self) -> None:
        """Forget the outputs of the last pipeline call."""
        self.entry, self.position, self.outputs = None, 0, {}
