"""The CUDA C++ backend: csrc/ compiles with nvcc (CPU), its loader and setup.py decide clearly,
and on a GPU it computes the reference's function (pnp_kernels/ops/reference.py)."""
from __future__ import annotations

import importlib.util
import random
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from pnp_kernels.ops import PhiloxNoise, PnPUpdateOutput, philox_normal, pnp_update, pnp_update_reference
from pnp_kernels.ops import cuda_backend
from pnp_kernels.ops.cuda_backend import CudaBackend

REPO = Path(__file__).resolve().parents[2]
CSRC = REPO / "csrc"
NVCC = shutil.which("nvcc")


# ----------------------------------------------------------------------------------------------
# (a) compile checks: a broken kernel fails CI wherever nvcc exists.


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")
def test_kernel_compiles_for_sm80_and_sm90(tmp_path):
    # The kernel translation unit needs only the CUDA toolkit (the torch binding is a separate
    # file), so CPU-only machines with nvcc check it too.
    command = [
        NVCC, "-c", str(CSRC / "pnp_update_kernel.cu"), "-o", str(tmp_path / "pnp_update_kernel.o"),
        "-std=c++20", "-O3", "-I", str(CSRC), "-Werror", "all-warnings", "--threads", "2",
        # torch.utils.cpp_extension builds every .cu with these: the kernel must not need the operators.
        "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__", "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
        "-D__CUDA_NO_HALF2_OPERATORS__",
        "-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout}\n{result.stderr}"
    assert (tmp_path / "pnp_update_kernel.o").stat().st_size > 0


def _cuda_include_dir() -> Path | None:
    from torch.utils import cpp_extension

    roots = [cpp_extension.CUDA_HOME, "/usr/local/cuda"]
    if NVCC is not None:
        roots.append(str(Path(NVCC).resolve().parent.parent))
    for root in roots:
        if root and (Path(root) / "include" / "cuda_runtime_api.h").is_file():
            return Path(root) / "include"
    return None


def _torch_cuda_headers_complete() -> bool:
    from torch.utils import cpp_extension

    # CPU wheels ship c10/cuda headers but not this generated one, without which they do not parse.
    return any((Path(p) / "c10/cuda/impl/cuda_cmake_macros.h").is_file() for p in cpp_extension.include_paths())


def test_binding_compiles_against_torch(tmp_path):
    from torch.utils import cpp_extension

    compiler = shutil.which("c++")
    if compiler is None or _cuda_include_dir() is None:
        pytest.skip("needs a C++ compiler and the CUDA toolkit headers")
    if not _torch_cuda_headers_complete():
        pytest.skip("this torch build does not ship complete c10/cuda headers (CPU wheel)")
    command = [compiler, "-fsyntax-only", "-std=c++20", "-I", str(CSRC), "-I", str(_cuda_include_dir())]
    for path in cpp_extension.include_paths():
        command += ["-I", path]
    command.append(str(CSRC / "pnp_update_op.cpp"))
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stderr[-5000:]}"


# ----------------------------------------------------------------------------------------------
# (c) the Python side on CPU: reasons, loader, setup.py's decision.


def test_cpu_tensors_are_refused_without_loading(monkeypatch):
    def must_not_load():
        raise AssertionError("CPU tensors must not load or compile the extension")

    monkeypatch.setattr(cuda_backend, "extension_error", must_not_load)
    z = torch.zeros(2, 16, 3, 5, 7)
    reasons = CudaBackend().not_supported_reasons(z, z.bfloat16(), None)
    assert reasons == ["z is on cpu, not a CUDA device"]
    wide = torch.zeros(1, 65, 2, 3, 3)
    reasons = CudaBackend().not_supported_reasons(wide, wide, wide)
    assert len(reasons) == 2 and "65 channels" in reasons[1]


def test_cuda_backend_refuses_explicit_request_on_cpu():
    z = torch.randn(1, 4, 2, 3, 5)
    with pytest.raises(RuntimeError, match="not a CUDA device"):
        pnp_update(z, z, 0.5, 0.4, backend="cuda")


@pytest.mark.skipif(torch.version.cuda is not None, reason="torch is a CUDA build")
def test_cpu_torch_reports_why_the_extension_is_unavailable():
    assert "without CUDA" in cuda_backend.extension_error()


def test_jit_build_can_be_disabled(monkeypatch):
    monkeypatch.setenv("PNP_KERNELS_NO_JIT", "1")
    assert "PNP_KERNELS_NO_JIT=1" in cuda_backend._jit_build()


def test_sources_are_found_for_jit():
    found = cuda_backend.csrc_dir()
    assert found is not None and all((found / name).is_file() for name in cuda_backend.CSRC_FILES)


def _setup_module():
    # setup() runs only under __main__, so importing setup.py just defines its helpers.
    spec = importlib.util.spec_from_file_location("pnp_kernels_setup", REPO / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "env, torch_cuda, nvcc, expected",
    [
        ({}, "12.8", True, True),
        ({}, "12.8", False, False),  # no toolkit
        ({}, None, True, False),  # CPU torch (the CI)
        ({}, "no torch", True, False),  # pip's isolated build environment
        ({"FORCE_CUDA": "1"}, None, False, True),
        ({"PNP_KERNELS_SKIP_CUDA_BUILD": "1"}, "12.8", True, False),
        ({"PNP_KERNELS_SKIP_CUDA_BUILD": "1", "FORCE_CUDA": "1"}, "12.8", True, False),
        ({"FORCE_CUDA": "0"}, None, True, False),
    ],
)
def test_setup_builds_the_extension_only_where_it_can(env, torch_cuda, nvcc, expected):
    build, reason = _setup_module().cuda_build_decision(env, torch_cuda, nvcc)
    assert build is expected and reason


def test_setup_forced_build_without_torch_says_how_to_fix():
    with pytest.raises(RuntimeError, match="no-build-isolation"):
        _setup_module().cuda_build_decision({"FORCE_CUDA": "1"}, "no torch", True)


def test_setup_arch_list_defaults_to_sm80_and_sm90_and_honours_the_env():
    setup = _setup_module()
    default = setup.cuda_arch_list({}).replace("+PTX", "").split(";")
    assert "8.0" in default and "9.0" in default
    assert setup.cuda_arch_list({"TORCH_CUDA_ARCH_LIST": "9.0a"}) == "9.0a"


# ----------------------------------------------------------------------------------------------
# (b) on a GPU: the kernel against the reference, on the device.

DEVICE = "cuda"


def _fresh_seed() -> int:
    return random.SystemRandom().randrange(2**31)


def _make_case(seed, batch, channels, frames, height, width, *, dtype=torch.bfloat16, guidance=False,
               prev=False, prev_certain=False, noise=None, active=False, pinned=0, poison_inputs=False):
    """Random inputs on the GPU as keyword arguments of the reference; prev_x0 disagrees with the
    new prediction by a per-position random amount, so that U straddles tau."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    shape = (batch, channels, frames, height, width)
    mask_shape = (batch, frames, height, width)

    def randn(*size):
        return torch.randn(*size, generator=g)

    z = randn(*shape)
    v = randn(*shape)
    args = dict(z=z, v=v.to(dtype), sigma=0.83, sigma_next=0.71, num_pinned_frames=pinned)
    if guidance:
        args.update(v_uncond=randn(*shape).to(dtype), guidance_scale=4.5)
    if prev:
        spread = torch.rand(batch, 1, frames, height, width, generator=g) * 0.8
        args.update(prev_x0=z - 0.83 * v + randn(*shape) * spread, prev_z_next=randn(*shape))
        if prev_certain:
            args["prev_certain"] = torch.rand(*mask_shape, generator=g) < 0.3
        if active:
            args["active"] = torch.arange(batch) % 2 == 0  # odd samples left the step early
    if poison_inputs:  # non-finite model outputs, in pinned and unpinned frames
        args["v"].view(-1)[torch.randint(0, v.numel(), (7,), generator=g)] = float("nan")
        args["v"][0, 0, -1, 0, 0] = float("inf")
        args["v"][-1, -1, 0, -1, -1] = float("nan")
        args["v"][batch // 2, 1, -1, 1, 1] = float("nan")  # the inactive sample when active=True
    if noise == "tensor":
        args["noise"] = randn(*shape)
    elif noise == "philox":
        args["noise"] = PhiloxNoise(tuple(seed * 7919 + 2**40 * b for b in range(batch)), step=5, iteration=2)
    return {k: (t.to(DEVICE) if isinstance(t, torch.Tensor) else t) for k, t in args.items()}


def _poisoned_out(args) -> PnPUpdateOutput:
    """Output tensors filled with values the kernel never writes, so unwritten elements show."""
    z = args["z"]
    mask_shape = (z.shape[0], *z.shape[2:])
    nan_latent = lambda: torch.full_like(z, float("nan"))  # noqa: E731
    return PnPUpdateOutput(
        x0=nan_latent(), z_next=nan_latent(),
        certain=torch.ones(mask_shape, dtype=torch.bool, device=z.device),
        certain_fraction=None, nonfinite=None,
        z_perturbed=nan_latent() if args.get("noise") is not None else None,
        uncertainty=torch.full(mask_shape, float("nan"), device=z.device),
    )


def _undecided(args, expected, tau):
    """Positions where U is within float32 summation-order noise of tau: either decision is right.
    Only active, unpinned, not already certain positions are decided by U; U >= 0 never is < 0."""
    undecided = (expected.uncertainty - tau).abs() <= 1e-5 * max(1.0, tau)
    if tau == 0 or args.get("prev_x0") is None:
        return torch.zeros_like(undecided)
    if args.get("prev_certain") is not None:
        undecided &= ~args["prev_certain"]
    if args.get("active") is not None:
        undecided &= args["active"].view(-1, 1, 1, 1)
    undecided[:, : args["num_pinned_frames"]] = False
    return undecided


def _assert_matches_reference(args, seed, *, noise_tol=0.0):
    ref_args = {k: v for k, v in args.items() if k not in ("z", "v", "sigma", "sigma_next")}
    expected = pnp_update_reference(args["z"], args["v"], args["sigma"], args["sigma_next"],
                                    return_uncertainty=True, **ref_args)
    backend = CudaBackend()
    assert backend.not_supported_reasons(args["z"], args["v"], args.get("v_uncond")) == []
    run_args = dict(v_uncond=None, guidance_scale=1.0, prev_x0=None, prev_z_next=None, prev_certain=None,
                    tau=0.25, p_norm=1, noise=None, active=None, num_pinned_frames=0)
    run_args.update(ref_args)
    got = backend.run(args["z"], args["v"], args["sigma"], args["sigma_next"], return_uncertainty=True,
                      out=_poisoned_out(args), **run_args)
    torch.cuda.synchronize()
    where = f"(seed {seed})"

    undecided = _undecided(args, expected, run_args["tau"])
    decided = ~undecided

    assert torch.equal(got.certain[decided], expected.certain[decided]), f"certain mask differs {where}"
    torch.testing.assert_close(got.uncertainty, expected.uncertainty, rtol=1e-5, atol=1e-6, equal_nan=True,
                               msg=lambda m: f"uncertainty {where}: {m}")
    latent_decided = decided.unsqueeze(1).expand_as(args["z"])
    for name, atol in (("x0", 1e-6), ("z_next", 1e-6), ("z_perturbed", 1e-6 + noise_tol)):
        want, have = getattr(expected, name), getattr(got, name)
        if want is None:
            assert have is None, f"{name} should be None {where}"
            continue
        torch.testing.assert_close(have[latent_decided], want[latent_decided], rtol=1e-6, atol=atol,
                                   equal_nan=True, msg=lambda m, n=name: f"{n} {where}: {m}")
        # Excused positions hold one of two finite candidates, never the NaN poison.
        assert not have[~latent_decided].isnan().any(), f"{name} has unwritten elements {where}"
    assert torch.equal(got.nonfinite.cpu(), expected.nonfinite.cpu()), f"nonfinite counts differ {where}"
    num_free = (args["z"].shape[2] - args["num_pinned_frames"]) * args["z"].shape[3] * args["z"].shape[4]
    slack = undecided.flatten(1).sum(1).float() / num_free + 1e-7
    assert ((got.certain_fraction - expected.certain_fraction).abs() <= slack).all(), f"fractions differ {where}"
    return expected, got


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("channels", [4, 16, 48])
@pytest.mark.parametrize("p_norm", [1, 2])
@pytest.mark.parametrize("tau", [0.0, 0.25])
def test_matches_reference_with_previous_iteration(batch, channels, p_norm, tau):
    seed = _fresh_seed()
    args = _make_case(seed, batch, channels, 5, 9, 13, prev=True, prev_certain=True, guidance=True,
                      noise="tensor", active=batch > 1, pinned=1)
    args.update(p_norm=p_norm, tau=tau)
    expected, got = _assert_matches_reference(args, seed)
    if tau > 0:  # the case exercises both branches of the merge
        assert expected.certain.any() and not expected.certain.all()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("guidance", [False, True])
def test_matches_reference_first_iteration(dtype, guidance):
    seed = _fresh_seed()
    args = _make_case(seed, 3, 16, 3, 7, 11, dtype=dtype, guidance=guidance, noise="tensor")
    expected, got = _assert_matches_reference(args, seed)
    assert not got.certain.any() and (got.uncertainty == 0).all()


@pytest.mark.gpu
@pytest.mark.parametrize("channels", [4, 16, 48])
def test_philox_noise_in_kernel_matches_reference(channels):
    seed = _fresh_seed()
    args = _make_case(seed, 3, channels, 4, 7, 9, prev=True, noise="philox", active=True, pinned=2)
    # The reference draws in float64; the kernel's float32 Box-Muller is within a few ulps of it.
    _assert_matches_reference(args, seed, noise_tol=args["sigma"] * 6e-6)


@pytest.mark.gpu
def test_philox_normals_equal_reference():
    # With z = v = 0 and sigma = 1, z_perturbed is the kernel's noise exactly. A wrong Philox word
    # moves a normal by O(1), so this also checks the integers; the large per-sample extent
    # exercises element indices past 2**16 and seeds whose high word k1 is non-zero.
    shape = (2, 16, 21, 30, 52)
    seeds = (_fresh_seed() + 2**33, 2**64 - 1)
    noise = PhiloxNoise(seeds, step=37, iteration=3)
    z = torch.zeros(shape, device=DEVICE)
    got = pnp_update(z, z.bfloat16(), 1.0, 0.9, noise=noise, backend="cuda").z_perturbed
    expected = philox_normal(noise, shape[1:], device=DEVICE)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6, msg=lambda m: f"seeds {seeds}: {m}")
    assert expected.std().item() == pytest.approx(1.0, abs=0.01)


@pytest.mark.gpu
def test_nonfinite_outputs_are_counted_like_the_reference():
    seed = _fresh_seed()
    for active in (False, True):
        args = _make_case(seed, 3, 16, 4, 6, 10, dtype=torch.float32, prev=True, noise="tensor", pinned=1,
                          active=active, poison_inputs=True)
        expected, _ = _assert_matches_reference(args, seed)
        assert expected.nonfinite[0] > 0 and (expected.nonfinite[1] == 0) == active  # sample 1 is inactive


@pytest.mark.gpu
def test_public_op_with_cuda_backend_matches_reference():
    seed = _fresh_seed()
    args = _make_case(seed, 2, 16, 3, 5, 7, prev=True, prev_certain=True, guidance=True, noise="philox")
    got = pnp_update(**args, backend="cuda", return_uncertainty=True)
    expected = pnp_update_reference(**args, return_uncertainty=True)
    decided = ~_undecided(args, expected, 0.25)
    assert torch.equal(got.certain[decided], expected.certain[decided]), f"seed {seed}"
    torch.testing.assert_close(got.z_next, expected.z_next, rtol=1e-6, atol=1e-6)


@pytest.mark.gpu
def test_out_tensors_that_alias_inputs_or_are_strided_get_correct_values():
    seed = _fresh_seed()
    args = _make_case(seed, 2, 16, 3, 5, 7, dtype=torch.float32, prev=True, noise="tensor")
    expected = pnp_update_reference(**args)
    strided = torch.empty(2, 3, 5, 7, 16, device=DEVICE).permute(0, 4, 1, 2, 3)
    out = PnPUpdateOutput(args["prev_x0"], strided, None, None, None, None, None)  # x0 overwrites prev_x0
    got = CudaBackend().run(args["z"], args["v"], args["sigma"], args["sigma_next"], v_uncond=None,
                            guidance_scale=1.0, prev_x0=args["prev_x0"], prev_z_next=args["prev_z_next"],
                            prev_certain=None, tau=0.25, p_norm=1, noise=args["noise"], active=None,
                            num_pinned_frames=0, return_uncertainty=False, out=out)
    assert got.x0 is args["prev_x0"] and got.z_next is strided
    torch.testing.assert_close(got.x0, expected.x0, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got.z_next, expected.z_next, rtol=1e-6, atol=1e-6)


@pytest.mark.gpu
def test_op_checks_name_the_bad_argument():
    z = torch.randn(1, 4, 2, 3, 5, device=DEVICE)
    mask = torch.zeros(1, 2, 3, 5, dtype=torch.bool, device=DEVICE)
    counts = torch.empty(1, 2, dtype=torch.int32, device=DEVICE)

    def call(**changes):
        args = dict(z=z, v=z, v_uncond=None, guidance_scale=1.0, sigma=0.5, dt=-0.1, prev_x0=None,
                    prev_z_next=None, prev_certain=None, tau=0.25, p_norm=1, noise=None, philox_keys=None,
                    step=0, iteration=0, active=None, num_pinned_frames=0, x0=torch.empty_like(z),
                    z_next=torch.empty_like(z), certain=mask.clone(), counts=counts, z_perturbed=None,
                    uncertainty=None)
        args.update(changes)
        torch.ops.pnp_kernels.pnp_update_cuda(**args)

    call()  # the defaults are valid
    with pytest.raises(TypeError, match="v must have dtype"):
        call(v=z.double())
    with pytest.raises(ValueError, match="v must be contiguous"):
        call(v=z.transpose(3, 4).contiguous().transpose(3, 4))
    with pytest.raises(ValueError, match="x0 must have shape"):
        call(x0=z[:, :3].clone())
    with pytest.raises(ValueError, match="v must be on"):
        call(v=z.cpu())
    with pytest.raises(ValueError, match="p_norm"):
        call(p_norm=3)
    with pytest.raises(ValueError, match="z_perturbed"):
        call(noise=torch.randn_like(z))
    with pytest.raises(ValueError, match="x0 must not overlap prev_x0"):
        prev = torch.randn_like(z)
        call(prev_x0=prev, prev_z_next=torch.randn_like(z), x0=prev)
