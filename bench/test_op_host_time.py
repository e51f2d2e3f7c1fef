"""Host time of one pnp_update call with the Triton kernel launch stubbed out: the Python work around
the kernel (checks, backend choice, the custom op, buffer handling) that every iteration pays on a GPU.

CPU tensors, the launch replaced by a no-op, so the figure is the dispatcher's cost alone (target:
under 60 us per call; see docs/PERFORMANCE.md). With --benchmark-disable each case runs once, as a test.
What keeps it low: eager calls run the backend directly (the custom-op dispatcher costs several times
the rest, see the second case), the checks take the common case first (exact float/int types,
torch.Size comparisons, a slotted inputs bundle, one pass for the buffers), and the engine's updates
skip the checks of values it checked once per run (the third case).
"""
from __future__ import annotations

import pytest
import torch

from pnp_kernels import Guided, PhiloxNoise, PnPConfig, PnPUpdateOutput, pnp_sample, pnp_update
from pnp_kernels.ops import PnPUpdateInputs, backends, triton_launch
from pnp_kernels.ops.custom_op import call_op
from pnp_kernels.ops.outputs import output_buffers

SHAPE = (1, 16, 3, 6, 10)


class _NoLaunch:
    """Stands in for ``_pnp_update_kernel``: ``kernel[grid](...)`` does nothing."""

    calls = 0

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            _NoLaunch.calls += 1

        return launch


@pytest.fixture
def stubbed_triton(monkeypatch):
    monkeypatch.setattr(triton_launch, "_pnp_update_kernel", _NoLaunch())
    monkeypatch.setattr(backends, "_triton_interpreter_on", lambda: True)  # CPU tensors are accepted


def _refined_iteration_args() -> dict:
    """A refined iteration as the sampler issues it: guidance, previous state, philox noise, caller buffers."""
    z = torch.randn(SHAPE)
    mask_shape = (SHAPE[0], *SHAPE[2:])
    out = PnPUpdateOutput(
        x0=torch.empty(SHAPE), z_next=torch.empty(SHAPE), certain=torch.empty(mask_shape, dtype=torch.bool),
        certain_fraction=None, nonfinite=None, z_perturbed=torch.empty(SHAPE), uncertainty=None,
    )
    return dict(
        z=z, v=torch.randn(SHAPE).bfloat16(), sigma=0.8, sigma_next=0.75,
        v_uncond=torch.randn(SHAPE).bfloat16(), guidance_scale=5.0,
        prev_x0=torch.randn(SHAPE), prev_z_next=torch.randn(SHAPE),
        prev_certain=torch.zeros(mask_shape, dtype=torch.bool), active=torch.ones(SHAPE[0], dtype=torch.bool),
        noise=PhiloxNoise((3,), step=4, iteration=2), out=out, backend="triton",
    )


def test_pnp_update_host_time(benchmark, stubbed_triton):
    args = _refined_iteration_args()
    before = _NoLaunch.calls
    result = benchmark(lambda: pnp_update(**args))
    assert _NoLaunch.calls > before  # the stub, not a kernel, ran
    assert result.x0 is args["out"].x0
    benchmark.extra_info.update(op="pnp_update host", provider="triton (launch stubbed)", shape=list(SHAPE),
                                timing="host (CPU-only)")


def test_custom_op_dispatch_host_time(benchmark, stubbed_triton):
    """The same work through the registered custom op, as under torch.compile: what eager calls skip."""
    args = _refined_iteration_args()
    out, backend = args.pop("out"), args.pop("backend")
    inputs = PnPUpdateInputs(**args)
    outputs = output_buffers(inputs, out)
    before = _NoLaunch.calls
    benchmark(lambda: call_op(inputs, outputs, backend))
    assert _NoLaunch.calls > before
    benchmark.extra_info.update(op="pnp_update host", provider="custom op dispatch (launch stubbed)",
                                shape=list(SHAPE), timing="host (CPU-only)")


class _FixedVelocities:
    """A denoiser of no cost: the same bf16 guided velocities at every call."""

    def __init__(self):
        g = torch.Generator().manual_seed(5)
        self.cond, self.uncond = (torch.randn(SHAPE, generator=g).bfloat16() for _ in range(2))

    def __call__(self, z, step, sigma):
        return Guided(self.cond, self.uncond, 5.0)


def test_engine_update_host_time(benchmark, stubbed_triton):
    """Host time per model call of a whole refined pnp_sample run on the stubbed kernel: the engine's
    own work (state, noise, host reads, statistics) on top of one update's checks and dispatch."""
    config = PnPConfig(plan="all:2", noise="philox", backend="triton", certain_stop=1.0)
    latents, sigmas = torch.randn(SHAPE), [1.0 - i / 8 for i in range(9)]
    denoise = _FixedVelocities()
    result = benchmark(lambda: pnp_sample(denoise, latents, sigmas, config, seed=3))
    per_update_us = benchmark.stats.stats.median / result.stats.nfe * 1e6 if benchmark.stats else None
    benchmark.extra_info.update(op="engine update host", provider="triton (launch stubbed)", shape=list(SHAPE),
                                timing="host (CPU-only)", nfe=result.stats.nfe, per_update_us=per_update_us)
