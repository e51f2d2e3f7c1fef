"""diffusers' caches under P&P (tiny Wan T2V, two blocks, CFG as a cond and an uncond call per loop entry): a
cache serves the plain calls as without P&P, every refined call runs the whole model, and the cache's
step-indexed state advances by outer steps."""
import pytest
import torch
from diffusers.hooks import FirstBlockCacheConfig, MagCacheConfig, PyramidAttentionBroadcastConfig, TaylorSeerCacheConfig

from pnp_kernels import PnPConfig
from pnp_kernels.diffusers import enable_pnp
from tests.diffusers.test_wan import PLAN, STEPS, make, run

CACHES = {  # each set to reuse whenever it may; TaylorSeer on the self-attention of each block
    "first-block": lambda: FirstBlockCacheConfig(threshold=10.0),
    "mag": lambda: MagCacheConfig(mag_ratios=[1.0] * STEPS, num_inference_steps=STEPS, retention_ratio=0.0,
                                  threshold=1.0, max_skip_steps=1),
    "taylorseer": lambda: TaylorSeerCacheConfig(cache_interval=2, disable_cache_before_step=1,
                                                cache_identifiers=[r"blocks\.\d+\.attn1"]),
}


def last_layer(transformer, name):
    """A layer that runs only when the cache computes: inside the last block (inside its cached attention)."""
    block = transformer.blocks[-1]
    return block.attn1.to_out[0] if name == "taylorseer" else block.ffn.net[-1]


def cached(name):
    """A tiny pipeline with the cache on, and the list that records, per transformer call, whether its last
    block computed (a cached call reuses instead)."""
    pipe = make()
    pipe.transformer.enable_cache(CACHES[name]())
    computed = []
    pipe.transformer.register_forward_pre_hook(lambda module, args: computed.append(False))
    layer = last_layer(pipe.transformer, name)
    layer.register_forward_hook(lambda module, args, output: computed.__setitem__(-1, True))
    return pipe, computed


@pytest.mark.parametrize("name", sorted(CACHES))
def test_empty_plan_equals_stock_with_the_cache(name):
    stock_pipe, stock_computed = cached(name)
    stock = run(stock_pipe, seed=2)
    pipe, computed = cached(name)
    enable_pnp(pipe, PnPConfig(plan="none"))
    assert torch.equal(run(pipe, seed=2), stock)
    assert computed == stock_computed and not all(computed)  # the cache reused some calls


@pytest.mark.parametrize("name", sorted(CACHES))
def test_refined_calls_run_the_model_and_the_cache_counts_outer_steps(name):
    stock_pipe, stock_computed = cached(name)
    run(stock_pipe, seed=2)
    pipe, computed = cached(name)
    enable_pnp(pipe, PnPConfig(plan=PLAN, tau=0.0))  # tau 0: no early exit, every entry calls the model
    run(pipe, seed=2)
    schedule = pipe.scheduler.schedule  # per loop entry: (step, iteration, last of step)
    assert len(computed) == 2 * len(schedule) and len(stock_computed) == 2 * STEPS
    for entry, (step, iteration, _) in enumerate(schedule):
        calls = computed[2 * entry : 2 * entry + 2]  # cond, uncond
        if iteration > 0:
            assert calls == [True, True], (entry, step, iteration)
        elif name != "first-block":  # MagCache and TaylorSeer decide by the step index alone
            assert calls == stock_computed[2 * step : 2 * step + 2], (entry, step)
    plain = [c for e, (_, k, _) in enumerate(schedule) if k == 0 for c in computed[2 * e : 2 * e + 2]]
    assert not all(plain)  # the cache still served plain calls


def test_other_caches_are_refused(monkeypatch):
    pipe = make()
    config = PyramidAttentionBroadcastConfig(spatial_attention_block_skip_range=2,
                                             current_timestep_callback=lambda: pipe.current_timestep)
    pipe.transformer.enable_cache(config)
    with pytest.raises(ValueError, match=r"PyramidAttentionBroadcastConfig is not one of .*disable_cache\(\)"):
        enable_pnp(pipe, PnPConfig())
    pipe.transformer.disable_cache()
    pipe.transformer.enable_cache(TaylorSeerCacheConfig(disable_cache_before_step=0))
    with pytest.raises(ValueError, match="disable_cache_before_step=0"):
        enable_pnp(pipe, PnPConfig())
    pipe.transformer.disable_cache()
    enable_pnp(pipe, PnPConfig())
    pipe.transformer.enable_cache(config)  # enabled after enable_pnp: refused at the call
    with pytest.raises(ValueError, match="PyramidAttentionBroadcastConfig"):
        run(pipe)
