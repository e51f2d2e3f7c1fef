"""The result names its backend; store_state=False skips the state; round_products_to rounds like diffusers."""
from __future__ import annotations

import pytest
import torch

from pnp_kernels.ops import PnPUpdateOutput, pnp_update, pnp_update_reference

SHAPE = (2, 5, 3, 4, 7)
BACKENDS = ["torch", pytest.param("triton", marks=pytest.mark.filterwarnings("ignore::RuntimeWarning"))]


def _interpreter_on() -> bool:
    import triton

    return bool(triton.knobs.runtime.interpret)


def _args():
    z = torch.randn(SHAPE)
    return dict(z=z, v=torch.randn(SHAPE).bfloat16(), sigma=0.8, sigma_next=0.7, prev_x0=torch.randn(SHAPE),
                prev_z_next=torch.randn(SHAPE), noise=torch.randn(SHAPE), tau=0.9)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_result_names_the_backend_that_ran(backend):
    if backend == "triton" and not _interpreter_on():
        pytest.skip("needs TRITON_INTERPRET=1 on CPU")
    assert pnp_update(**_args(), backend=backend).backend == backend


def test_auto_names_the_backend_it_chose():
    assert pnp_update(**_args(), backend="auto").backend == "torch"  # CPU tensors: the reference


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_store_state_false_skips_x0_and_certain_only(backend):
    if backend == "triton" and not _interpreter_on():
        pytest.skip("needs TRITON_INTERPRET=1 on CPU")
    args = _args()
    full = pnp_update_reference(**args)
    out = PnPUpdateOutput(x0=torch.full(SHAPE, 7.0), z_next=None, certain=torch.zeros(2, 3, 4, 7, dtype=torch.bool),
                          certain_fraction=None, nonfinite=None, z_perturbed=None, uncertainty=None)
    lean = pnp_update(**args, store_state=False, out=out, backend=backend)
    assert lean.x0 is None and lean.certain is None
    assert (out.x0 == 7.0).all() and not out.certain.any()  # not written
    for name in ("z_next", "certain_fraction", "nonfinite", "z_perturbed"):
        torch.testing.assert_close(getattr(lean, name), getattr(full, name), atol=1e-6, rtol=1e-6)
    assert 0 < full.certain_fraction.mean() < 1  # the merge did something


def test_round_products_to_rounds_each_product_like_the_euler_step():
    args = _args()
    rounded = pnp_update(**args, round_products_to=torch.bfloat16)
    assert rounded.backend == "torch"
    sigma = torch.tensor(args["sigma"], dtype=torch.float32)
    v = args["v"]
    # diffusers' Euler step: a 0-dim float32 sigma times a bf16 velocity gives a bf16 product.
    expected_x0_unmerged = args["z"] - sigma * v
    expected_z_next_unmerged = args["z"] + torch.tensor(args["sigma_next"] - args["sigma"]) * v
    assert (sigma * v).dtype == torch.bfloat16
    exact = pnp_update_reference(**{k: a for k, a in args.items() if not k.startswith("prev")})
    plain = pnp_update_reference(**{k: a for k, a in args.items() if not k.startswith("prev")},
                                 round_products_to=torch.bfloat16)
    torch.testing.assert_close(plain.x0, expected_x0_unmerged, atol=0, rtol=0)
    torch.testing.assert_close(plain.z_next, expected_z_next_unmerged, atol=0, rtol=0)
    assert not torch.equal(plain.x0, exact.x0)  # it does round
    assert rounded.x0.shape == SHAPE


@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_round_products_to_is_refused_by_the_kernels(backend):
    with pytest.raises(RuntimeError, match="round_products_to"):
        pnp_update(**_args(), round_products_to=torch.bfloat16, backend=backend)
