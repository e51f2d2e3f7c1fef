"""Predict-and-Perturb in any stock diffusers flow-matching video pipeline, in two lines.

    from pnp_kernels import PnPConfig
    from pnp_kernels.diffusers import enable_pnp, disable_pnp

    enable_pnp(pipe, PnPConfig(plan="2-5:3,6-14:1", tau=0.25))
    out = pipe(prompt=..., generator=torch.Generator().manual_seed(0))   # the stock __call__
    pipe.pnp_stats                                                        # PnPStats of the last call
    disable_pnp(pipe)                                                     # the pipeline as it was

How (docs/DIFFUSERS.md): the scheduler is replaced by a stand-in that repeats each step's timestep
once per planned model call and steps the P&P engine; a hook on each transformer computes only the
samples still iterating, so an early exit saves its compute. The pipeline's loop, guidance and callbacks run unchanged.
"""
from __future__ import annotations

import functools

from ..config import PnPConfig
from .pipeline import PnPPipelineMethods
from .session import PnPSession, check_pnp_arguments
from .support import REFUSED, TESTED, refusal, stock_class, warn_if_untested

__all__ = ["REFUSED", "TESTED", "disable_pnp", "enable_pnp", "is_pnp_enabled"]

_PNP_CLASSES: dict[type, type] = {}  # pipeline class -> its subclass with the P&P __call__


def _pnp_class(cls: type) -> type:
    """``cls`` with a ``__call__`` that runs the stock one inside the P&P session (same name, same
    signature), plus ``PnPPipelineMethods``. ``disable_pnp`` puts ``cls`` back."""
    if cls not in _PNP_CLASSES:

        @functools.wraps(cls.__call__)
        def __call__(self, *args, **kwargs):
            with self._pnp_session.call(args, kwargs):
                return cls.__call__(self, *args, **kwargs)

        members = {"__call__": __call__, "stock_pipeline": cls, "__module__": cls.__module__, "__doc__": cls.__doc__}
        _PNP_CLASSES[cls] = type(cls.__name__, (PnPPipelineMethods, cls), members)
    return _PNP_CLASSES[cls]


def is_pnp_enabled(pipe) -> bool:
    return getattr(pipe, "_pnp_session", None) is not None


def enable_pnp(pipe, config: PnPConfig | None = None, *, seed: int | list[int] | None = None, group="auto"):
    """Run every later call of ``pipe`` with Predict-and-Perturb; returns ``pipe``.

    config: PnPConfig (None: ``PnPConfig()``, the published default plan). Plans by step index,
    sigma or fraction are resolved on each call's sigma grid; for two experts (Wan 2.2 A14B) the
    expert boundary is known to the plan.
    seed: philox seed (noise="philox" only); default: the call's generator's ``initial_seed()``.
    With noise="generator" the perturbation noise is drawn from the generator passed to the call.
    group: the torch.distributed ranks that sample each call together (context parallel), which agree
    on early exits; "auto": the default group when torch.distributed runs; None when every rank samples
    its own videos (data parallel). See docs/DISTRIBUTED.md.

    Raises ValueError naming why when the pipeline's loop cannot run P&P (see ``REFUSED`` and
    docs/DIFFUSERS.md).
    """
    from diffusers import DiffusionPipeline

    if not isinstance(pipe, DiffusionPipeline):
        raise TypeError(f"pipe must be a diffusers DiffusionPipeline, got {type(pipe).__name__}")
    config = check_pnp_arguments(config, seed, group, names=("config", "seed", "group"), default=PnPConfig())
    if is_pnp_enabled(pipe):
        raise ValueError("P&P is already enabled on this pipeline; call disable_pnp(pipe) first")
    if stock_class(pipe) is not type(pipe):
        raise ValueError(f"{type(pipe).__name__} runs P&P on every call (its pnp= argument); enable_pnp is for "
                         f"a stock {stock_class(pipe).__name__}")
    reason = refusal(pipe)
    if reason is not None:
        raise ValueError(f"P&P cannot run: {reason}")
    warn_if_untested(pipe)
    original_class = type(pipe)
    PnPSession(pipe, config, seed, group).attach()
    pipe.__class__ = _pnp_class(original_class)
    return pipe


def disable_pnp(pipe):
    """Undo ``enable_pnp``: the pipeline's class, scheduler and transformers as they were; returns ``pipe``."""
    session = getattr(pipe, "_pnp_session", None)
    if session is None or stock_class(pipe) not in _PNP_CLASSES:
        raise ValueError("P&P is not enabled on this pipeline")
    session.detach()
    pipe.__class__ = stock_class(pipe)
    for name in ("pnp_stats", "pnp_stats_copies"):
        pipe.__dict__.pop(name, None)
    return pipe
