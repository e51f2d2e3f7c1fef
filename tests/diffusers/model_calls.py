"""Watching a transformer's calls: how many forwards really ran, and the arguments of each call."""
from __future__ import annotations

import torch


class ForwardCounter:
    """counter.calls: forwards of ``layer`` (the transformer's input projection) since creation. A hook on a
    layer inside the transformer sees only the forwards that ran (P&P's skip hook sits above it)."""

    def __init__(self, layer: torch.nn.Module):
        self.calls = 0
        self._handle = layer.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.calls += 1

    def remove(self) -> None:
        self._handle.remove()


class CallRecorder:
    """recorder.kwargs: the keyword arguments of the transformer's first ``limit`` calls (the pipeline's
    first loop entry), to call it the same way from a naive loop."""

    def __init__(self, model: torch.nn.Module, limit: int = 1):
        self.kwargs: list[dict] = []
        self.limit = limit
        self._handle = model.register_forward_pre_hook(self._keep, with_kwargs=True)

    def _keep(self, module, args, kwargs):
        if len(self.kwargs) < self.limit:
            self.kwargs.append(dict(kwargs))

    def remove(self) -> None:
        self._handle.remove()
