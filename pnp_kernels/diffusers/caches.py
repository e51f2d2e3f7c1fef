"""diffusers' caches under P&P (docs/DIFFUSERS.md, "Caches").

First Block Cache, MagCache and TaylorSeer (``transformer.enable_cache``) keep their state per cache
context (the loop's "cond", "uncond", ...) and take each call in a context for the next step: MagCache
indexes its magnitude ratios by that count, TaylorSeer its compute interval, First Block Cache compares
the first block's residual with the previous call's. Under P&P the loop makes one call per P&P
iteration (scheduler.py), so:

- a step's first call (the plain Euler prediction) runs under the loop's context: the cache serves it
  as it would without P&P, and its state advances by one step per outer step;
- a refined call (P&P iteration >= 1) runs under a context of its own with a fresh state, dropped after
  the call: a fresh cache has nothing to reuse, so every block is computed, and the loop's contexts
  never see the call.

Other caches (FasterCache, Pyramid Attention Broadcast, ...) key their decisions on timesteps or
attention outputs in ways this does not cover; they are refused.
"""
from __future__ import annotations

from ..compat import cache_states, fresh_cache_context

# The configs of the caches handled here, by class name (diffusers imports them lazily).
SUPPORTED_CACHES = ("FirstBlockCacheConfig", "MagCacheConfig", "TaylorSeerCacheConfig")
REFINED_CONTEXT = "pnp_kernels_refined"


def cache_problem(config) -> str | None:
    """Why P&P cannot run with this cache config (None when it can)."""
    name = type(config).__name__
    if name not in SUPPORTED_CACHES:
        return (f"{name} is not one of the caches P&P keeps working ({', '.join(SUPPORTED_CACHES)}): it would "
                "take P&P's repeated calls at one timestep for new steps")
    if name == "TaylorSeerCacheConfig" and config.disable_cache_before_step < 1:
        return ("TaylorSeerCacheConfig(disable_cache_before_step=0) computes no first step, but every refined "
                "P&P call starts a fresh TaylorSeer state that must compute")
    return None


def full_model_call(model):
    """The context for one refined call of ``model``: its caches see a fresh state of their own (see the
    module docstring)."""
    return fresh_cache_context(cache_states(model), REFINED_CONTEXT)
