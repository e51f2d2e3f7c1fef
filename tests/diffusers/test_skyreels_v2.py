"""enable_pnp on diffusers' SkyReelsV2Pipeline (text-to-video, UniPC scheduler: P&P steps Euler on its grid)."""
import pytest
import torch
from diffusers import SkyReelsV2Pipeline

from pnp_kernels import PnPConfig, RefinePlan
from pnp_kernels.diffusers import enable_pnp
from tests.diffusers import tiny_models
from tests.diffusers.model_calls import ForwardCounter
from tests.naive import naive_pnp
from tests.wan import tiny
from tests.wan.reference_loops import euler, sequential_denoiser

STEPS, PLAN, SCALE = 4, "1-2:2", 4.0
LATENT = (16, 3, 6, 4)


def make():
    pipe = SkyReelsV2Pipeline(**tiny_models.skyreels_v2_components())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, batch=1, seed=0):
    return pipe(prompt_embeds=tiny.prompt_embeds(batch, 4), negative_prompt_embeds=tiny.prompt_embeds(batch, 99),
                height=48, width=32, num_frames=9, num_inference_steps=STEPS, guidance_scale=SCALE,
                generator=torch.Generator().manual_seed(seed), output_type="latent").frames


def test_empty_plan_is_euler_on_the_unipc_grid():
    pipe = enable_pnp(make(), PnPConfig(plan="none"))
    out = run(pipe, batch=2, seed=1)
    grid = pipe.scheduler.scheduler
    latents = torch.randn(2, *LATENT, generator=torch.Generator().manual_seed(1))
    denoise = sequential_denoiser(pipe.transformer, grid.timesteps, tiny.prompt_embeds(2, 4), tiny.prompt_embeds(2, 99), SCALE)
    diff = (out - euler(denoise, latents, grid.sigmas)).abs().max().item()
    assert diff <= 1e-6, diff


@pytest.mark.parametrize("batch", [1, 2])
def test_plan_equals_naive_loop(batch):
    pipe = enable_pnp(make(), PnPConfig(plan=PLAN, tau=1.0, certain_stop=0.4))
    counter = ForwardCounter(pipe.transformer.patch_embedding)
    out = run(pipe, batch=batch, seed=2)
    real_calls = counter.calls
    counter.remove()
    grid = pipe.scheduler.scheduler
    g = torch.Generator().manual_seed(2)
    latents = torch.randn(batch, *LATENT, generator=g)
    calls = []
    guided = sequential_denoiser(pipe.transformer, grid.timesteps, tiny.prompt_embeds(batch, 4), tiny.prompt_embeds(batch, 99), SCALE)

    def denoise(z, step, sigma):
        calls.append(step)
        return guided(z, step, sigma)

    expected = naive_pnp(denoise, latents, grid.sigmas, RefinePlan.parse(PLAN).ranges, 1.0, 1, 0.4, g)
    diff = (out - expected).abs().max().item()
    assert diff <= 1e-5, diff
    assert real_calls == 2 * len(calls) == 2 * pipe.pnp_stats.nfe
    assert len(calls) < STEPS + RefinePlan.parse(PLAN).extra_nfe(STEPS), "step 2 must exit early"
