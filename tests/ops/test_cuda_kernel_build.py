"""The CUDA kernel as nvcc builds it for sm_90, checked on a CPU: every instance compiles without a
warning, none spills, each fits four 128-thread blocks per SM, and the aligned path moves rows
with 16-byte accesses (8-byte for 16-bit velocities). Values: test_gpu_backends.py on a GPU.

    nvcc -c csrc/pnp_update_bf16.cu -I csrc -O3 -std=c++17 -arch=sm_90 -Xptxas -v --keep
"""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from pnp_kernels.ops.cuda_backend import CSRC_SOURCES

CSRC = Path(__file__).resolve().parents[2] / "csrc"
NVCC = shutil.which("nvcc")
KERNEL_UNITS = [name for name in CSRC_SOURCES if name.endswith(".cu")]
# guidance (2) x noise source (3) x (no previous iteration, or one with p-norm 1 or 2)
INSTANCES_PER_UNIT = 2 * 3 * 3
# 65536 registers per SM / (4 blocks x 128 threads): at least 16 of 64 warps resident.
MAX_REGISTERS = 128
# torch.utils.cpp_extension builds every .cu with these: the kernel must not need the operators.
TORCH_FLAGS = ["-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
               "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__"]
NOISE_MODES = ("none", "tensor", "philox")  # update::NoiseMode, in order


@dataclass
class Instance:
    name: str  # mangled
    registers: int = -1
    stack_bytes: int = -1
    spill_stores: int = -1
    spill_loads: int = -1

    @property
    def flags(self) -> str:
        """The template arguments, readable: guided, previous iteration, noise source, p-norm."""
        found = re.search(r"Lb([01])ELb([01])ELNS0_9NoiseModeE(\d)ELi(\d)E", self.name)
        guided, prev, noise, p_norm = found.groups()
        return f"guided={guided} prev={prev} noise={NOISE_MODES[int(noise)]} p={p_norm}"


def parse_ptxas_report(text: str) -> list[Instance]:
    """The kernels of ``ptxas -v`` output, with their registers, stack and spills."""
    instances: list[Instance] = []
    for line in text.splitlines():
        if entry := re.search(r"Compiling entry function '(\w+)'", line):
            instances.append(Instance(entry.group(1)))
        elif props := re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line):
            if instances:
                instances[-1].stack_bytes, instances[-1].spill_stores, instances[-1].spill_loads = map(int, props.groups())
        elif used := re.search(r"Used (\d+) registers", line):
            if instances:
                instances[-1].registers = int(used.group(1))
    return instances


def ptx_entries(ptx: str) -> dict[str, str]:
    """Kernel name -> its PTX body."""
    parts = re.split(r"^\.visible \.entry (\w+)\(", ptx, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def compile_units(folder: Path, arch: str, units=KERNEL_UNITS) -> dict[str, tuple[list[Instance], str]]:
    """Compile each unit for ``arch`` (e.g. "sm_90") at once; unit -> (its instances, its PTX)."""
    processes = {}
    for unit in units:
        keep = folder / Path(unit).stem
        keep.mkdir()
        command = [NVCC, "-c", str(CSRC / unit), "-o", str(keep / "kernel.o"), "-I", str(CSRC), "-O3",
                   "-std=c++17", f"-arch={arch}", "-Xptxas", "-v", "--keep", "--keep-dir", str(keep),
                   "-Werror", "all-warnings", *TORCH_FLAGS]
        processes[unit] = (command, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    results = {}
    for unit, (command, process) in processes.items():
        output, _ = process.communicate(timeout=1800)
        assert process.returncode == 0, f"{' '.join(command)}\n{output[-5000:]}"
        (ptx,) = (folder / Path(unit).stem).glob("*.ptx")
        results[unit] = (parse_ptxas_report(output), ptx.read_text())
    return results


@pytest.fixture(scope="module")
def sm90_build(tmp_path_factory):
    if NVCC is None:
        pytest.skip("nvcc is not on PATH")
    return compile_units(tmp_path_factory.mktemp("sm90"), "sm_90")


pytestmark = pytest.mark.slow  # three translation units of 18 instances: a minute or two on two cores


@pytest.mark.parametrize("unit", KERNEL_UNITS)
def test_every_instance_compiles_without_spills(sm90_build, unit):
    instances, _ = sm90_build[unit]
    assert len(instances) == INSTANCES_PER_UNIT, [i.flags for i in instances]
    for instance in instances:
        assert instance.registers > 0, f"no ptxas report for {instance.flags}"
        assert instance.spill_stores == 0 and instance.spill_loads == 0, f"{unit} {instance.flags} spills: {instance}"
        assert instance.registers <= MAX_REGISTERS, f"{unit} {instance.flags}: {instance.registers} registers"


@pytest.mark.parametrize("unit", KERNEL_UNITS)
def test_aligned_path_uses_vector_accesses(sm90_build, unit):
    instances, ptx = sm90_build[unit]
    entries = ptx_entries(ptx)
    assert sorted(entries) == sorted(i.name for i in instances)
    velocity_load = "ld.global.nc.v4.f32" if "fp32" in unit else "ld.global.nc.v2.u32"
    for name, body in entries.items():
        flags = Instance(name).flags
        assert "ld.global.nc.v4.f32" in body, f"{unit} {flags}: z is not read 16 bytes at a time"
        assert velocity_load in body, f"{unit} {flags}: v is not read four elements at a time"
        assert "st.global.wb.v4.f32" in body, f"{unit} {flags}: z_next is not written 16 bytes at a time"
