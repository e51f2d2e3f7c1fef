"""Every private piece of diffusers that pnp_kernels relies on, in one place.

diffusers does not promise these names across releases. Keeping them here (and nowhere else)
means an upgrade that moves one breaks one clear test in ``tests/diffusers/test_compat.py``
instead of silently changing what the library does. Each function says what it assumes.
"""
from __future__ import annotations

import contextlib

import torch

# Version floors that diffusers' attention dispatcher requires before it uses a kernel
# (``_REQUIRED_*_VERSION`` in ``diffusers.models.attention_dispatch``); our "auto" choice must not pick
# a kernel that diffusers would then refuse.
ATTENTION_VERSION_FLOORS = {"flash": "2.6.3", "xformers": "0.0.29", "sage": "2.1.1"}


# ---- attention processors -------------------------------------------------------------------------

def context_parallel_backends() -> set[str]:
    """Attention backends that can run under context parallelism: diffusers registers them in the
    private ``_AttentionBackendRegistry._supports_context_parallel`` set."""
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    return set(_AttentionBackendRegistry._supports_context_parallel)


def is_context_parallel(model) -> bool:
    """Whether the model runs context-parallel: ``enable_parallelism`` records a ``ParallelConfig`` in
    the private ``_parallel_config`` attribute, whose ``context_parallel_config`` is then set."""
    config = getattr(model, "_parallel_config", None)
    return getattr(config, "context_parallel_config", None) is not None


def processors_with_backend(models) -> list:
    """Attention processors that carry a per-model backend: ``ModelMixin.set_attention_backend`` stores
    it in the processor's private ``_attention_backend`` attribute."""
    return [
        module.processor
        for model in models
        for module in model.modules()
        if hasattr(getattr(module, "processor", None), "_attention_backend")
    ]


def processor_backend(processor):
    """The backend a processor was set to (an ``AttentionBackendName`` or None)."""
    return processor._attention_backend


def set_processor_backend(processor, backend) -> None:
    processor._attention_backend = backend


# ---- compilation ----------------------------------------------------------------------------------

def is_compiled(module: torch.nn.Module) -> bool:
    """Whether ``module.compile()`` (which ``compile_repeated_blocks`` calls per block) has run: torch
    keeps the compiled callable in the private ``_compiled_call_impl``."""
    return module._compiled_call_impl is not None


# ---- pipelines ------------------------------------------------------------------------------------

def is_from_pipe_dtype_cast(args: tuple, kwargs: dict) -> bool:
    """Whether a ``DiffusionPipeline.to`` call is the one ``from_pipe`` ends with: ``to(dtype=...)``,
    dtype only (it casts every shared module, the source pipeline's included)."""
    return not args and set(kwargs) == {"dtype"}


def set_call_state(pipe, **values) -> None:
    """Set what a diffusers pipeline's properties report during a call (``guidance_scale``,
    ``do_classifier_free_guidance``, ``num_timesteps``, ``current_timestep``, ``interrupt``,
    ``attention_kwargs``, ...): each property returns the private attribute ``_<name>``."""
    for name, value in values.items():
        setattr(pipe, f"_{name}", value)


def set_component_keeping_config(pipe, name: str, value) -> None:
    """Replace a pipeline component without touching the pipeline's config.

    ``DiffusionPipeline.__setattr__`` rewrites ``config[name]`` to the new object's (library, class);
    a P&P stand-in must not leak into ``save_pretrained`` or ``from_pipe``, so the attribute is set
    directly."""
    object.__setattr__(pipe, name, value)


# ---- hooks and caches -----------------------------------------------------------------------------

def hook_registry(module: torch.nn.Module):
    """diffusers' hook registry of a module (created on first use), as the caching methods use it."""
    from diffusers.hooks import HookRegistry

    return HookRegistry.check_if_exists_or_initialize(module)


def call_original_forward(hook, *args, **kwargs):
    """From a ``ModelHook.new_forward``: run the module's forward as it was below this hook
    (``fn_ref.original_forward``, as diffusers' own cache hooks do)."""
    return hook.fn_ref.original_forward(*args, **kwargs)


def cache_states(model) -> list:
    """The state managers of the stateful hooks on ``model`` and its submodules: the caches' state, kept per
    cache context (the loop's "cond", "uncond", ...), as ``cache_context`` reaches them."""
    from diffusers.hooks.hooks import StateManager

    registry = hook_registry(model)
    managers = []
    for child in (registry, *registry._get_child_registries()):
        for name in child._hook_order:
            hook = child.hooks[name]
            if hook._is_stateful:
                managers += [v for v in vars(hook).values() if isinstance(v, StateManager) and v not in managers]
    return managers


@contextlib.contextmanager
def fresh_cache_context(managers: list, name: str):
    """For the block, every state manager uses a fresh state under the cache context ``name``, dropped after;
    their previous context and the states of all other contexts stay as they were."""
    from diffusers.hooks.hooks import CacheContext

    previous = [manager._context for manager in managers]
    for manager in managers:
        manager._state_cache.pop(name, None)
        manager.set_context(CacheContext(name))
    try:
        yield
    finally:
        for manager, context in zip(managers, previous):
            manager._state_cache.pop(name, None)
            manager.set_context(context)


def cache_config(model):
    """The config passed to ``model.enable_cache`` (First Block Cache, MagCache, TaylorSeer, ...), or None.
    Models without diffusers' CacheMixin have none."""
    return getattr(model, "_cache_config", None)
