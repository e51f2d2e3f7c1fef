"""The CUDA kernel's Philox noise (csrc/philox.cuh) against philox.py, on a CPU.

philox.cuh is host and device code: compiled here as host code, the very functions the kernel calls
give the words of each counter and the normals of four consecutive elements starting anywhere
(a row of an aligned latent starts at a multiple of four: one call; any other start spans two).
Words must equal the reference bit for bit; normals agree within float32 rounding of log, sqrt, cos
and sin (the host's libm here, the device's on a GPU: test_gpu_backends.py).
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from pnp_kernels.ops.philox import PhiloxNoise, philox_bits, philox_normal

CSRC = Path(__file__).resolve().parents[2] / "csrc"
NVCC = shutil.which("nvcc")

# Reads "k0 k1 step iteration first" lines; prints the words of counter first / 4 and the normals
# of elements first .. first + 3.
PROGRAM = r"""
#include <cstdio>
#include "philox.cuh"
int main() {
  unsigned k0, k1, step, iteration, first;
  while (std::scanf("%u %u %u %u %u", &k0, &k1, &step, &iteration, &first) == 5) {
    const uint4 w = pnp_kernels::philox::words(first >> 2, step, iteration, k0, k1);
    const float4 n = pnp_kernels::philox::normals_from(first, step, iteration, k0, k1);
    std::printf("%u %u %u %u %a %a %a %a\n", w.x, w.y, w.z, w.w, n.x, n.y, n.z, n.w);
  }
  return 0;
}
"""

pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH")


@pytest.fixture(scope="module")
def philox_program(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("philox")
    (folder / "philox_host.cu").write_text(PROGRAM)
    command = [NVCC, "-std=c++17", "-O2", "-I", str(CSRC), str(folder / "philox_host.cu"), "-o", str(folder / "philox_host")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stderr}"
    return folder / "philox_host"


def run_program(program: Path, queries: list[tuple[int, int, int, int, int]]) -> list[list[str]]:
    text = "".join(" ".join(str(x) for x in query) + "\n" for query in queries)
    result = subprocess.run([str(program)], input=text, capture_output=True, text=True, timeout=60, check=True)
    return [line.split() for line in result.stdout.splitlines()]


def test_words_and_normals_of_any_four_elements_match_the_reference(philox_program):
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    seed = int(torch.randint(0, 2**62, (), generator=g))
    step, iteration = (int(x) for x in torch.randint(0, 2**32, (2,), generator=g))
    numel = 4 * 997 + 3  # the last call is partial, as in a (C, F, H, W) sample with F*H*W odd
    expected = philox_normal(PhiloxNoise((seed,), step, iteration), (numel,))[0]
    # Every start modulo four, at the beginning, the end and random places.
    firsts = [0, 1, 2, 3, numel - 4, numel - 5, numel - 6, numel - 7]
    firsts += [int(x) for x in torch.randint(0, numel - 4, (200,), generator=g)]
    k0, k1 = seed & 0xFFFFFFFF, seed >> 32
    rows = run_program(philox_program, [(k0, k1, step, iteration, first) for first in firsts])
    assert len(rows) == len(firsts)
    for first, row in zip(firsts, rows):
        counter = [torch.tensor(first // 4), torch.tensor(0), torch.tensor(step), torch.tensor(iteration)]
        assert [int(w) for w in row[:4]] == [int(w) for w in philox_bits(counter, (k0, k1))], f"words of {first}"
        normals = torch.tensor([float.fromhex(x) for x in row[4:]], dtype=torch.float32)
        torch.testing.assert_close(normals, expected[first : first + 4], rtol=2e-6, atol=2e-6,
                                   msg=lambda m: f"elements {first} .. {first + 3}: {m}")
