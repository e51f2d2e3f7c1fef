"""The CUDA C++ backend (ops/cuda_backend.py): the binding compiles (CPU), its schema is the Python
op's up to the documented mapping, its loader and setup.py decide clearly, its limits are the
header's, and on a GPU the binding names bad arguments. The kernel's build: test_cuda_kernel_build.py;
its values against the reference: test_gpu_backends.py."""
from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from pnp_kernels.ops import PnPUpdateInputs, cuda_backend, pnp_update
from pnp_kernels.ops.cuda_backend import CudaBackend, cuda_op_arguments
from pnp_kernels.ops.custom_op import pnp_update_op
from pnp_kernels.ops.outputs import TENSOR_FIELDS, output_buffers

from .helpers import make_inputs

REPO = Path(__file__).resolve().parents[2]
CSRC = REPO / "csrc"
NVCC = shutil.which("nvcc")


# ----------------------------------------------------------------------------------------------
# (a) compile checks: the binding here; the kernel's instances in test_cuda_kernel_build.py.


def _cuda_include_dir() -> Path | None:
    from torch.utils import cpp_extension

    roots = [cpp_extension.CUDA_HOME, "/usr/local/cuda"]
    if NVCC is not None:
        roots.append(str(Path(NVCC).resolve().parent.parent))
    for root in roots:
        if root and (Path(root) / "include" / "cuda_runtime_api.h").is_file():
            return Path(root) / "include"
    return None


MACROS_HEADER = "c10/cuda/impl/cuda_cmake_macros.h"


def _torch_cuda_headers_complete() -> bool:
    from torch.utils import cpp_extension

    # CPU wheels ship c10/cuda headers but not this generated one, without which they do not parse.
    return any((Path(p) / MACROS_HEADER).is_file() for p in cpp_extension.include_paths())


def test_binding_compiles_against_torch(tmp_path):
    from torch.utils import cpp_extension

    compiler = shutil.which("c++")
    if compiler is None or _cuda_include_dir() is None:
        pytest.skip("needs a C++ compiler and the CUDA toolkit headers")
    command = [compiler, "-fsyntax-only", "-std=c++20", "-I", str(CSRC), "-I", str(_cuda_include_dir())]
    if not _torch_cuda_headers_complete():
        # A CPU wheel lacks the build-generated macros header; an empty one is enough to parse the
        # binding (a syntax check: nothing is linked), so CPU-only machines check it too.
        (tmp_path / MACROS_HEADER).parent.mkdir(parents=True)
        (tmp_path / MACROS_HEADER).write_text("#pragma once\n")
        command += ["-I", str(tmp_path)]
    for path in cpp_extension.include_paths():
        command += ["-I", path]
    command.append(str(CSRC / "pnp_update_op.cpp"))
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stderr[-5000:]}"


# ----------------------------------------------------------------------------------------------
# (b) one schema: the C++ op takes the Python op's arguments, up to cuda_op_arguments' mapping.

# Python op argument -> C++ op argument; None: left out of the C++ op (cuda_op_arguments' docstring).
SCHEMA_MAPPING = {"philox_key_words": "philox_keys", "round_products_to": None, "backend": None}


def _cuda_op_schema():
    text = (CSRC / "pnp_update_op.cpp").read_text()
    found = re.search(r'm\.def\(\s*((?:"[^"]*"\s*)+)\);', text)
    assert found, "no m.def(...) in pnp_update_op.cpp"
    declaration = "".join(re.findall(r'"([^"]*)"', found.group(1)))
    return torch._C.parse_schema(f"pnp_kernels::{declaration}")


def test_cuda_op_schema_is_the_python_ops_up_to_the_mapping():
    python_arguments = pnp_update_op._opoverload._schema.arguments
    expected = [(SCHEMA_MAPPING.get(a.name, a.name), a) for a in python_arguments if SCHEMA_MAPPING.get(a.name, a.name)]
    actual = _cuda_op_schema().arguments
    assert [a.name for a in actual] == [name for name, _ in expected]
    for cuda_argument, (name, python_argument) in zip(actual, expected):
        if name in SCHEMA_MAPPING.values():
            continue
        assert str(cuda_argument.type) == str(python_argument.type), name
        assert cuda_argument.is_write == python_argument.is_write, name


@pytest.mark.parametrize("noise", ["philox", "tensor", "none"])
def test_cuda_op_arguments_follow_the_schema_by_name(noise):
    # Mixed velocity dtypes and a strided input: what the mapping converts.
    z, v, sigma, sigma_next, kwargs = make_inputs(2, 5, (3, 4, 6), "bf16", 2, 0.25, "active", True, noise, 1, False, "cpu")
    kwargs["v_uncond"] = kwargs["v_uncond"].float()
    kwargs["prev_x0"] = kwargs["prev_x0"].transpose(-1, -2).contiguous().transpose(-1, -2)
    inputs = PnPUpdateInputs(z, v, sigma, sigma_next, **kwargs)
    outputs = output_buffers(inputs, None)
    names = [a.name for a in _cuda_op_schema().arguments]
    arguments = dict(zip(names, cuda_op_arguments(inputs, outputs), strict=True))
    philox = inputs.philox
    expected = {
        "v": v.float(), "v_uncond": kwargs["v_uncond"], "noise": inputs.noise_tensor,
        "philox_keys": None if philox is None else philox.key_table("cpu"),
        "philox_step": 0 if philox is None else philox.step,
        "philox_iteration": 0 if philox is None else philox.iteration,
    }
    for name in names:
        value = expected[name] if name in expected else (
            getattr(outputs, name) if name in TENSOR_FIELDS else getattr(inputs, name))
        given = arguments[name]
        if name in TENSOR_FIELDS:  # uninitialized buffers: compared by identity, not by value
            assert given is value, f"{name} must be the buffer itself: the op writes into it"
        elif isinstance(value, torch.Tensor):
            assert isinstance(given, torch.Tensor) and given.is_contiguous(), name
            assert given.dtype == value.dtype and torch.equal(given, value), name
        else:
            assert given == value, name


# ----------------------------------------------------------------------------------------------
# (c) the Python side on CPU: reasons, loader, setup.py's decision.


def test_cpu_tensors_are_refused_without_loading(monkeypatch):
    def must_not_load():
        raise AssertionError("CPU tensors must not load or compile the extension")

    monkeypatch.setattr(cuda_backend, "extension_error", must_not_load)
    z = torch.zeros(2, 16, 3, 5, 7)
    reasons = CudaBackend().not_supported_reasons(PnPUpdateInputs(z, z.bfloat16(), 0.5, 0.4))
    assert reasons == ["z is on cpu, not a CUDA device"]
    wide = torch.zeros(1, 65, 2, 3, 3)
    reasons = CudaBackend().not_supported_reasons(PnPUpdateInputs(wide, wide, 0.5, 0.4, v_uncond=wide))
    assert len(reasons) == 2 and "C=65" in reasons[1]


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
# (d) the limits the Python side checks are the kernel's (one constant per layer).


def _header_constant(name: str) -> int:
    text = (CSRC / "pnp_update_params.h").read_text()
    found = re.search(rf"constexpr\s+int\s+{name}\s*=\s*(\d+)\s*;", text)
    assert found, f"{name} not found in pnp_update_params.h"
    return int(found.group(1))


def test_python_limits_equal_the_kernel_header():
    assert cuda_backend.MAX_CHANNELS == _header_constant("kMaxChannels")
    assert cuda_backend.MAX_BATCH == _header_constant("kMaxBatch")


# ----------------------------------------------------------------------------------------------
# (e) on a GPU: the binding's own checks. Values: test_gpu_backends.py, with the Triton backend.

DEVICE = "cuda"


@pytest.mark.gpu
def test_op_checks_name_the_bad_argument():
    z = torch.randn(1, 4, 2, 3, 5, device=DEVICE)
    mask = torch.zeros(1, 2, 3, 5, dtype=torch.bool, device=DEVICE)
    fraction = torch.empty(1, device=DEVICE)
    nonfinite = torch.empty(1, dtype=torch.int32, device=DEVICE)

    def call(**changes):
        args = dict(z=z, v=z, v_uncond=None, prev_x0=None, prev_z_next=None, prev_certain=None, active=None,
                    noise=None, philox_keys=None, philox_step=0, philox_iteration=0, sigma=0.5, sigma_next=0.4,
                    guidance_scale=1.0, tau=0.25, p_norm=1, num_pinned_frames=0, x0=torch.empty_like(z),
                    z_next=torch.empty_like(z), certain=mask.clone(), certain_fraction=fraction,
                    nonfinite=nonfinite, z_perturbed=None, uncertainty=None)
        args.update(changes)
        torch.ops.pnp_kernels.pnp_update_cuda(**args)

    call()  # the defaults are valid
    call(x0=None, certain=None)  # store_state=False
    with pytest.raises(ValueError, match="x0 and certain must be given together"):
        call(x0=None)
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
    with pytest.raises(TypeError, match="nonfinite must have dtype"):
        call(nonfinite=fraction.clone())
    with pytest.raises(ValueError, match="x0 must not overlap prev_x0"):
        prev = torch.randn_like(z)
        call(prev_x0=prev, prev_z_next=torch.randn_like(z), x0=prev)
