"""enable_pnp on diffusers' MochiPipeline, whose scheduler inverts the sigmas (0 = noise, velocity x - eps)."""
import pytest
import torch
from diffusers import MochiPipeline

from pnp_kernels import Guided, PnPConfig, RefinePlan
from pnp_kernels.diffusers import disable_pnp, enable_pnp
from tests.diffusers import tiny_models
from tests.diffusers.model_calls import CallRecorder, ForwardCounter
from tests.naive import naive_pnp

STEPS, PLAN, SCALE = 3, "0-1:2", 3.0
SIZE = dict(height=32, width=48, num_frames=13)  # latents (12, 3, 4, 6)
LATENT = (12, 3, 4, 6)


def make():
    pipe = MochiPipeline(**tiny_models.mochi_components())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, batch=1, seed=0, guidance_scale=SCALE):
    g = torch.Generator().manual_seed(40)
    embeds, negative = torch.randn(batch, 7, 32, generator=g), torch.randn(batch, 7, 32, generator=g)
    mask = torch.ones(batch, 7, dtype=torch.long)
    return pipe(prompt_embeds=embeds, prompt_attention_mask=mask, negative_prompt_embeds=negative,
                negative_prompt_attention_mask=mask, num_inference_steps=STEPS, guidance_scale=guidance_scale,
                generator=torch.Generator().manual_seed(seed), output_type="latent", **SIZE).frames


def test_empty_plan_equals_stock():
    pipe = make()
    stock = run(pipe, batch=2, seed=1)
    enable_pnp(pipe, PnPConfig(plan="none"))
    diff = (run(pipe, batch=2, seed=1) - stock).abs().max().item()
    assert diff <= 1e-6, diff
    disable_pnp(pipe)
    assert torch.equal(run(pipe, batch=2, seed=1), stock)


@pytest.mark.parametrize("batch, guided, certain_stop", [(1, False, 0.17), (2, True, 0.08)])
def test_plan_equals_naive_loop_in_the_usual_convention(batch, guided, certain_stop):
    """The naive loop runs on sigma' = 1 - sigma with velocity -v (z = (1 - sigma') x + sigma' eps)."""
    pipe = make()
    enable_pnp(pipe, PnPConfig(plan=PLAN, tau=1.0, certain_stop=certain_stop))
    recorder = CallRecorder(pipe.transformer)
    counter = ForwardCounter(pipe.transformer.patch_embed)
    out = run(pipe, batch=batch, seed=2, guidance_scale=SCALE if guided else 1.0)
    recorder.remove()
    real_calls = counter.calls
    counter.remove()
    grid = pipe.scheduler.scheduler
    call = recorder.kwargs[0]

    def denoise(z, step, sigma):
        denoise.calls += 1
        copies = 2 if guided else 1
        t = grid.timesteps[step].expand(copies * z.shape[0])
        v = pipe.transformer(**{**call, "hidden_states": torch.cat([z] * copies), "timestep": t})[0].float()
        if not guided:
            return -v
        uncond, cond = (-v).chunk(2)
        return Guided(cond, uncond, SCALE)

    denoise.calls = 0
    g = torch.Generator().manual_seed(2)
    latents = torch.randn(batch, *LATENT, generator=g)
    expected = naive_pnp(denoise, latents, 1.0 - grid.sigmas, RefinePlan.parse(PLAN).ranges, 1.0, 1, certain_stop, g)
    diff = (out - expected).abs().max().item()
    assert diff <= 1e-5, diff
    assert real_calls == denoise.calls and pipe.pnp_stats.nfe == denoise.calls
    assert denoise.calls < STEPS + RefinePlan.parse(PLAN).extra_nfe(STEPS), "the case must exit early"
