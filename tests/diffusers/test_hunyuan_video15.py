"""enable_pnp on diffusers' HunyuanVideo15Pipeline (guidance through its guider; condition channels in the input)."""
import pytest
import torch
from diffusers import HunyuanVideo15Pipeline

from pnp_kernels import Guided, PnPConfig, RefinePlan
from pnp_kernels.diffusers import enable_pnp
from tests.diffusers import tiny_models
from tests.diffusers.model_calls import CallRecorder, ForwardCounter
from tests.naive import naive_pnp

STEPS, PLAN, SCALE = 3, "0-1:2", 3.0
SIZE = dict(height=16, width=24, num_frames=9)  # latents (4, 5, 4, 6)
LATENT = (4, 5, 4, 6)


def make(guidance_scale):
    pipe = HunyuanVideo15Pipeline(**tiny_models.hunyuan15_components(guidance_scale))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, batch=1, seed=0):
    text = {f"prompt_{k}": v for k, v in tiny_models.hunyuan15_text(batch, 3).items()}
    text.update({f"negative_prompt_{k}": v for k, v in tiny_models.hunyuan15_text(batch, 9).items()})
    return pipe(num_inference_steps=STEPS, generator=torch.Generator().manual_seed(seed), output_type="latent",
                **SIZE, **text).frames


def test_empty_plan_equals_stock():
    pipe = make(SCALE)
    stock = run(pipe, seed=1)
    enable_pnp(pipe, PnPConfig(plan="none"))
    diff = (run(pipe, seed=1) - stock).abs().max().item()
    assert diff <= 1e-6, diff


def replayed(model, kwargs, timesteps):
    """The transformer called as the pipeline called it, with z in place of the noisy channels."""
    channels = LATENT[0]

    def velocity(z, step, call):
        hidden = torch.cat([z.to(model.dtype), call["hidden_states"][:, channels:]], dim=1)
        t = timesteps[step].expand(z.shape[0]).to(model.dtype)
        return model(**{**call, "hidden_states": hidden, "timestep": t})[0].float()

    def denoise(z, step, sigma):
        denoise.calls += 1
        if len(kwargs) == 1:
            return velocity(z, step, kwargs[0])
        return Guided(velocity(z, step, kwargs[0]), velocity(z, step, kwargs[1]), SCALE)

    denoise.calls = 0
    return denoise


@pytest.mark.parametrize("batch, guided, certain_stop", [(1, False, 0.3), (2, True, 0.26)])
def test_plan_equals_naive_loop(batch, guided, certain_stop):
    pipe = make(SCALE if guided else 1.0)
    enable_pnp(pipe, PnPConfig(plan=PLAN, tau=1.0, certain_stop=certain_stop))
    recorder = CallRecorder(pipe.transformer, limit=2 if guided else 1)
    counter = ForwardCounter(pipe.transformer.x_embedder)
    out = run(pipe, batch=batch, seed=2)
    recorder.remove()
    real_calls = counter.calls
    counter.remove()
    grid = pipe.scheduler.scheduler
    g = torch.Generator().manual_seed(2)
    latents = torch.randn(batch, *LATENT, generator=g)
    denoise = replayed(pipe.transformer, recorder.kwargs, grid.timesteps)
    expected = naive_pnp(denoise, latents, grid.sigmas, RefinePlan.parse(PLAN).ranges, 1.0, 1, certain_stop, g)
    diff = (out - expected).abs().max().item()
    assert diff <= 1e-5, diff
    assert real_calls == denoise.calls * (2 if guided else 1) and pipe.pnp_stats.nfe == denoise.calls
    assert denoise.calls < STEPS + RefinePlan.parse(PLAN).extra_nfe(STEPS), "the case must exit early"
