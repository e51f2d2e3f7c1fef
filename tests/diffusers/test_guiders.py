"""diffusers guiders under P&P (tiny HunyuanVideo 1.5, which guides through pipe.guider): the guider sees outer
steps, its state advances once per step, and P&P's extra calls at a step see that step's state."""
import pytest
import torch
from diffusers.guiders import AdaptiveProjectedGuidance, ClassifierFreeGuidance, ClassifierFreeZeroStarGuidance

from pnp_kernels import PnPConfig
from pnp_kernels.diffusers import disable_pnp, enable_pnp
from tests.diffusers.test_hunyuan_video15 import STEPS, make, run

GUIDERS = {
    "cfg": lambda: ClassifierFreeGuidance(guidance_scale=3.0),
    "apg": lambda: AdaptiveProjectedGuidance(guidance_scale=3.0, adaptive_projected_guidance_momentum=-0.5),
    "cfg-zero-star": lambda: ClassifierFreeZeroStarGuidance(guidance_scale=3.0, zero_init_steps=1),
}


def with_guider(name):
    pipe = make(3.0)
    pipe.guider = GUIDERS[name]()
    return pipe


def spy(guider):
    """Records, per guider call, its step, its step count and its momentum before the call."""
    seen, forward = [], guider.forward

    def recording(*args, **kwargs):
        buffer = getattr(guider, "momentum_buffer", None)
        momentum = None if buffer is None else torch.as_tensor(buffer.running_average).clone()
        seen.append((guider._step, guider._num_inference_steps, momentum))
        return forward(*args, **kwargs)

    guider.forward = recording
    return seen


@pytest.mark.parametrize("name", sorted(GUIDERS))
def test_empty_plan_equals_stock(name):
    pipe = with_guider(name)
    stock = run(pipe, seed=3)
    enable_pnp(pipe, PnPConfig(plan="none"))
    assert torch.equal(run(pipe, seed=3), stock)
    disable_pnp(pipe)
    assert isinstance(pipe.guider, type(GUIDERS[name]())) and torch.equal(run(pipe, seed=3), stock)


@pytest.mark.parametrize("name", sorted(GUIDERS))
def test_guider_sees_outer_steps(name):
    stock_pipe = with_guider(name)
    stock_seen = spy(stock_pipe.guider)
    run(stock_pipe, seed=4)
    pipe = enable_pnp(with_guider(name), PnPConfig(plan="0-1:2", tau=0.0))
    seen = spy(pipe.guider.guider)
    run(pipe, seed=4)
    assert [(step, count) for step, count, _ in seen] == [(0, STEPS)] * 3 + [(1, STEPS)] * 3 + [(2, STEPS)]
    assert [(step, count) for step, count, _ in stock_seen] == [(s, STEPS) for s in range(STEPS)]
    for first, extra in [(0, 1), (0, 2), (3, 4), (3, 5)]:  # every call of a step sees the step's state
        assert (seen[first][2] is None) == (seen[extra][2] is None)
        assert seen[first][2] is None or torch.equal(seen[first][2], seen[extra][2])
    guider, stock = pipe.guider.guider, stock_pipe.guider
    assert (guider._step, guider._num_inference_steps) == (stock._step, stock._num_inference_steps) == (STEPS - 1, STEPS)
    if name == "apg":  # the momentum advanced once per step: from step 1 on it is not the fresh buffer
        assert seen[3][2].abs().max() > 0 and not torch.equal(seen[3][2], seen[6][2])
