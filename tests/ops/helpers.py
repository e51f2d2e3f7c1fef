"""What the op tests share: devices, random inputs whose decisions are unambiguous, poisoned output
buffers, and a comparison with the reference that says where it failed."""
from __future__ import annotations

import pytest
import torch

from pnp_kernels.ops import PhiloxNoise, PnPUpdateOutput, pnp_update_reference
from pnp_kernels.ops.outputs import TENSOR_FIELDS

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
ATOL = RTOL = 1e-5


def interpreter_on() -> bool:
    import triton

    return bool(triton.knobs.runtime.interpret)


def cuda_extension_ready() -> bool:
    from pnp_kernels.ops import cuda_backend

    return torch.cuda.is_available() and cuda_backend.extension_error() is None


# (backend, device) pairs a GPU-backend test runs on: Triton in its CPU interpreter, both on a GPU.
BACKEND_DEVICES = [
    pytest.param("triton", "cpu", id="triton-cpu",
                 marks=pytest.mark.skipif(not interpreter_on(), reason="needs TRITON_INTERPRET=1 on CPU")),
    pytest.param("triton", "cuda", id="triton-cuda", marks=pytest.mark.gpu),
    pytest.param("cuda", "cuda", id="cuda-cuda", marks=pytest.mark.gpu),
]
TRITON_DEVICES = [p for p in BACKEND_DEVICES if p.values[0] == "triton"]


def make_inputs(batch, channels, spatial, dtype, p_norm, tau, prev, guided, noise, pinned, with_nan, device):
    """Random inputs (seeded freshly) as (z, v, sigma, sigma_next, keywords): uncertainties straddle
    tau, but none lies within rounding of it (those positions get U = 0), so every backend must
    take the reference's decision at every position."""
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
        kwargs["noise"] = PhiloxNoise(tuple(seed + 7 * b + 2**40 * b for b in range(batch)), step=seed % 50,
                                      iteration=1 + seed % 3)
    kwargs["return_uncertainty"] = prev != "prev"  # also asked for without a previous iteration (all 0)
    on_device = {k: (t.to(device) if isinstance(t, torch.Tensor) else t) for k, t in kwargs.items()}
    return z.to(device), v.to(device), sigma, sigma_next, on_device


def poisoned_outputs(z: torch.Tensor, with_noise: bool, with_uncertainty: bool) -> PnPUpdateOutput:
    """Output buffers filled with values no backend writes, so unwritten elements show."""
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


def assert_matches(actual: PnPUpdateOutput, expected: PnPUpdateOutput, case) -> None:
    """Every tensor field equal (masks, counts) or close (floats, NaN where the reference has NaN)."""
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
            torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL, equal_nan=True,
                                       msg=lambda m: f"{name} ({case}): {m}")


def compile_for_hopper(velocity_dtype: str, flags: dict) -> str:
    """Compile the update kernel to sm_90 (needs triton without TRITON_INTERPRET); returns the PTX."""
    import inspect

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from pnp_kernels.ops import triton_kernel

    full_flags = dict(CHANNELS=16, CHANNEL_CHUNK=16, BLOCK_SPATIAL=128, SPATIAL_MULTIPLE=16, HAS_GUIDANCE=True,
                      HAS_PREV=True, HAS_PREV_CERTAIN=True, HAS_ACTIVE=True, NOISE_MODE=2, P_NORM=1,
                      WRITE_UNCERTAINTY=True, STORE_STATE=True)
    kernel = triton_kernel._pnp_update_kernel
    names = list(inspect.signature(kernel.fn).parameters)
    pointer_types = {"v_ptr": velocity_dtype, "v_uncond_ptr": velocity_dtype, "prev_certain_ptr": "i1",
                     "active_ptr": "i1", "certain_ptr": "i1", "philox_key_ptr": "i64", "certain_count_ptr": "i32",
                     "nonfinite_ptr": "i32"}
    floats = {"sigma", "dt", "one_minus_sigma", "guidance_scale", "tau"}
    constants = {**full_flags, **flags}
    signature = {}
    for name in names:
        if name in constants:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = "*" + pointer_types.get(name, "fp32")
        else:
            signature[name] = "fp32" if name in floats else "i32"
    # Pointers are 16-byte aligned, as torch allocations are (what Triton's launcher specializes on);
    # spatial_units as for a size that is not a multiple of 16.
    aligned = [(names.index(n),) for n in names if n.endswith("_ptr")]
    source = ASTSource(kernel, signature, constexprs={(names.index(k),): v for k, v in constants.items()},
                       attrs={index: [["tt.divisibility", 16]] for index in aligned})
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8, "enable_fp_fusion": False})
    assert compiled.asm["cubin"]
    return compiled.asm["ptx"]
