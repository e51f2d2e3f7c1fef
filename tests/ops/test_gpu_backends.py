"""The kernel backends (Triton, CUDA) against the fp32 reference: one parity suite for both.

Triton runs in its interpreter on CPU (TRITON_INTERPRET=1); both run on the device under @gpu.
Every case uses fresh random inputs, odd spatial shapes and NaN-poisoned output buffers, so an
element a kernel forgets to write fails the comparison. Inputs never put U within rounding of tau
(``helpers.make_inputs``), so every decision must equal the reference's.
"""
from __future__ import annotations

import pytest
import torch

from pnp_kernels import Guided, PnPConfig, pnp_sample
from pnp_kernels.ops import PhiloxNoise, PnPUpdateOutput, philox_normal, pnp_update
from pnp_kernels.ops.outputs import TENSOR_FIELDS

from .helpers import BACKEND_DEVICES, assert_matches, make_inputs, poisoned_outputs, reference_on_cpu

# The interpreter evaluates inf - inf with numpy, which warns; the NaN it makes is the point.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

# Not a cartesian product: every listed value of every parameter appears at least once.
# batch, channels, (F, H, W), velocity dtype, p_norm, tau, previous state, guidance, noise, pinned frames, NaN
CASES = [
    (1, 4, (3, 7, 5), "fp32", 1, 0.25, "none", False, "tensor", 0, False),
    (3, 16, (3, 7, 5), "bf16", 2, 0.25, "prev", True, "philox", 0, False),
    (3, 48, (3, 7, 5), "fp16", 1, 0.0, "prev_certain", True, "tensor", 1, True),
    (1, 4, (5, 30, 52), "fp32", 2, 0.25, "prev_certain", False, "none", 2, False),
    (3, 16, (5, 30, 52), "fp32", 1, 0.25, "active", True, "philox", 1, True),
    (1, 48, (5, 30, 52), "bf16", 2, 0.0, "none", True, "philox", 0, False),
    (3, 4, (3, 7, 5), "fp16", 2, 0.25, "active_no_certain", False, "none", 0, True),
    (1, 16, (3, 7, 5), "fp32", 1, 0.25, "prev", False, "tensor", 2, False),
    (3, 48, (3, 7, 5), "fp32", 2, 0.25, "active", True, "tensor", 0, False),
    (1, 16, (5, 30, 52), "fp16", 1, 0.25, "prev_certain", True, "none", 0, True),
    (2, 5, (2, 3, 2), "bf16", 1, 0.25, "active", False, "philox", 1, False),  # S = 12: one Philox call per 4 positions
]


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(x) for x in c).replace(" ", ""))
def test_matches_reference(case, backend, device):
    z, v, sigma, sigma_next, kwargs = make_inputs(*case, device=device)
    expected = reference_on_cpu(z, v, sigma, sigma_next, kwargs)
    out = poisoned_outputs(z, kwargs.get("noise") is not None, kwargs["return_uncertainty"])
    actual = pnp_update(z, v, sigma, sigma_next, backend=backend, out=out, **kwargs)
    assert actual.backend == backend
    assert_matches(actual, expected, case)
    for name in TENSOR_FIELDS:  # written in place, not into new tensors
        if getattr(out, name) is not None:
            assert getattr(actual, name) is getattr(out, name), name
    with_nan, prev, tau = case[-1], case[6], case[5]
    assert bool(expected.nonfinite.any()) == with_nan  # the NaN cases do count something
    if prev != "none" and tau > 0:  # both branches of the merge are exercised
        assert 0.05 < expected.certain.float().mean() < 0.95


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
@pytest.mark.parametrize("noise", ["philox", "tensor", "none"])
def test_store_state_false_writes_neither_x0_nor_certain(noise, backend, device):
    z, v, sigma, sigma_next, kwargs = make_inputs(3, 16, (3, 5, 8), "bf16", 1, 0.25, "active", True, noise, 1, False, device)
    expected = reference_on_cpu(z, v, sigma, sigma_next, kwargs)
    out = poisoned_outputs(z, noise != "none", True)
    inputs_before = [t.clone() for t in (z, v, *kwargs.values()) if isinstance(t, torch.Tensor)]
    actual = pnp_update(z, v, sigma, sigma_next, backend=backend, out=out, store_state=False, **kwargs)
    assert actual.x0 is None and actual.certain is None
    assert out.x0.isnan().all() and out.certain.all()  # the poison is still there: nothing was written
    inputs_after = [t for t in (z, v, *kwargs.values()) if isinstance(t, torch.Tensor)]
    assert all(torch.equal(a, b) for a, b in zip(inputs_before, inputs_after)), "an input was written"
    assert_matches(actual, expected._replace(x0=None, certain=None), "store_state=False")


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_non_contiguous_inputs_and_outputs(backend, device):
    z, v, sigma, sigma_next, kwargs = make_inputs(3, 16, (3, 5, 7), "bf16", 1, 0.25, "active", True, "philox", 1, False, device)

    def strided(t):  # same values, H and W swapped in memory
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)

    expected = reference_on_cpu(z, v, sigma, sigma_next, kwargs)
    kwargs = {k: (strided(t) if isinstance(t, torch.Tensor) and t.dim() >= 4 else t) for k, t in kwargs.items()}
    z, v = strided(z), strided(v)
    assert not z.is_contiguous() and not kwargs["prev_certain"].is_contiguous()
    poisoned = poisoned_outputs(z, True, True)
    out = poisoned._replace(**{n: strided(t) for n, t in zip(TENSOR_FIELDS, poisoned) if t is not None and t.dim() >= 4})
    actual = pnp_update(z, v, sigma, sigma_next, backend=backend, out=out, **kwargs)
    assert_matches(actual, expected, "non-contiguous")
    assert actual.x0 is out.x0 and not actual.x0.is_contiguous()


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_strided_active_mask(backend, device):
    # A (B,) view with stride 2: the kernel indexes active by sample, so it must get a contiguous copy.
    z, v, sigma, sigma_next, kwargs = make_inputs(3, 4, (2, 3, 5), "fp32", 1, 0.25, "active", False, "none", 0, False, device)
    kwargs["active"] = torch.stack([kwargs["active"], ~kwargs["active"]], dim=1)[:, 0]
    assert not kwargs["active"].is_contiguous()
    expected = reference_on_cpu(z, v, sigma, sigma_next, kwargs)
    actual = pnp_update(z, v, sigma, sigma_next, backend=backend, out=poisoned_outputs(z, False, True), **kwargs)
    assert_matches(actual, expected, "strided active")


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
# S = 105 is odd: one Philox call per element; S = 12: one call per four positions of a channel.
@pytest.mark.parametrize("shape", [(2, 16, 3, 7, 5), (2, 5, 2, 3, 2)], ids=["element-wise", "grouped"])
def test_philox_noise_in_kernel_equals_reference_normals(shape, backend, device):
    # At sigma = 1 the perturbed input is exactly the noise: (1 - 1) * x0 + 1 * noise. A wrong word
    # moves a normal by O(1); float32 log/sqrt/cos/sin may differ by a few ulps between backends.
    z = torch.randn(shape, device=device)
    seed = int(torch.randint(0, 2**62, ()))
    noise = PhiloxNoise((seed, 2**64 - 1 - seed), step=int(torch.randint(0, 2**32, ())), iteration=3)
    result = pnp_update(z, torch.randn_like(z), 1.0, 0.9, noise=noise, backend=backend)
    torch.testing.assert_close(result.z_perturbed.cpu(), philox_normal(noise, shape[1:]), atol=1e-6, rtol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_philox_normals_of_a_wan_sized_sample(backend):
    # Element indices past 2**16 and 2**20, seeds whose high key word is non-zero.
    shape = (2, 16, 21, 30, 52)
    seed = int(torch.randint(0, 2**31, ()))
    noise = PhiloxNoise((seed + 2**33, 2**64 - 1), step=37, iteration=3)
    z = torch.zeros(shape, device="cuda")
    got = pnp_update(z, z.bfloat16(), 1.0, 0.9, noise=noise, backend=backend).z_perturbed
    expected = philox_normal(noise, shape[1:], device="cuda")
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6, msg=lambda m: f"seed {seed}: {m}")
    assert expected.std().item() == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_default_outputs_are_fresh_and_correct(backend, device):
    z, v, sigma, sigma_next, kwargs = make_inputs(3, 4, (3, 7, 5), "fp32", 2, 0.25, "prev_certain", False, "tensor", 0, False, device)
    expected = reference_on_cpu(z, v, sigma, sigma_next, kwargs)
    assert_matches(pnp_update(z, v, sigma, sigma_next, backend=backend, **kwargs), expected, "out=None")


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
@pytest.mark.parametrize("shape", [(0, 4, 2, 3, 5), (2, 4, 2, 0, 5)], ids=["no-samples", "no-positions"])
def test_empty_inputs(shape, backend, device):
    z = torch.randn(shape, device=device)
    kwargs = dict(prev_x0=torch.randn_like(z), prev_z_next=torch.randn_like(z), noise=torch.randn_like(z))
    actual = pnp_update(z, z, 0.5, 0.4, backend=backend, **kwargs)
    assert_matches(actual, reference_on_cpu(z, z, 0.5, 0.4, kwargs), shape)
    assert actual.certain_fraction.shape == (shape[0],)


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
@pytest.mark.parametrize("noise_mode, guided", [("generator", True), ("philox", False)])
def test_sampler_with_the_backend_equals_torch(noise_mode, guided, backend, device):
    seed = int(torch.randint(0, 2**31, ()))
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(2, 16, 3, 5, 7, generator=g).to(device)
    target = torch.randn(latents.shape, generator=g).to(device)

    def denoise(z, step, sigma):
        velocity = (z - target) / max(sigma, 1e-3) + 0.3 * torch.tanh(z.roll(1, dims=-1))
        if guided:
            return Guided(velocity.bfloat16(), (0.9 * velocity).bfloat16(), 2.5)
        return velocity

    sigmas = torch.linspace(1.0, 0.0, 7)
    results = {}
    for name in ("torch", backend):
        cfg = PnPConfig(plan=[(1, 2, 2), (3, 4, 1)], tau=0.05, certain_stop=0.8, noise=noise_mode, backend=name)
        source = dict(seed=seed) if noise_mode == "philox" else dict(generator=torch.Generator(device).manual_seed(seed))
        results[name] = pnp_sample(denoise, latents, sigmas, cfg, num_pinned_frames=1, **source)
    assert results[backend].stats.backend == backend
    torch.testing.assert_close(results[backend].latents, results["torch"].latents, atol=1e-5, rtol=1e-5)
    assert results[backend].stats.nfe == results["torch"].stats.nfe


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_cuda_graph_capture_and_replay(backend):
    z, v, sigma, sigma_next, kwargs = make_inputs(1, 16, (5, 30, 52), "bf16", 1, 0.25, "prev_certain", True, "philox", 1, False, "cuda")
    out = poisoned_outputs(z, True, False)
    kwargs["return_uncertainty"] = False
    pnp_update(z, v, sigma, sigma_next, backend=backend, out=out, **kwargs)  # warm-up: compile, cache keys
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = pnp_update(z, v, sigma, sigma_next, backend=backend, out=out, **kwargs)
    v.copy_(torch.randn_like(v))
    graph.replay()
    torch.cuda.synchronize()
    assert_matches(captured, reference_on_cpu(z, v, sigma, sigma_next, kwargs), "cuda graph replay")


@pytest.mark.parametrize("backend, device", BACKEND_DEVICES)
def test_zero_channels_are_refused_with_a_reason(backend, device):
    z = torch.randn(1, 0, 2, 3, 4, device=device)
    with pytest.raises(RuntimeError, match=f"'{backend}' cannot run.*channels"):
        pnp_update(z, z, 0.5, 0.4, backend=backend)
    assert pnp_update(z, z, 0.5, 0.4, backend="auto").backend == "torch"


def test_outputs_carry_no_stale_fields():
    # A PnPUpdateOutput given as out= may carry a backend name; the result names the one that ran.
    z = torch.randn(1, 4, 2, 3, 4)
    out = PnPUpdateOutput(None, None, None, None, None, None, None, backend="cuda")
    assert pnp_update(z, z, 0.5, 0.4, out=out, backend="torch").backend == "torch"
