"""The transformer hook that makes an early exit save its compute.

The stock loop runs the model on every entry of the (expanded) timesteps, on every sample of the batch.
The hook, registered in diffusers' hook registry of each denoiser (the mechanism of its caching
methods), runs the model only on the samples that still iterate:

- when no sample needs the entry (every sample of the step has left it early), it returns the output
  of the same call of the previous entry, so the loop's guidance arithmetic sees tensors of the right
  kind and nothing is computed;
- when some samples left the step, it runs the model on the rows of the others and fills the rows of
  the samples that left with their previous output, which the engine ignores (a frozen sample keeps
  its result).

A call's batch holds each sample once per guidance branch: n = c * B rows for B samples, branch j at
rows j * B .. j * B + B - 1 (the order in which the pipelines concatenate their branches). Tensor
arguments with n rows are cut to the computing samples' rows; anything else passes as it is.
"""
from __future__ import annotations

import contextlib

import torch
from diffusers.hooks import ModelHook

from ..compat import call_original_forward
from .caches import full_model_call

HOOK_NAME = "pnp_kernels_skip_idle_calls"


class SkipIdleCallsHook(ModelHook):
    """Runs the wrapped transformer on the samples that still iterate at the current loop entry."""

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
        iterating = self.session.iterating_samples()  # None on a step's first call
        previous = self.outputs.get(position)
        if previous is not None and iterating is not None:
            if not any(iterating):
                return previous
            call_rows = _call_batch(args, kwargs)
            rows = _computing_rows(iterating, call_rows)
            if rows is not None:
                with full_model_call(module):
                    output = call_original_forward(self, *_cut(args, rows, call_rows), **_cut(kwargs, rows, call_rows))
                self.outputs[position] = _fill(previous, output, rows)
                return self.outputs[position]
        with contextlib.nullcontext() if iterating is None else full_model_call(module):  # caches: caches.py
            output = call_original_forward(self, *args, **kwargs)
        self.outputs[position] = output
        return output

    def reset(self) -> None:
        """Forget the outputs of the last pipeline call."""
        self.entry, self.position, self.outputs = None, 0, {}


def _call_batch(args: tuple, kwargs: dict) -> int | None:
    """Rows of the call's latents (``hidden_states``, by name or first position)."""
    hidden = kwargs.get("hidden_states", args[0] if args else None)
    return hidden.shape[0] if isinstance(hidden, torch.Tensor) and hidden.dim() > 0 else None


def _computing_rows(iterating: list[bool], rows_in_call: int | None) -> torch.Tensor | None:
    """Rows of the call that belong to the computing samples (None when the call's batch is not one
    row per sample and guidance branch, or every sample computes: then the whole call runs)."""
    batch = len(iterating)
    if rows_in_call is None or rows_in_call % batch or all(iterating):
        return None
    samples = [b for b, on in enumerate(iterating) if on]
    return torch.tensor([j * batch + b for j in range(rows_in_call // batch) for b in samples])


def _cut(value, rows: torch.Tensor, call_rows: int):
    """``value`` with every tensor of ``call_rows`` rows cut to ``rows`` (containers followed)."""
    if isinstance(value, torch.Tensor):
        cut = value.dim() > 0 and value.shape[0] == call_rows
        return value.index_select(0, rows.to(value.device)) if cut else value
    if isinstance(value, dict):
        return {k: _cut(v, rows, call_rows) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_cut(v, rows, call_rows) for v in value)
    return value


def _fill(previous, output, rows: torch.Tensor):
    """The previous output with ``rows`` replaced by the partial output (same structure)."""
    if isinstance(output, torch.Tensor):
        if output.dim() == 0 or output.shape[0] != len(rows):
            return output
        return previous.index_copy(0, rows.to(previous.device), output)
    if isinstance(output, dict):  # diffusers' output classes are dicts built from keywords
        return type(output)(**{k: _fill(previous[k], v, rows) for k, v in output.items()})
    if isinstance(output, (list, tuple)):
        return type(output)(_fill(p, v, rows) for p, v in zip(previous, output))
    return output
