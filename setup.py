"""Build entry point. Static metadata lives in pyproject.toml; this file adds the CUDA extension.

``pnp_kernels._C`` is built from csrc/ when torch with CUDA and nvcc are present, or when
FORCE_CUDA=1; PNP_KERNELS_SKIP_CUDA_BUILD=1 skips it. TORCH_CUDA_ARCH_LIST is honoured (default
below, never sniffed from the GPUs of the build machine). Without the extension the package
still works: the CUDA backend compiles csrc/ on first use, and Triton / torch need no build.
torch is imported lazily: pip's isolated build environment of a plain install has no torch.
"""
import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"
DEFAULT_CUDA_ARCH_LIST = "8.0;8.6;8.9;9.0+PTX"  # A100, consumer Ampere, Ada, H100/H200 (+PTX for newer)
SKIP_ENV = "PNP_KERNELS_SKIP_CUDA_BUILD"
FORCE_ENV = "FORCE_CUDA"


def _flag(env, name: str) -> bool:
    return env.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def cuda_build_decision(env, torch_cuda_version, nvcc_found: bool) -> tuple[bool, str]:
    """Whether to build the CUDA extension, and why.

    env: the environment mapping; torch_cuda_version: ``torch.version.cuda``, or the string
    "no torch" when torch cannot be imported; nvcc_found: whether a CUDA toolkit was located.
    """
    if _flag(env, SKIP_ENV):
        return False, f"{SKIP_ENV} is set"
    if torch_cuda_version == "no torch":
        if _flag(env, FORCE_ENV):
            raise RuntimeError(
                f"{FORCE_ENV}=1 but torch is not importable in the build environment; "
                "install torch first and build with `pip install --no-build-isolation`"
            )
        return False, "torch is not importable in the build environment"
    if _flag(env, FORCE_ENV):
        return True, f"{FORCE_ENV} is set"
    if torch_cuda_version is None:
        return False, "torch is built without CUDA"
    if not nvcc_found:
        return False, "no CUDA toolkit (nvcc) was found; set CUDA_HOME"
    return True, f"torch (CUDA {torch_cuda_version}) and nvcc are present"


def cuda_arch_list(env) -> str:
    """TORCH_CUDA_ARCH_LIST as given, else the default (which always includes sm_80 and sm_90)."""
    return env.get("TORCH_CUDA_ARCH_LIST", "").strip() or DEFAULT_CUDA_ARCH_LIST


def _cuda_extension_and_commands():
    """([CUDAExtension], cmdclass) when the extension should be built, else ([], {})."""
    try:
        import torch
    except ImportError:
        torch = None
    torch_cuda_version = "no torch" if torch is None else torch.version.cuda
    nvcc_found = False
    if torch is not None:
        from torch.utils import cpp_extension

        nvcc_found = cpp_extension.CUDA_HOME is not None
    build, reason = cuda_build_decision(os.environ, torch_cuda_version, nvcc_found)
    print(f"pnp_kernels: {'building' if build else 'not building'} the CUDA extension: {reason}")
    if not build:
        return [], {}
    # Read by torch.utils.cpp_extension in this build process only.
    os.environ["TORCH_CUDA_ARCH_LIST"] = cuda_arch_list(os.environ)
    extension = cpp_extension.CUDAExtension(
        name="pnp_kernels._C",
        # The kernel's translation units (one per velocity dtype, compiled in parallel) and the binding.
        sources=sorted(str(path.relative_to(ROOT)) for pattern in ("*.cu", "*.cpp") for path in CSRC.glob(pattern)),
        include_dirs=[str(CSRC)],
        extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3"]},  # no fast math: philox needs precise logf
    )
    return [extension], {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}


class BuildPyWithSources(build_py):
    """Ship csrc/ inside the package (pnp_kernels/csrc) so that wheels can JIT-compile it."""

    def run(self):
        super().run()
        if not CSRC.is_dir():  # building from an sdist that left csrc/ out: nothing to ship
            return
        target = Path(self.build_lib) / "pnp_kernels" / "csrc"
        target.mkdir(parents=True, exist_ok=True)
        for source in CSRC.iterdir():
            if source.is_file():
                shutil.copy2(source, target / source.name)


if __name__ == "__main__":
    ext_modules, cmdclass = _cuda_extension_and_commands()
    setup(ext_modules=ext_modules, cmdclass={"build_py": BuildPyWithSources, **cmdclass})
