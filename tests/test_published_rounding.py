"""PnPConfig(published_rounding=True) against a test-local port of the published loop on a tiny bf16
model (docs/ALGORITHM.md, "What differs from the published code")."""
import pytest
import torch

from pnp_kernels import PnPConfig, pnp_sample

SHAPE = (1, 4, 3, 6, 5)  # B = 1: the published loop handles one sample
PLAN = [(1, 3, 2), (4, 6, 1)]
TAU, CERTAIN_STOP, GUIDANCE = 1.0, 0.999, 3.0  # tau sized to this model: masks partly certain


class TinyVideoModel(torch.nn.Module):
    """A bf16 stand-in for a video transformer: conditional and unconditional velocities."""

    def __init__(self, channels: int):
        super().__init__()
        self.mix = torch.nn.Conv3d(channels, 12, 3, padding=1)
        self.cond = torch.nn.Conv3d(12, channels, 1)
        self.uncond = torch.nn.Conv3d(12, channels, 1)

    def forward(self, z: torch.Tensor, sigma: float):
        hidden = torch.tanh(self.mix(z)) * (1.0 + sigma)
        return self.cond(hidden), self.uncond(hidden)


def make_denoiser(seed: int):
    torch.manual_seed(seed)
    model = TinyVideoModel(SHAPE[1]).to(torch.bfloat16)

    @torch.no_grad()
    def denoise(z, step, sigma):
        """Guided velocity in bf16, combined in the model dtype as the published pipelines do."""
        cond, uncond = model(z.to(torch.bfloat16), float(sigma))
        return uncond + GUIDANCE * (cond - uncond)

    return denoise


def published_loop(denoise, latents, sigmas, generator):
    """The published P&P loop, ported from its description: a float32 state, 0-dim float32 sigmas
    multiplying the bf16 velocity (so both products are rounded to bf16), one float32 randn of the
    latent shape per perturbation, union mask, whole-run early exit (one sample)."""
    z = latents.clone()
    channels = z.shape[1]
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        k_max = next((k for first, last, k in PLAN if first <= i <= last), 0)
        z_in, prev = z, None
        for k in range(k_max + 1):
            if k > 0:
                z_in = (1 - s) * prev[1] + s * torch.randn(z.shape, generator=generator, dtype=torch.float32)
            v = denoise(z_in, i, s)
            x0 = z_in - s * v
            z_next = z_in + (s_next - s) * v
            certain = None
            if prev is not None:
                uncertainty = (x0 - prev[1]).abs().sum(dim=1) / channels
                certain = uncertainty < TAU
                if prev[0] is not None:
                    certain = certain | prev[0]
                x0 = torch.where(certain.unsqueeze(1), prev[1], x0)
                z_next = torch.where(certain.unsqueeze(1), prev[2], z_next)
            prev = (certain, x0, z_next)
            if certain is not None and certain.float().mean() > CERTAIN_STOP:
                break
        z = prev[2]
    return z


def shifted_sigmas(num_steps: int, shift: float = 3.0) -> torch.Tensor:
    t = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)
    return (shift * t / (1 + (shift - 1) * t)).float()


def run(denoise, latents, sigmas, generator, tau=TAU, **kwargs):
    cfg = PnPConfig(plan=PLAN, tau=tau, certain_stop=CERTAIN_STOP, **kwargs)
    return pnp_sample(denoise, latents, sigmas, cfg, generator=generator, capture_uncertainty=True)


@pytest.mark.parametrize("seed", [0, 1])
def test_published_rounding_equals_the_published_loop(seed):
    denoise = make_denoiser(seed)
    sigmas = shifted_sigmas(10)
    generator = torch.Generator().manual_seed(100 + seed)
    latents = torch.randn(SHAPE, generator=generator)  # the published order: latents first
    state = generator.get_state()
    published = published_loop(denoise, latents, sigmas, generator)
    published_draws_end = generator.get_state()
    generator.set_state(state)
    ours = run(denoise, latents, sigmas, generator, published_rounding=True)

    assert ours.stats.backend == "torch"  # the only backend that implements the rounding
    assert any(0 < f < 1 for s in ours.stats.steps for f in sum(s.certain_fractions, [])), "masks must matter"
    assert (ours.latents - published).abs().max().item() == 0.0
    assert torch.equal(generator.get_state(), published_draws_end)  # the same draws, early exits included


def test_size_of_the_float32_products_difference():
    denoise = make_denoiser(2)
    sigmas = shifted_sigmas(10)
    latents = torch.randn(SHAPE, generator=torch.Generator().manual_seed(7))

    def difference(tau):
        rounded, exact = (run(denoise, latents, sigmas, torch.Generator().manual_seed(1), tau=tau, published_rounding=r)
                          for r in (True, False))
        flips = sum(int((a["certain"] != b["certain"]).sum())
                    for a, b in zip(rounded.stats.uncertainty_maps, exact.stats.uncertainty_maps))
        return (rounded.latents - exact.latents).abs().max().item(), flips

    # Rounding alone (tau = 0: no certain mask): about 1e-2 max abs after 10 steps.
    plain, no_flips = difference(0.0)
    # With the mask, the hard threshold turns that rounding into a different certain/uncertain choice at
    # a few positions, and those move by about their uncertainty: much more than the rounding itself.
    masked, flips = difference(TAU)
    print(f"fp32 vs published products, max abs: {plain:.2e} without masks; {masked:.2e} with masks ({flips} flips)")
    assert 1e-3 < plain < 5e-2 and no_flips == 0
    assert flips > 0 and masked > plain
