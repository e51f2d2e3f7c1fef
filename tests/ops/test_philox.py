"""Counter-based noise, reference side: Philox words, the op-schema word layout, and N(0, 1) draws.
(The kernels against this reference: test_triton.py and test_gpu_backends.py.)

The statistical checks use fixed seeds: they are properties of the function, so a fixed sample
makes them deterministic (no flaky reruns) while a broken generator still fails them.
"""
from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from pnp_kernels.ops.philox import PhiloxNoise, box_muller, from_words, philox_bits, philox_normal, stream_seeds, to_words

N_DRAWS = 2**20  # >= 10**6 draws per statistic


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
    a = torch.tensor([0, 0xFFFFFFFF, 0x000000FF], dtype=torch.int64)
    b = torch.tensor([0, 0xFFFFFFFF, 0x80000000], dtype=torch.int64)
    cosine, sine = box_muller(a, b)
    assert torch.isfinite(cosine).all() and torch.isfinite(sine).all()
    assert cosine[1].item() == 0.0 and sine[1].item() == 0.0  # u1 = 1 -> radius 0
    # u1 = 2**-24 (largest radius), u2 = 0 -> (r, 0)
    assert cosine[0].item() == pytest.approx(math.sqrt(-2 * math.log(2.0**-24)), rel=1e-6)
    assert sine[0].item() == 0.0


def test_every_word_makes_one_normal():
    # Element 4j + i takes its normal from call j: pair (x0, x1) for i = 0, 1, pair (x2, x3) for 2, 3.
    noise = PhiloxNoise((int(torch.randint(0, 2**62, ())),), step=5, iteration=2)
    numel = 4 * 9 + 3
    normals = philox_normal(noise, (numel,))[0]
    counter = torch.arange(10)
    zero = torch.zeros((), dtype=torch.int64)
    seed = noise.seeds[0]
    x0, x1, x2, x3 = philox_bits((counter, zero, zero + 5, zero + 2), (seed & 0xFFFFFFFF, seed >> 32))
    by_hand = torch.stack([*box_muller(x0, x1), *box_muller(x2, x3)], dim=1).flatten()[:numel]
    assert torch.equal(normals, by_hand)
    c, s = box_muller(x0[:1], x1[:1])
    assert torch.equal(normals[:2], torch.cat([c, s]))


def test_seed_words_round_trip():
    seeds = (0, 1, 2**32, 2**64 - 1, int(torch.randint(0, 2**63 - 1, ())))
    words = to_words(seeds)
    assert all(0 <= w < 2**32 for w in words) and len(words) == 2 * len(seeds)
    assert words[2:4] == [1, 0] and words[4:6] == [0, 1]  # low word first
    assert from_words(words) == seeds


def test_sine_and_cosine_halves_are_independent():
    x = draws(seed=4242)
    even, odd = x[0::2], x[1::2]  # the two normals of one Box-Muller pair
    limit = 5 / math.sqrt(even.numel())
    assert abs(torch.corrcoef(torch.stack([even, odd]))[0, 1].item()) < limit
    assert abs(torch.corrcoef(torch.stack([even * even, odd * odd]))[0, 1].item()) < limit


@pytest.mark.parametrize("seeds, step, iteration, error, words", [
    ((1, True), 1, 1, TypeError, ["seeds[1]", "True"]),
    ((1.0,), 1, 1, TypeError, ["seeds[0]", "1.0"]),
    ((1,), -1, 1, ValueError, ["step", "-1"]),
    ((1,), 1, 2**32, ValueError, ["iteration", str(2**32)]),
])
def test_bad_philox_noise_is_named(seeds, step, iteration, error, words):
    with pytest.raises(error) as info:
        PhiloxNoise(seeds, step, iteration)
    for word in words:
        assert word in str(info.value)


def test_stream_seeds_offset_each_stream_by_two_to_the_32():
    seed = 2**64 - 2  # the largest seeds wrap around 2**64 instead of growing past a philox key
    assert stream_seeds(seed, 3, 0) == (2**64 - 2, 2**64 - 1, 0)
    assert stream_seeds([5, 7], 2, 2) == (5 + 2 * 2**32, 7 + 2 * 2**32)
    with pytest.raises(ValueError, match="stream must be >= 0"):
        stream_seeds(1, 1, -1)
