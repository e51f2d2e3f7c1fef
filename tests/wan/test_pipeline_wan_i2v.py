"""WanImageToVideoPnPPipeline: Wan 2.1 I2V (CLIP), Wan 2.2 I2V-A14B (36 channels), TI2V-5B image-to-video."""
import pytest
import torch

pytest.importorskip("diffusers", reason="needs diffusers (pip install 'pnp-kernels[wan]')")

from pnp_kernels import PnPConfig
from pnp_kernels.wan import WanImageToVideoPnPPipeline
from tests.naive import naive_pnp
from tests.wan import tiny
from tests.wan.reference_loops import sequential_denoiser

FRAMES, STEPS, SCALE, PLAN = 9, 6, 4.0, "1-2:2,3:1"
SIZES = {"i2v21": (48, 32), "i2v_a14b": (48, 32), "ti2v_i2v": (96, 64)}


def make_pipe(kind):
    pipe = WanImageToVideoPnPPipeline(**tiny.components(kind))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, kind, batch=1, seed=0, **kwargs):
    height, width = SIZES[kind]
    args = dict(
        image=tiny.image(height, width), prompt_embeds=tiny.prompt_embeds(batch, 0),
        negative_prompt_embeds=tiny.prompt_embeds(batch, 99), height=height, width=width, num_frames=FRAMES,
        num_inference_steps=STEPS, guidance_scale=SCALE, generator=torch.Generator().manual_seed(seed),
        output_type="latent",
    )
    args.update(kwargs)
    return pipe(**args)


def record_inputs(model):
    """Keeps every forward's hidden_states and encoder_hidden_states_image."""
    seen = []
    model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((kwargs["hidden_states"].clone(), kwargs.get("encoder_hidden_states_image"))),
        with_kwargs=True,
    )
    return seen


def encoded_image(pipe, kind):
    """The normalized VAE latents of the condition image, computed here from the VAE directly."""
    height, width = SIZES[kind]
    pixels = pipe.video_processor.preprocess(tiny.image(height, width), height=height, width=width)
    latents = pipe.vae.encode(pixels.unsqueeze(2)).latent_dist.mode()
    shape = (1, pipe.vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(pipe.vae.config.latents_mean).view(shape)
    std = torch.tensor(pipe.vae.config.latents_std).view(shape)
    return (latents - mean) / std


def test_ti2v_first_frame_is_pinned_to_the_image():
    pipe = make_pipe("ti2v_i2v")
    seen = record_inputs(pipe.transformer)
    out = run(pipe, "ti2v_i2v", batch=2, pnp=PnPConfig(plan=PLAN, tau=1.0), capture_uncertainty=True)
    condition = encoded_image(pipe, "ti2v_i2v")
    assert out.frames.shape == (2, 48, 3, 6, 4)
    assert torch.allclose(out.frames[:, :, :1], condition.expand(2, -1, -1, -1, -1), atol=1e-6)
    for hidden, _ in seen:  # every model call, perturbed ones included, sees the condition in frame 0
        assert torch.allclose(hidden[:, :, :1], condition.expand(hidden.shape[0], -1, -1, -1, -1), atol=1e-6)
    maps = out.pnp_stats.uncertainty_maps
    assert maps
    for m in maps:
        assert not m["certain"][:, 0].any()
        assert torch.all(m["uncertainty"][:, 0] == 0)
        assert m["uncertainty"][:, 1:].abs().sum() > 0
    assert (out.frames[:, :, 1:] - condition).abs().max() > 1e-2  # the rest was sampled


def test_ti2v_timestep_is_zero_on_the_first_frame():
    pipe = make_pipe("ti2v_i2v")
    timesteps = []
    pipe.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: timesteps.append(kwargs["timestep"].clone()), with_kwargs=True
    )
    run(pipe, "ti2v_i2v", pnp=PnPConfig(plan="none"))
    tokens_per_frame = (6 // 2) * (4 // 2)
    first = timesteps[0]
    assert first.shape == (1, 3 * tokens_per_frame)
    assert torch.all(first[:, :tokens_per_frame] == 0)
    assert torch.all(first[:, tokens_per_frame:] == pipe.scheduler.timesteps[0])


def test_wan22_i2v_refines_only_the_noisy_channels():
    pipe = make_pipe("i2v_a14b")
    seen_high, seen_low = record_inputs(pipe.transformer), record_inputs(pipe.transformer_2)
    out = run(pipe, "i2v_a14b", batch=2, pnp=PnPConfig(plan=PLAN, tau=1.0))
    inputs = [h for h, _ in seen_high + seen_low]
    assert seen_high and seen_low and all(h.shape[1] == 36 for h in inputs)
    assert out.frames.shape[1] == 16
    condition = inputs[0][:, 16:]
    assert all(torch.equal(h[:, 16:], condition) for h in inputs)  # the 20 condition channels never change
    # z does, at every model call (its conditional and unconditional forwards see the same z)
    assert len({float((h[:, :16] - inputs[0][:, :16]).abs().sum()) for h in inputs}) == len(inputs) // 2


def test_wan22_i2v_matches_naive_loop():
    pipe = make_pipe("i2v_a14b")
    pipe.register_to_config(boundary_ratio=None)  # one expert, so the naive loop needs no boundary
    pipe.transformer_2 = None
    seen = record_inputs(pipe.transformer)
    config = PnPConfig(plan=PLAN, tau=1.0, certain_stop=0.9)
    out = run(pipe, "i2v_a14b", batch=2, seed=5, pnp=config)
    condition = seen[0][0][:, 16:]
    g = torch.Generator().manual_seed(5)
    latents = torch.randn(2, 16, 3, 6, 4, generator=g)
    denoise = sequential_denoiser(
        pipe.transformer, pipe.scheduler.timesteps, tiny.prompt_embeds(2, 0), tiny.prompt_embeds(2, 99), SCALE,
        condition=condition,
    )
    expected = naive_pnp(denoise, latents, pipe.scheduler.sigmas, config.plan.ranges, 1.0, 1, 0.9, g)
    diff = (out.frames - expected).abs().max().item()
    assert diff <= 1e-5, diff


def test_wan21_i2v_with_image_encoder():
    pipe = make_pipe("i2v21")
    seen = record_inputs(pipe.transformer)
    out = run(pipe, "i2v21", pnp=PnPConfig(plan=PLAN, tau=1.0), num_videos_per_prompt=2, output_type="np")
    assert out.frames.shape == (2, FRAMES, 48, 32, 3)
    image_tokens = seen[0][1]
    assert image_tokens is not None and image_tokens.shape[0] == 2  # one copy per video
    assert torch.equal(image_tokens[0], image_tokens[1])


def test_ti2v_image_to_video_end_to_end_decodes():
    pipe = make_pipe("ti2v_i2v")
    out = run(pipe, "ti2v_i2v", pnp=PnPConfig(plan=PLAN, tau=1.0), output_type="np")
    assert out.frames.shape == (1, FRAMES, 96, 64, 3)
    assert torch.isfinite(torch.as_tensor(out.frames)).all()


def test_image_is_required():
    pipe = make_pipe("i2v_a14b")
    with pytest.raises(ValueError, match="image"):
        run(pipe, "i2v_a14b", image=None, pnp=PnPConfig(plan="none"))


@pytest.mark.parametrize("kind", ["i2v21", "i2v_a14b", "ti2v_i2v"])
def test_empty_plan_matches_stock_pipeline(kind):
    from diffusers import WanImageToVideoPipeline

    pipe = make_pipe(kind)
    stock = WanImageToVideoPipeline.from_pipe(pipe)
    stock.set_progress_bar_config(disable=True)
    height, width = SIZES[kind]
    args = dict(
        image=tiny.image(height, width), prompt_embeds=tiny.prompt_embeds(2, 0),
        negative_prompt_embeds=tiny.prompt_embeds(2, 99), height=height, width=width, num_frames=FRAMES,
        num_inference_steps=STEPS, guidance_scale=SCALE, output_type="latent",
    )
    expected = stock(generator=torch.Generator().manual_seed(3), **args).frames
    ours = pipe(generator=torch.Generator().manual_seed(3), pnp=PnPConfig(plan="none"), **args).frames
    diff = (ours - expected).abs().max().item()
    assert diff <= 1e-6, diff
