"""Counter-based noise: Triton equals the torch reference bit for bit; the reference is N(0, 1).

The statistical checks use fixed seeds: they are properties of the function, so a fixed sample
makes them deterministic (no flaky reruns) while a broken generator still fails them.
"""
from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from pnp_kernels.ops.philox import PhiloxNoise, bits_to_normal, philox_bits, philox_normal

N_DRAWS = 2**20  # >= 10**6 draws per statistic


def _interpreter_on() -> bool:
    import triton

    return bool(triton.knobs.runtime.interpret)


DEVICES = [
    pytest.param("cpu", marks=pytest.mark.skipif(not _interpreter_on(), reason="needs TRITON_INTERPRET=1 on CPU")),
    pytest.param("cuda", marks=pytest.mark.gpu),
]


def reference_words(noise: PhiloxNoise, numel: int) -> tuple[torch.Tensor, torch.Tensor]:
    element = torch.arange(numel, dtype=torch.int64)
    zero = torch.zeros((), dtype=torch.int64)
    words = [
        philox_bits((element, zero, zero + noise.step, zero + noise.iteration), (s & 0xFFFFFFFF, s >> 32))[:2]
        for s in noise.seeds
    ]
    return torch.stack([w[0] for w in words]), torch.stack([w[1] for w in words])


@pytest.mark.parametrize("device", DEVICES)
def test_triton_words_equal_reference(device):
    from pnp_kernels.ops.triton_launch import triton_philox

    fresh = int(torch.randint(0, 2**63 - 1, ()))
    # Edge keys (0, all ones, a high word only) and edge counters next to fresh ones.
    noise = PhiloxNoise((0, 2**64 - 1, 2**32, fresh), step=2**32 - 1, iteration=int(torch.randint(1, 2**31, ())))
    shape = (3, 7, 5, 11)
    x0, x1, normal = triton_philox(noise, shape, device)
    ref_x0, ref_x1 = reference_words(noise, math.prod(shape))
    assert torch.equal(x0.cpu().flatten(1), ref_x0)
    assert torch.equal(x1.cpu().flatten(1), ref_x1)
    torch.testing.assert_close(normal.cpu(), philox_normal(noise, shape), atol=1e-6, rtol=0)


def test_reference_words_match_published_test_vectors():
    # Known-answer vectors of Philox4x32-10 (Random123 kat_vectors): counter, key -> output.
    cases = [
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
         (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
    ]
    for counter, key, expected in cases:
        words = philox_bits([torch.tensor(c) for c in counter], key)
        assert tuple(int(w) for w in words) == expected


def draws(seed: int, step: int = 3, iteration: int = 1, numel: int = N_DRAWS) -> torch.Tensor:
    return philox_normal(PhiloxNoise((seed,), step, iteration), (numel,))[0].double()


def test_reference_is_standard_normal():
    x = draws(seed=12345)
    n = x.numel()
    assert abs(x.mean().item()) < 5 / math.sqrt(n)
    assert abs(x.var().item() - 1.0) < 5 * math.sqrt(2 / n)
    assert stats.kstest(x.numpy(), "norm").pvalue > 1e-3
    assert stats.normaltest(x.numpy()).pvalue > 1e-3  # skewness and kurtosis
    tail = (x.abs() > 3).double().mean().item()
    assert abs(tail - 0.0026998) < 5 * math.sqrt(0.0027 / n)


@pytest.mark.parametrize(
    "other",
    [
        dict(seed=12346),  # the next sample of a batch
        dict(step=4),
        dict(iteration=2),
    ],
    ids=["sample", "step", "iteration"],
)
def test_no_correlation_across_counters(other):
    base = dict(seed=12345, step=3, iteration=1)
    a, b = draws(**base), draws(**{**base, **other})
    limit = 5 / math.sqrt(a.numel())
    assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1].item()) < limit
    assert not torch.equal(a, b)


def test_no_correlation_between_neighbouring_elements():
    x = draws(seed=777)
    limit = 5 / math.sqrt(x.numel())
    for lag in (1, 2, 16):
        assert abs(torch.corrcoef(torch.stack([x[:-lag], x[lag:]]))[0, 1].item()) < limit, lag
    # Nor between the squares (a dependence that a linear correlation would miss).
    sq = x * x
    assert abs(torch.corrcoef(torch.stack([sq[:-1], sq[1:]]))[0, 1].item()) < limit


def test_uniforms_cover_their_ranges_without_zero_log():
    x0 = torch.tensor([0, 0xFFFFFFFF, 0x000000FF], dtype=torch.int64)
    x1 = torch.tensor([0, 0xFFFFFFFF, 0x80000000], dtype=torch.int64)
    normal = bits_to_normal(x0, x1)
    assert torch.isfinite(normal).all()
    assert normal[1].item() == 0.0  # u1 = 1 -> radius 0
    # u1 = 2**-24 (largest radius), u2 = 0 -> cos = 1
    assert normal[0].item() == pytest.approx(math.sqrt(-2 * math.log(2.0**-24)), rel=1e-6)
