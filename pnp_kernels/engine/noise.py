"""Where a run's perturbation noise comes from: a torch generator (or one per sample) in the published
draw order, or counter-based philox seeds; and the fingerprint the ranks compare."""
from __future__ import annotations

import torch

from ..config import PnPConfig
from ..ops.philox import PhiloxNoise, sample_seeds
from ..validators import check_int


def check_noise_source(config: PnPConfig, generator, seed, batch: int, device: torch.device):
    """The generator (or list of them) in generator mode, the per-sample seeds in philox mode."""
    if config.noise == "philox":
        if generator is not None:
            raise ValueError("generator is not used with noise='philox'; pass seed= instead")
        if seed is None:
            raise ValueError("noise='philox' needs seed= (an integer, or one integer per sample)")
        seeds = tuple(check_int(f"seed[{b}]", s) for b, s in enumerate(sample_seeds(seed, batch)))
        return PhiloxNoise(seeds, 0, 0).seeds  # as the noise reads them, so that each update trusts them
    if seed is not None:
        raise ValueError("seed= is for noise='philox'; with noise='generator' pass generator=")
    if generator is None:  # the global RNG of the latents' device, as torch.randn would use
        return torch.cuda.default_generators[device.index or 0] if device.type == "cuda" else torch.default_generator
    if isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, (list, tuple)):
        if len(generator) != batch:
            raise ValueError(f"generator list has {len(generator)} generators for a batch of {batch}")
        for g in generator:
            if not isinstance(g, torch.Generator):
                raise TypeError(f"generator list must hold torch.Generator objects, got {type(g).__name__}")
        return list(generator)
    raise TypeError(f"generator must be a torch.Generator or a list of them, got {type(generator).__name__}")


class GeneratorNoise:
    """Perturbation noise in the published order: one latent-shaped float32 ``randn`` per perturbation,
    in (step, iteration) order, filled in logical (B, C, F, H, W) order whatever the latents' strides.
    With a list, each sample draws from its own generator only while it iterates. A draw made for an
    iteration that then does not run is undone by restoring the generator state (``undo``), but only
    while nothing else has drawn from that generator since: engines sharing a generator must never
    hand out numbers another engine already used."""

    def __init__(self, generator: torch.Generator | list[torch.Generator], like: torch.Tensor):
        self.generator = generator
        self.buffer = torch.empty(like.shape, dtype=torch.float32, device=like.device)  # contiguous
        self.saved: list = []  # per generator: (state before the last draw, state after it)

    def draw(self, active: list[bool]) -> torch.Tensor:
        g = self.generator
        if isinstance(g, list):
            before = [gen.get_state() for gen in g]
            for b, (gen, on) in enumerate(zip(g, active)):
                if on:
                    _randn_into(self.buffer[b], gen)
                else:
                    self.buffer[b].zero_()
            self.saved = [(state, gen.get_state()) for state, gen in zip(before, g)]
        else:
            before = g.get_state()
            _randn_into(self.buffer, g)
            self.saved = [(before, g.get_state())]
        return self.buffer

    def undo(self, continuing: list[bool]) -> None:
        """Give the last draw back for the samples that will not use it."""
        g = self.generator
        if isinstance(g, list):
            for gen, saved, on in zip(g, self.saved, continuing):
                if not on:
                    _rewind(gen, *saved)
        elif not any(continuing):
            _rewind(g, *self.saved[0])
        self.saved = []


def _randn_into(buffer: torch.Tensor, generator: torch.Generator) -> None:
    """Fill the contiguous ``buffer`` with one ``randn`` draw, made where the generator lives (e.g. a CPU
    generator for CUDA latents draws on the CPU and is copied over)."""
    if generator.device == buffer.device:
        torch.randn(buffer.shape, generator=generator, out=buffer)
    else:
        buffer.copy_(torch.randn(buffer.shape, generator=generator, device=generator.device))


def _rewind(generator: torch.Generator, before: torch.Tensor, after: torch.Tensor) -> None:
    """Restore ``before`` unless someone drew from the generator after us (then the draw stays spent)."""
    if torch.equal(generator.get_state(), after):
        generator.set_state(before)


def noise_fingerprint(source) -> tuple[bytes, str]:
    """Bytes that identify the noise a run will draw, and what they are, for the cross-rank check."""
    if isinstance(source, tuple):  # philox seeds
        return repr(source).encode(), "philox seeds"
    generators = source if isinstance(source, list) else [source]
    return b"".join(bytes(g.get_state().tolist()) for g in generators), "generator states"
