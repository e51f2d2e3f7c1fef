"""The P&P sampler driven as ComfyUI drives a sampler function (fake_comfy.KSAMPLER), compared with
pnp_sample on the same model."""
import random
import sys

import pytest
import torch

from pnp_kernels import PnPConfig, RefinePlan, pnp_sample
from pnp_kernels.comfyui.nodes import PnPSamplerNode
from pnp_kernels.ops.philox import stream_seeds

from .fake_comfy import EPS, IMG_TO_IMG_FLOW, BaseModel, Interrupted, X0Model, comfy_modules, start_latents

SIGMAS = torch.tensor([1.0, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])


def velocity_model(channels, seed):
    """v(z, sigma) of a smooth, channel-mixing toy model; sigma holds one value per sample."""
    weight = torch.randn(channels, channels, generator=torch.Generator().manual_seed(seed)) / channels

    def velocity(z, sigma):
        s = sigma.view(-1, *[1] * (z.dim() - 1))
        return torch.einsum("ij,bj...->bi...", weight, torch.tanh(z)) * (1 + s) + 0.3 * z

    return velocity


def denoiser(velocity):
    """What a ComfyUI model returns for a flow-matching model: x0 = x - sigma v."""
    def x0_of(x, sigma):
        return x - sigma.view(-1, *[1] * (x.dim() - 1)) * velocity(x, sigma)
    return x0_of


def reference_denoise(x0_of, sigmas):
    """pnp_sample's denoiser from the same x0 model, with this test's own x0 -> v conversion."""
    def denoise(z, step, sigma):
        return (z - x0_of(z, sigmas[step] * z.new_ones(z.shape[0]))) / sigma
    return denoise


def node_sampler(plan, tau=0.25, norm="L1 (published)", stop=0.999):
    (sampler,) = PnPSamplerNode().get_sampler(tau, norm, stop, plan=RefinePlan.parse(plan))
    return sampler


def run(sampler, x0_of, noise, sigmas, seed, latent_shapes=None, callback=None):
    model = X0Model(x0_of, BaseModel(latent_shapes=latent_shapes))
    extra_args = {"model_options": {}, "seed": seed, "denoise_mask": None}
    return sampler.sample(model, sigmas, extra_args, callback, noise), model


def expected(x0_of, noise, sigmas, plan, seed, tau=0.25):
    config = PnPConfig(plan=plan, tau=tau, noise="philox")
    result = pnp_sample(reference_denoise(x0_of, sigmas), start_latents(noise, sigmas), sigmas, config, seed=seed, group=None)
    return result.latents / (1.0 - sigmas[-1]), result.stats  # ComfyUI's inverse noise scaling


@pytest.mark.parametrize("shape, plan, tau", [
    ((1, 4, 3, 6, 5), "published", 0.25),
    ((3, 5, 2, 3, 7), "1-3:2,5:1", 0.0),
    ((2, 3, 4, 5, 3), "f0.1-0.5:3", 0.05),  # some samples leave their steps early
])
def test_equals_pnp_sample_on_the_same_model(comfy, shape, plan, tau):
    velocity = velocity_model(shape[1], seed=shape[0])
    x0_of = denoiser(velocity)
    noise = torch.randn(shape)
    seed = random.getrandbits(64)  # ComfyUI noise seeds use all 64 bits
    ours, model = run(node_sampler(plan, tau), x0_of, noise, SIGMAS, seed)
    reference, stats = expected(x0_of, noise, SIGMAS, plan, seed, tau)
    assert torch.equal(ours, reference)
    assert len(model.sigmas_seen) == stats.nfe
    if tau == 0.0:  # and it samples the velocity model itself, up to the rounding of x0 = x - sigma v
        direct = pnp_sample(lambda z, step, s: velocity(z, SIGMAS[step] * z.new_ones(z.shape[0])), noise, SIGMAS,
                            PnPConfig(plan=plan, tau=tau, noise="philox"), seed=seed, group=None)
        assert torch.allclose(ours, direct.latents, atol=1e-4)  # (a threshold would amplify the rounding)


def test_early_exit_saves_the_model_calls(comfy):
    x0_of = denoiser(velocity_model(4, seed=1))
    noise = torch.randn(2, 4, 2, 5, 4)
    ours, model = run(node_sampler("0-9:3", tau=10.0), x0_of, noise, SIGMAS, seed=5)
    reference, stats = expected(x0_of, noise, SIGMAS, "0-9:3", 5, tau=10.0)
    assert torch.equal(ours, reference)
    assert stats.early_exits > 0 and len(model.sigmas_seen) == stats.nfe < 11 + 30


def test_empty_plan_is_plain_euler(comfy):
    x0_of = denoiser(velocity_model(3, seed=2))
    noise = torch.randn(2, 3, 3, 4, 5)
    ours, _ = run(node_sampler("none"), x0_of, noise, SIGMAS, seed=0)
    x = start_latents(noise, SIGMAS)
    for s, s_next in zip(SIGMAS[:-1], SIGMAS[1:]):  # ComfyUI's Euler sampler
        d = (x - x0_of(x, s * x.new_ones(x.shape[0]))) / s
        x = x + d * (s_next - s)
    assert torch.equal(ours, x)


def test_split_sigmas_refine_by_sigma(comfy):
    """The low half of a split schedule: a sigma plan refines the steps inside its sigma range."""
    low = SIGMAS[4:]  # 0.7 ... 0
    x0_of = denoiser(velocity_model(3, seed=3))
    noise = torch.randn(1, 3, 2, 4, 4)
    plan = "s0.65-0.35:2"
    ours, model = run(node_sampler(plan, tau=0.0), x0_of, noise, low, seed=9)
    reference, _ = expected(x0_of, noise, low, plan, 9, tau=0.0)
    assert torch.equal(ours, reference)
    calls = {s: model.sigmas_seen.count(s) for s in model.sigmas_seen}
    assert calls == {s: 3 if 0.65 >= s > 0.35 else 1 for s in low[:-1].tolist()}


def test_image_latents(comfy):
    x0_of = denoiser(velocity_model(4, seed=4))
    noise = torch.randn(2, 4, 6, 5)  # (B, C, H, W)
    ours, _ = run(node_sampler("2-4:2"), x0_of, noise, SIGMAS, seed=3)
    reference, _ = expected(x0_of, noise.unsqueeze(2), SIGMAS, "2-4:2", 3)
    assert ours.shape == noise.shape and torch.equal(ours, reference.squeeze(2))


def test_packed_audio_and_video_run_one_engine_each(comfy):
    """LTX-2 in ComfyUI: video and audio packed into (B, 1, N); each modality has its own certain masks,
    early exits and noise stream, so with a model that treats them apart, the joint run equals each
    modality sampled alone."""
    batch, video_shape, audio_shape = 2, (4, 3, 4, 5), (2, 7, 3)
    video_v, audio_v = velocity_model(4, seed=5), velocity_model(2, seed=6)
    sizes = [4 * 3 * 4 * 5, 2 * 7 * 3]

    def x0_of(x, sigma):
        video, audio = torch.split(x, sizes, dim=2)
        video, audio = video.reshape(batch, *video_shape), audio.reshape(batch, *audio_shape)
        outs = [denoiser(video_v)(video, sigma), denoiser(audio_v)(audio, sigma)]
        return torch.cat([out.reshape(batch, 1, -1) for out in outs], dim=2)

    video, audio = torch.randn(batch, *video_shape), torch.randn(batch, *audio_shape)
    noise = torch.cat([video.reshape(batch, 1, -1), audio.reshape(batch, 1, -1)], dim=2)
    plan, seed = "1-6:2", 11
    shapes = [(batch, *video_shape), (batch, *audio_shape)]
    ours, _ = run(node_sampler(plan, tau=0.1), x0_of, noise, SIGMAS, seed, latent_shapes=shapes)
    video_ref, _ = expected(denoiser(video_v), video, SIGMAS, plan, seed, tau=0.1)
    audio_ref, _ = expected(denoiser(audio_v), audio.unsqueeze(2), SIGMAS, plan, list(stream_seeds(seed, batch, 1)), tau=0.1)
    assert torch.equal(ours, torch.cat([video_ref.reshape(batch, 1, -1), audio_ref.reshape(batch, 1, -1)], dim=2))


def test_callback_once_per_step_with_the_denoised_sample(comfy):
    x0_of = denoiser(velocity_model(3, seed=7))
    outputs = []

    def recording(x, sigma):
        outputs.append(x0_of(x, sigma))
        return outputs[-1]

    seen = []
    run(node_sampler("1-2:2"), recording, torch.randn(1, 3, 2, 3, 3), SIGMAS, seed=1,
        callback=lambda step, x0, x, total: seen.append((step, x0, x.clone(), total)))
    assert [s[0] for s in seen] == list(range(11)) and {s[3] for s in seen} == {11}
    calls_per_step = [1, 3, 3] + [1] * 8
    last_call = [sum(calls_per_step[: i + 1]) - 1 for i in range(11)]
    assert all(x0 is outputs[last_call[step]] for step, x0, _, _ in seen)


def test_interruption_is_checked_before_every_model_call(monkeypatch):
    for name, module in comfy_modules(interrupt_after=4).items():
        monkeypatch.setitem(sys.modules, name, module)
    x0_of, calls = denoiser(velocity_model(3, seed=8)), []

    def counting(x, sigma):
        calls.append(float(sigma[0]))
        return x0_of(x, sigma)

    with pytest.raises(Interrupted):  # step 0 makes 4 calls (1 + 3 refined), each checked; the 5th check raises
        run(node_sampler("0-3:3", tau=0.0), counting, torch.randn(1, 3, 2, 3, 3), SIGMAS, seed=1)
    assert sys.modules["comfy.model_management"].checks == 5 and calls == [1.0] * 4


@pytest.mark.parametrize("prediction", [EPS, IMG_TO_IMG_FLOW])
def test_refuses_models_that_are_not_flow_matching(comfy, prediction):
    model = X0Model(denoiser(velocity_model(3, 0)), BaseModel(prediction=prediction))
    with pytest.raises(ValueError, match="needs a flow-matching model .* samples with .*" + prediction.__name__):
        node_sampler("published").sample(model, SIGMAS, {"seed": 0}, None, torch.randn(1, 3, 1, 2, 2))


def test_refuses_sigmas_it_cannot_step(comfy):
    x0_of = denoiser(velocity_model(3, 0))
    with pytest.raises(ValueError, match=r"sigmas\[2\] = 0 starts a step"):
        run(node_sampler("none"), x0_of, torch.randn(1, 3, 1, 2, 2), torch.tensor([1.0, 0.5, 0.0, 0.0]), seed=0)
    with pytest.raises(ValueError, match="sigma"):
        run(node_sampler("none"), x0_of, torch.randn(1, 3, 1, 2, 2), torch.tensor([14.6, 7.0, 0.0]), seed=0)
