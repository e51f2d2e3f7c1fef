"""Predict-and-Perturb in any stock diffusers flow-matching video pipeline, in two lines.

    from pnp_kernels import PnPConfig
    from pnp_kernels.diffusers import enable_pnp, disable_pnp

    enable_pnp(pipe, PnPConfig(plan="2-5:3,6-14:1", tau=0.25))
    out = pipe(prompt=..., generator=torch.Generator().manual_seed(0))   # the stock __call__
    pipe.pnp_stats                                                        # PnPStats of the last call
    disable_pnp(pipe)                                                     # the pipeline as it was

How (docs/DIFFUSERS.md): the scheduler is replaced by a stand-in that repeats each step's timestep
once per planned model call and steps the P&P engine; a hook on each transformer skips the calls an
early exit makes unnecessary. The pipeline's loop, guidance and callbacks run unchanged.
"""
from __future__ import annotations

import functools

from ..compat import hook_registry, set_component_keeping_config
from ..config import PnPConfig
from ..engine import check_process_group
from ..validators import check_int
from .hooks import HOOK_NAME, SkipIdleCallsHook
from .session import PnPSession, check_seed_noise
from .support import REFUSED, TESTED, denoisers, refusal, warn_if_untested

__all__ = ["REFUSED", "TESTED", "disable_pnp", "enable_pnp", "is_pnp_enabled"]

_PNP_CLASSES: dict[type, type] = {}  # pipeline class -> its subclass with the P&P __call__


def _pnp_class(cls: type) -> type:
    """``cls`` with a ``__call__`` that runs the stock one inside the P&P session (same name, same
    signature), and with the real scheduler in ``components`` and ``save_pretrained`` (so ``from_pipe``
    and saving see the pipeline without P&P). ``disable_pnp`` puts ``cls`` back."""
    if cls not in _PNP_CLASSES:

        @functools.wraps(cls.__call__)
        def __call__(self, *args, **kwargs):
            with self._pnp_session.call(args, kwargs):
                return cls.__call__(self, *args, **kwargs)

        @functools.wraps(cls.save_pretrained)
        def save_pretrained(self, *args, **kwargs):
            with self._pnp_session.stock_scheduler():
                return cls.save_pretrained(self, *args, **kwargs)

        def components(self):
            with self._pnp_session.stock_scheduler():
                return cls.components.fget(self)

        members = {"__call__": __call__, "save_pretrained": save_pretrained, "components": property(components),
                   "__module__": cls.__module__, "__doc__": cls.__doc__}
        _PNP_CLASSES[cls] = type(cls.__name__, (cls,), members)
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
    config = PnPConfig() if config is None else config
    if not isinstance(config, PnPConfig):
        raise TypeError(f"config must be a PnPConfig or None, got {type(config).__name__}")
    check_seed_noise("seed", seed, config)
    check_process_group("group", group)
    if seed is not None:
        for s in seed if isinstance(seed, (list, tuple)) else [seed]:
            check_int("seed", s, 0)
    if is_pnp_enabled(pipe):
        raise ValueError("P&P is already enabled on this pipeline; call disable_pnp(pipe) first")
    reason = refusal(pipe)
    if reason is not None:
        raise ValueError(f"P&P cannot run: {reason}")
    warn_if_untested(pipe)

    session = PnPSession(pipe, config, seed, group)
    for _, model in denoisers(pipe):
        hook = SkipIdleCallsHook(session)
        hook_registry(model).register_hook(hook, HOOK_NAME)
        session.hooks.append((model, hook))
    set_component_keeping_config(pipe, "scheduler", session.scheduler)
    pipe._pnp_session = session
    pipe.__class__ = _pnp_class(session.original_class)
    return pipe


def disable_pnp(pipe):
    """Undo ``enable_pnp``: the pipeline's class, scheduler and transformers as they were; returns ``pipe``."""
    session = getattr(pipe, "_pnp_session", None)
    if session is None:
        raise ValueError("P&P is not enabled on this pipeline")
    for model, _ in session.hooks:
        hook_registry(model).remove_hook(HOOK_NAME, recurse=False)
    if pipe.scheduler is session.scheduler:
        set_component_keeping_config(pipe, "scheduler", session.original_scheduler)
    pipe.__class__ = session.original_class
    for name in ("_pnp_session", "pnp_stats", "pnp_stats_copies"):
        pipe.__dict__.pop(name, None)
    return pipe
