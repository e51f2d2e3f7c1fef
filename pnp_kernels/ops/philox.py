"""Counter-based N(0, 1) noise for the "philox" noise mode (docs/ALGORITHM.md), reference implementation.

The function, implemented identically by every backend (torch here, Triton and CUDA in-kernel):

    normal(seed_b, step, iteration, e) for sample b and element e of that sample
    (e = flat index into the contiguous (C, F, H, W) sample, 0 <= e < 2**32):

    key      k0 = seed_b mod 2**32,  k1 = (seed_b >> 32) mod 2**32   (seed_b taken mod 2**64)
    counter  c  = (e // 4, 0, step, iteration)                       (uint32 words)
    bits     (x0, x1, x2, x3) = Philox4x32-10(c, k)   [Salmon et al., SC'11]
             round:  hi0:lo0 = 0xD2511F53 * c0,  hi1:lo1 = 0xCD9E8D57 * c2   (32x32 -> 64 bit)
                     c = (hi1 ^ c1 ^ k0,  lo1,  hi0 ^ c3 ^ k1,  lo0)
                     k0 += 0x9E3779B9,  k1 += 0xBB67AE85                   (mod 2**32)
             10 rounds. One call serves the four elements 4j .. 4j+3: words (x0, x1) make the
             normals of elements 4j and 4j+1, words (x2, x3) those of 4j+2 and 4j+3.
    uniforms of a word pair (a, b):
             u1 = ((a >> 8) + 1) * 2**-24   in (0, 1]   (exact in float32)
             u2 =  (b >> 8)      * 2**-24   in [0, 1)
    normals  r = sqrt(-2 ln u1),  t = float32(2 pi) * u2,  all in float32 (Box-Muller);
             the even element of the pair gets r * cos(t), the odd one r * sin(t).

Backends agree within float32 rounding of log, sqrt, cos and sin (a few ulps of the radius).
A batch seeded with one integer ``seed`` uses ``seed_b = seed + b``, so a batch equals its samples
run one at a time with seeds seed, seed + 1, ... (batch invariance). The value depends only on
(seed_b, step, iteration, e): changing the refinement plan never changes any other draw.
"""
from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass
from typing import Sequence

import torch

from ..validators import check_int

PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
PHILOX_ROUNDS = 10
NORMALS_PER_CALL = 4  # every output word is used: two Box-Muller pairs, two normals each
TWO_PI_FLOAT32 = 6.2831854820251465  # float32(2 pi), the constant each backend multiplies u2 by
_MASK32 = 0xFFFFFFFF


def to_words(seeds: Sequence[int]) -> list[int]:
    """Seeds as [k0, k1, k0, k1, ...]: 32-bit key words, which fit an int64 op argument."""
    return [word for seed in seeds for word in (seed & _MASK32, seed >> 32)]


def from_words(words: Sequence[int]) -> tuple[int, ...]:
    """The seeds that ``to_words`` turned into ``words``."""
    return tuple(k0 | (k1 << 32) for k0, k1 in zip(words[0::2], words[1::2]))


@dataclass(frozen=True)
class PhiloxNoise:
    """Where the perturbation noise of one P&P iteration comes from in "philox" mode.

    seeds: one integer per sample (``sample_seeds`` builds them from a single seed).
    step, iteration: the outer step and the P&P iteration (>= 1) that the noise perturbs for.
    """

    seeds: tuple[int, ...]
    step: int
    iteration: int

    def __post_init__(self):
        seeds = tuple(check_int(f"philox seeds[{b}]", s) % 2**64 for b, s in enumerate(self.seeds))
        object.__setattr__(self, "seeds", seeds)
        for name in ("step", "iteration"):  # counter words
            object.__setattr__(self, name, check_int(f"philox {name}", getattr(self, name), 0, _MASK32))

    @classmethod
    def trusted(cls, seeds: tuple[int, ...], step: int, iteration: int) -> "PhiloxNoise":
        """Without the checks, for values known to be in range: the seeds of a ``PhiloxNoise`` a run
        built once, or those of a checked bundle flattened across the custom op."""
        noise = object.__new__(cls)
        object.__setattr__(noise, "seeds", seeds)
        object.__setattr__(noise, "step", step)
        object.__setattr__(noise, "iteration", iteration)
        return noise

    def key_table(self, device) -> torch.Tensor:
        """(B, 2) int64 tensor of (k0, k1) per sample, for kernels. Cached per (seeds, device): building
        it anew each iteration would be a host-to-device copy, which synchronises on CUDA."""
        return _key_table(self.seeds, device if isinstance(device, torch.device) else torch.device(device))


@functools.lru_cache(maxsize=32)
def _key_table(seeds: tuple[int, ...], device: torch.device) -> torch.Tensor:
    return torch.tensor(to_words(seeds), dtype=torch.int64, device=device).view(len(seeds), 2)


def sample_seeds(seed: int | Sequence[int], batch: int) -> tuple[int, ...]:
    """Per-sample seeds: ``seed + b`` for one integer, or the given sequence (one per sample)."""
    if isinstance(seed, bool):
        raise TypeError(f"seed must be an integer or a sequence of integers, got {seed!r}")
    if isinstance(seed, numbers.Integral):
        return tuple(int(seed) + b for b in range(batch))
    if not isinstance(seed, Sequence):
        raise TypeError(f"seed must be an integer or a sequence of integers, got {seed!r}")
    if len(seed) != batch:
        raise ValueError(f"seed has {len(seed)} entries but the batch has {batch} samples")
    return tuple(seed)


# Seeds of the m-th independent noise stream of one run (e.g. the audio latents of a joint audio-video
# model): the per-sample seeds plus m * 2**32, so that no stream repeats another's noise.
STREAM_SEED_OFFSET = 2**32


def stream_seeds(seed: int | Sequence[int], batch: int, stream: int) -> tuple[int, ...]:
    """Per-sample seeds (``sample_seeds``) of noise stream ``stream`` (0 = the seeds themselves), modulo 2**64."""
    check_int("stream", stream, 0)
    return tuple((s + stream * STREAM_SEED_OFFSET) % 2**64 for s in sample_seeds(seed, batch))


def _mulhilo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # int64 multiplication wraps modulo 2**64, which still holds the whole 64-bit product of two
    # 32-bit values; shifting and masking recovers both halves.
    product = b * a
    return (product >> 32) & _MASK32, product & _MASK32


def philox_bits(counter: Sequence[torch.Tensor], key: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    """Philox4x32-10 on int64 tensors holding uint32 words; returns (x0, x1, x2, x3)."""
    c0, c1, c2, c3 = (torch.as_tensor(c, dtype=torch.int64) & _MASK32 for c in counter)
    k0, k1 = key
    for _ in range(PHILOX_ROUNDS):
        hi0, lo0 = _mulhilo(PHILOX_M0, c0)
        hi1, lo1 = _mulhilo(PHILOX_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = (k0 + PHILOX_W0) & _MASK32
        k1 = (k1 + PHILOX_W1) & _MASK32
    return c0, c1, c2, c3


def box_muller(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two float32 N(0, 1) of the word pair (a, b) (int64 tensors holding uint32): (r cos t, r sin t)."""
    u1 = ((a >> 8) + 1).to(torch.float32) * 2.0**-24
    u2 = (b >> 8).to(torch.float32) * 2.0**-24
    radius = torch.sqrt(-2.0 * torch.log(u1))
    angle = u2 * TWO_PI_FLOAT32
    return radius * torch.cos(angle), radius * torch.sin(angle)


def philox_normal(noise: PhiloxNoise, sample_shape: Sequence[int], device=None) -> torch.Tensor:
    """The (B, *sample_shape) float32 noise tensor that ``noise`` stands for."""
    numel = math.prod(sample_shape)
    if numel > 2**32:
        raise ValueError(f"a sample of shape {tuple(sample_shape)} has more than 2**32 elements")
    calls = -(-numel // NORMALS_PER_CALL)
    counter = torch.arange(calls, dtype=torch.int64, device=device)
    zero = torch.zeros((), dtype=torch.int64, device=device)
    out = []
    for seed in noise.seeds:
        x0, x1, x2, x3 = philox_bits(
            (counter, zero, zero + noise.step, zero + noise.iteration), (seed & _MASK32, seed >> 32)
        )
        # (calls, 4): the normals of elements 4j, 4j+1, 4j+2, 4j+3 in a row.
        normals = torch.stack([*box_muller(x0, x1), *box_muller(x2, x3)], dim=1)
        out.append(normals.flatten()[:numel].view(*sample_shape))
    return torch.stack(out)
