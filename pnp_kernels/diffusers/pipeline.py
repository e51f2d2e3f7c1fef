"""What a pipeline running P&P changes besides its call, shared by the class ``enable_pnp`` swaps in
and the Wan P&P pipelines."""
from __future__ import annotations

import contextlib


class PnPPipelineMethods:
    """Put before the diffusers pipeline class: while P&P is attached (``pipe._pnp_session``), the
    progress bar counts model calls, and ``components`` and ``save_pretrained`` see the real scheduler,
    so ``from_pipe`` and saving see the pipeline without P&P."""

    def progress_bar(self, iterable=None, total=None):
        bar = super().progress_bar(iterable=iterable, total=total)
        session = self.__dict__.get("_pnp_session")
        return bar if session is None or iterable is not None else session.progress_bar(bar)

    def save_pretrained(self, *args, **kwargs):
        with _stock_scheduler(self):
            return super().save_pretrained(*args, **kwargs)

    @property
    def components(self):
        with _stock_scheduler(self):
            return super().components


def _stock_scheduler(pipe):
    session = pipe.__dict__.get("_pnp_session")
    return contextlib.nullcontext() if session is None else session.stock_scheduler()
