"""Counts the forwards a transformer really runs (a hook on its first layer, below P&P's skip hook)."""
from __future__ import annotations

import torch


class ForwardCounter:
    """counter.calls: forwards of ``layer`` (the transformer's input projection) since creation."""

    def __init__(self, layer: torch.nn.Module):
        self.calls = 0
        self._handle = layer.register_forward_pre_hook(self._count)

    def _count(self, module, args):
        self.calls += 1

    def remove(self) -> None:
        self._handle.remove()
