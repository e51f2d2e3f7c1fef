"""pnp_kernels::pnp_update under torch.library checks and torch.compile(fullgraph=True)."""
from __future__ import annotations

import pytest
import torch

from pnp_kernels import PhiloxNoise, PnPUpdateOutput, pnp_update
from pnp_kernels.ops.custom_op import pnp_update_op

from .helpers import BACKEND_DEVICES

SHAPE = (2, 4, 3, 5, 7)
SIGMA, SIGMA_NEXT = 0.7, 0.55


def model(z: torch.Tensor) -> torch.Tensor:
    # Exactly rounded in eager and compiled code alike (powers of two, one subtraction): a
    # transcendental here could round differently once fused and flip a bfloat16 ulp.
    return (0.5 * z.roll(1, dims=-1) - 0.25 * z).bfloat16()


def refined_step(z: torch.Tensor, noise: torch.Tensor, backend: str = "torch"):
    """One refined outer step with K=2: explicit noise, then philox noise, then the last update."""
    first = pnp_update(z, model(z), SIGMA, SIGMA_NEXT, noise=noise, tau=0.3, backend=backend)
    second = pnp_update(
        first.z_perturbed, model(first.z_perturbed), SIGMA, SIGMA_NEXT,
        prev_x0=first.x0, prev_z_next=first.z_next, tau=0.3, backend=backend,
        noise=PhiloxNoise((11, 12), step=4, iteration=2),
    )
    last = pnp_update(
        second.z_perturbed, model(second.z_perturbed), SIGMA, SIGMA_NEXT,
        prev_x0=second.x0, prev_z_next=second.z_next, prev_certain=second.certain, tau=0.3,
        active=second.certain_fraction < 0.99, return_uncertainty=True, backend=backend,
    )
    return last.z_next, last.certain, last.certain_fraction, last.uncertainty


def assert_same(compiled, eager):
    for got, want in zip(compiled, eager):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_refined_step_compiles_fullgraph(backend):
    torch._dynamo.reset()
    z, noise = torch.randn(SHAPE), torch.randn(SHAPE)
    compiled = torch.compile(refined_step, fullgraph=True, backend=backend)
    assert_same(compiled(z, noise), refined_step(z, noise))
    z2, noise2 = torch.randn(SHAPE), torch.randn(SHAPE)  # fresh inputs through the same graph
    assert_same(compiled(z2, noise2), refined_step(z2, noise2))


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_refined_step_with_a_kernel_backend_compiles_fullgraph(backend, device):
    # Backend checks and the kernel import must not break the graph (they are traced as constants).
    torch._dynamo.reset()
    z, noise = torch.randn(SHAPE, device=device), torch.randn(SHAPE, device=device)
    compiled = torch.compile(refined_step, fullgraph=True, backend="aot_eager")
    assert_same(compiled(z, noise, backend), refined_step(z, noise, "torch"))


def test_writes_into_caller_buffers_under_compile():
    torch._dynamo.reset()

    def step_into(z, v, out_x0, out_z_next, out_certain):
        out = PnPUpdateOutput(out_x0, out_z_next, out_certain, None, None, None, None)
        return pnp_update(z, v, SIGMA, SIGMA_NEXT, out=out, backend="torch").certain_fraction

    z, v = torch.randn(SHAPE), torch.randn(SHAPE)
    buffers = [torch.full(SHAPE, float("nan")), torch.full(SHAPE, float("nan")),
               torch.ones(SHAPE[0], *SHAPE[2:], dtype=torch.bool)]
    fraction = torch.compile(step_into, fullgraph=True, backend="aot_eager")(z, v, *buffers)
    torch.testing.assert_close(buffers[0], z - SIGMA * v)
    torch.testing.assert_close(buffers[1], z + (SIGMA_NEXT - SIGMA) * v)
    assert not buffers[2].any() and torch.equal(fraction, torch.zeros(2))


def test_opcheck():
    z = torch.randn(SHAPE)
    mask = torch.rand(SHAPE[0], *SHAPE[2:]) < 0.3
    args = (
        z, torch.randn(SHAPE).bfloat16(), torch.randn(SHAPE).bfloat16(), torch.randn(SHAPE), torch.randn(SHAPE),
        mask, torch.tensor([True, False]), None, [5, 0, 6, 1], 3, 1,
        SIGMA, SIGMA_NEXT, 2.0, 0.25, 1, 1, None, "torch",
        torch.empty(SHAPE), torch.empty(SHAPE), torch.empty(mask.shape, dtype=torch.bool),
        torch.empty(SHAPE[0]), torch.empty(SHAPE[0], dtype=torch.int32), torch.empty(SHAPE), torch.empty(mask.shape),
    )
    torch.library.opcheck(pnp_update_op, args)
