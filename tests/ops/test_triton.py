"""The Triton fused update against the fp32 reference: interpreter on CPU, the device under @gpu.

Every case uses fresh random inputs, odd spatial shapes and NaN-poisoned output buffers, so an
element the kernel forgets to write fails the comparison.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pnp_kernels import Guided, PhiloxNoise, PnPConfig, PnPUpdateOutput, pnp_sample, pnp_update
from pnp_kernels.ops.backends import BACKENDS, select_backend
from pnp_kernels.ops.philox import philox_normal
from pnp_kernels.ops.reference import pnp_update_reference

# The interpreter evaluates inf - inf with numpy, which warns; the NaN it makes is the point.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
ATOL = RTOL = 1e-5


def _interpreter_on() -> bool:
    import triton

    return bool(triton.knobs.runtime.interpret)


DEVICES = [
    pytest.param("cpu", marks=pytest.mark.skipif(not _interpreter_on(), reason="needs TRITON_INTERPRET=1 on CPU")),
    pytest.param("cuda", marks=pytest.mark.gpu),
]

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
]


def make_inputs(batch, channels, spatial, dtype, p_norm, tau, prev, guided, noise, pinned, with_nan, device):
    """Random inputs (seeded freshly) whose uncertainties straddle tau, but none within rounding of it."""
    seed = int(torch.randint(0, 2**31, ()))
    g = torch.Generator().manual_seed(seed)
    shape = (batch, channels, *spatial)

    def randn(*size):
        return torch.randn(*size, generator=g)

    sigma = float(torch.rand((), generator=g)) * 0.9 + 0.1
    sigma_next = sigma * float(torch.rand((), generator=g))
    z = randn(*shape)
    v = randn(*shape).to(DTYPES[dtype])
    kwargs = dict(tau=tau, p_norm=p_norm, num_pinned_frames=pinned)
    if guided:
        kwargs.update(v_uncond=randn(*shape).to(DTYPES[dtype]), guidance_scale=float(torch.rand((), generator=g)) * 6)
    if with_nan:
        flat = v.view(batch, channels, -1)
        flat[0, 1, 3] = float("nan")  # frame 0: pinned when pinned > 0
        flat[-1, 0, -2] = float("inf")
        flat[-1, channels - 1, flat.shape[-1] // 2] = float("nan")
    if prev != "none":
        v_full = v.float()
        if guided:
            v_uncond = kwargs["v_uncond"].float()
            v_full = v_uncond + kwargs["guidance_scale"] * (v_full - v_uncond)
        x0_new = z - sigma * v_full
        # Per-position disagreement sized so that U spreads over [0, 0.5] for either norm.
        unit = 0.8 if p_norm == 1 else channels**-0.5  # E[U] for a unit normal difference
        spread = torch.rand(batch, 1, *spatial, generator=g) * (0.5 / unit)
        prev_x0 = x0_new + spread * randn(*shape)
        distance = torch.linalg.vector_norm(x0_new - prev_x0, ord=p_norm, dim=1, keepdim=True) / channels
        ambiguous = (distance - tau).abs() < 1e-4  # rounding order could decide these: make them exact 0
        kwargs.update(prev_x0=torch.where(ambiguous, x0_new, prev_x0), prev_z_next=randn(*shape))
        if prev in ("prev_certain", "active"):
            kwargs["prev_certain"] = torch.rand(batch, *spatial, generator=g) < 0.2
        if prev.startswith("active"):
            kwargs["active"] = torch.arange(batch) % 2 == 0  # samples 0, 2 active; 1 frozen
    if noise == "tensor":
        kwargs["noise"] = randn(*shape)
    elif noise == "philox":
        kwargs["noise"] = PhiloxNoise(tuple(seed + 7 * b for b in range(batch)), step=seed % 50, iteration=1 + seed % 3)
    kwargs["return_uncertainty"] = prev != "prev"  # also asked for without a previous iteration (all 0)
    on_device = {k: (t.to(device) if isinstance(t, torch.Tensor) else t) for k, t in kwargs.items()}
    return z.to(device), v.to(device), sigma, sigma_next, on_device


def poisoned_outputs(z: torch.Tensor, with_noise: bool, with_uncertainty: bool) -> PnPUpdateOutput:
    mask_shape = (z.shape[0], *z.shape[2:])
    nan = float("nan")
    return PnPUpdateOutput(
        x0=torch.full_like(z, nan),
        z_next=torch.full_like(z, nan),
        certain=torch.ones(mask_shape, dtype=torch.bool, device=z.device),
        certain_fraction=torch.full((z.shape[0],), nan, device=z.device),
        nonfinite=torch.full((z.shape[0],), -1, dtype=torch.int32, device=z.device),
        z_perturbed=torch.full_like(z, nan) if with_noise else None,
        uncertainty=torch.full(mask_shape, nan, device=z.device) if with_uncertainty else None,
    )


def reference_on_cpu(z, v, sigma, sigma_next, kwargs) -> PnPUpdateOutput:
    cpu = {k: (t.cpu() if isinstance(t, torch.Tensor) else t) for k, t in kwargs.items()}
    return pnp_update_reference(z.cpu(), v.cpu(), sigma, sigma_next, **cpu)


TENSOR_FIELDS = tuple(name for name in PnPUpdateOutput._fields if name != "backend")


def assert_matches(actual: PnPUpdateOutput, expected: PnPUpdateOutput, case) -> None:
    for name in TENSOR_FIELDS:
        got, want = getattr(actual, name), getattr(expected, name)
        assert (got is None) == (want is None), f"{name}: {got is None=} but {want is None=} ({case})"
        if want is None:
            continue
        got = got.cpu()
        assert got.dtype == want.dtype, f"{name}: dtype {got.dtype}, expected {want.dtype}"
        if want.dtype in (torch.bool, torch.int32):
            mismatch = (got != want).nonzero()
            assert mismatch.numel() == 0, f"{name} differs at {mismatch[:5].tolist()} ({case})"
        else:
            torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL, equal_nan=True, msg=lambda m: f"{name} ({case}): {m}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(x) for x in c).replace(" ", ""))
def test_triton_matches_reference(case, device):
    z, v, sigma, sigma_next, kwargs = make_inputs(*case, device=device)
    expected = reference_on_cpu(z, v, sigma, sigma_next, kwargs)
    out = poisoned_outputs(z, kwargs.get("noise") is not None, kwargs["return_uncertainty"])
    actual = pnp_update(z, v, sigma, sigma_next, backend="triton", out=out, **kwargs)
    assert_matches(actual, expected, case)
    for name in TENSOR_FIELDS:  # written in place, not into new tensors
        if getattr(out, name) is not None:
            assert getattr(actual, name) is getattr(out, name), name
    with_nan, prev, tau = case[-1], case[6], case[5]
    assert bool(expected.nonfinite.any()) == with_nan  # the NaN cases do count something
    if prev != "none" and tau > 0:  # both branches of the merge are exercised
        assert 0.05 < expected.certain.float().mean() < 0.95


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_inputs_and_outputs(device):
    z, v, sigma, sigma_next, kwargs = make_inputs(3, 16, (3, 5, 7), "bf16", 1, 0.25, "active", True, "philox", 1, False, device)

    def strided(t):  # same values, H and W swapped in memory
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)

    expected = reference_on_cpu(z, v, sigma, sigma_next, kwargs)
    kwargs = {k: (strided(t) if isinstance(t, torch.Tensor) and t.dim() >= 4 else t) for k, t in kwargs.items()}
    z, v = strided(z), strided(v)
    assert not z.is_contiguous() and not kwargs["prev_certain"].is_contiguous()
    poisoned = poisoned_outputs(z, True, True)
    out = poisoned._replace(**{n: strided(t) for n, t in poisoned._asdict().items() if t is not None and t.dim() >= 4})
    actual = pnp_update(z, v, sigma, sigma_next, backend="triton", out=out, **kwargs)
    assert_matches(actual, expected, "non-contiguous")
    assert actual.x0 is out.x0 and not actual.x0.is_contiguous()


@pytest.mark.parametrize("device", DEVICES)
def test_philox_noise_in_kernel_equals_reference_normals(device):
    # At sigma = 1 the perturbed input is exactly the noise: (1 - 1) * x0 + 1 * noise.
    batch, shape = 2, (16, 3, 7, 5)
    z = torch.randn(batch, *shape, device=device)
    seed = int(torch.randint(0, 2**62, ()))
    noise = PhiloxNoise((seed, seed + 1), step=int(torch.randint(0, 2**32, ())), iteration=3)
    result = pnp_update(z, torch.randn_like(z), 1.0, 0.9, noise=noise, backend="triton")
    torch.testing.assert_close(result.z_perturbed.cpu(), philox_normal(noise, shape), atol=1e-6, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_default_outputs_are_fresh_and_correct(device):
    z, v, sigma, sigma_next, kwargs = make_inputs(3, 4, (3, 7, 5), "fp32", 2, 0.25, "prev_certain", False, "tensor", 0, False, device)
    expected = reference_on_cpu(z, v, sigma, sigma_next, kwargs)
    assert_matches(pnp_update(z, v, sigma, sigma_next, backend="triton", **kwargs), expected, "out=None")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(0, 4, 2, 3, 5), (2, 4, 2, 0, 5)], ids=["no-samples", "no-positions"])
def test_empty_inputs(shape, device):
    z = torch.randn(shape, device=device)
    kwargs = dict(prev_x0=torch.randn_like(z), prev_z_next=torch.randn_like(z), noise=torch.randn_like(z))
    actual = pnp_update(z, z, 0.5, 0.4, backend="triton", **kwargs)
    assert_matches(actual, reference_on_cpu(z, z, 0.5, 0.4, kwargs), shape)
    assert actual.certain_fraction.shape == (shape[0],)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("noise_mode, guided", [("generator", True), ("philox", False)])
def test_sampler_triton_equals_torch(noise_mode, guided, device):
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
    for backend in ("torch", "triton"):
        cfg = PnPConfig(plan=[(1, 2, 2), (3, 4, 1)], tau=0.05, certain_stop=0.8, noise=noise_mode, backend=backend)
        source = dict(seed=seed) if noise_mode == "philox" else dict(generator=torch.Generator(device).manual_seed(seed))
        results[backend] = pnp_sample(denoise, latents, sigmas, cfg, num_pinned_frames=1, **source)
    assert results["triton"].stats.backend == "triton"
    torch.testing.assert_close(results["triton"].latents, results["torch"].latents, atol=1e-5, rtol=1e-5)
    assert results["triton"].stats.nfe == results["torch"].stats.nfe


def test_auto_picks_triton_for_cuda_tensors_only():
    cpu = torch.zeros(1, 4, 1, 2, 2)
    assert select_backend("auto", cpu, cpu, None).name != "triton"
    if torch.cuda.is_available():
        assert select_backend("auto", cpu.cuda(), cpu.cuda(), None) is BACKENDS["triton"]


@pytest.mark.gpu
def test_cuda_graph_capture_and_replay():
    z, v, sigma, sigma_next, kwargs = make_inputs(1, 16, (5, 30, 52), "bf16", 1, 0.25, "prev_certain", True, "philox", 1, False, "cuda")
    out = poisoned_outputs(z, True, False)
    kwargs["return_uncertainty"] = False
    pnp_update(z, v, sigma, sigma_next, backend="triton", out=out, **kwargs)  # warm-up: compile, cache keys
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = pnp_update(z, v, sigma, sigma_next, backend="triton", out=out, **kwargs)
    fresh_v = torch.randn_like(v)
    v.copy_(fresh_v)
    graph.replay()
    torch.cuda.synchronize()
    expected = reference_on_cpu(z, v, sigma, sigma_next, kwargs)
    assert_matches(captured, expected, "cuda graph replay")


KERNEL_VARIANTS = [
    # velocity dtype, constexpr flags (the rest as in FULL_FLAGS)
    ("bf16", {}),
    ("fp16", dict(CHANNELS=48, CHANNELS_PADDED=64, BLOCK_SPATIAL=32, NOISE_MODE=1, P_NORM=2)),
    ("fp32", dict(HAS_GUIDANCE=False, HAS_PREV=False, HAS_PREV_CERTAIN=False, HAS_ACTIVE=False, NOISE_MODE=0,
                  WRITE_UNCERTAINTY=False)),
]
FULL_FLAGS = dict(CHANNELS=16, CHANNELS_PADDED=16, BLOCK_SPATIAL=128, HAS_GUIDANCE=True, HAS_PREV=True,
                  HAS_PREV_CERTAIN=True, HAS_ACTIVE=True, NOISE_MODE=2, P_NORM=1, WRITE_UNCERTAINTY=True)


def compile_for_hopper(velocity_dtype: str, flags: dict) -> None:
    """Compile the update kernel to an sm_90 cubin (needs triton without TRITON_INTERPRET)."""
    import inspect

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from pnp_kernels.ops import triton_kernel

    kernel = triton_kernel._pnp_update_kernel
    names = list(inspect.signature(kernel.fn).parameters)
    pointer_types = {"v_ptr": velocity_dtype, "v_uncond_ptr": velocity_dtype, "prev_certain_ptr": "u8",
                     "active_ptr": "u8", "certain_ptr": "u8", "philox_key_ptr": "i64", "counts_ptr": "i32"}
    floats = {"sigma", "dt", "one_minus_sigma", "guidance_scale", "tau"}
    constants = {**FULL_FLAGS, **flags}
    signature = {}
    for name in names:
        if name in constants:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = "*" + pointer_types.get(name, "fp32")
        else:
            signature[name] = "fp32" if name in floats else "i32"
    source = ASTSource(kernel, signature, constexprs={(names.index(k),): v for k, v in constants.items()})
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8, "enable_fp_fusion": False})
    assert compiled.asm["cubin"]


@pytest.mark.parametrize("velocity_dtype, flags", KERNEL_VARIANTS)
def test_kernel_compiles_for_hopper_without_a_gpu(velocity_dtype, flags):
    """The interpreter never lowers to PTX; compiling for sm_90 with Triton's bundled ptxas catches
    what only the GPU path would reject (types of specialized arguments, float64 math lowering).
    A subprocess, because kernels defined under TRITON_INTERPRET=1 cannot be compiled."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_triton; "
        f"test_triton.compile_for_hopper({velocity_dtype!r}, {flags!r})"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    if "ptxas" in done.stderr and "not found" in done.stderr.lower():
        pytest.skip("this triton install has no ptxas")
    assert done.returncode == 0, done.stderr[-3000:]
