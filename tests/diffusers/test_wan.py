"""enable_pnp on diffusers' own WanPipeline / WanImageToVideoPipeline (tiny random components, fp32)."""
import pytest
import torch
from diffusers import WanImageToVideoPipeline, WanPipeline

from pnp_kernels import PnPConfig, RefinePlan
from pnp_kernels.diffusers import disable_pnp, enable_pnp
from pnp_kernels.wan import WanImageToVideoPnPPipeline, WanPnPPipeline
from tests.diffusers.model_calls import ForwardCounter
from tests.naive import naive_pnp
from tests.wan import tiny
from tests.wan.reference_loops import euler, sequential_denoiser

HEIGHT, WIDTH, FRAMES = 48, 32, 9  # latents (16, 3, 6, 4): odd frame count, non-square
LATENT = (16, 3, 6, 4)
STEPS, SCALE, PLAN = 4, 4.0, "1-2:2,3:1"
IMAGE_SIZES = {"i2v_a14b": (48, 32), "ti2v_i2v": (96, 64)}


def make(kind="t2v", cls=None, **overrides):
    parts = tiny.components(kind)
    parts.update(overrides)
    cls = cls or (WanImageToVideoPipeline if kind in IMAGE_SIZES else WanPipeline)
    pipe = cls(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def call(pipe, batch=1, seed=0, generator=None, **kwargs):
    args = dict(
        prompt_embeds=tiny.prompt_embeds(batch, 4), negative_prompt_embeds=tiny.prompt_embeds(batch, 99),
        height=HEIGHT, width=WIDTH, num_frames=FRAMES, num_inference_steps=STEPS, guidance_scale=SCALE,
        generator=torch.Generator().manual_seed(seed) if generator is None else generator, output_type="latent",
    )
    args.update(kwargs)
    return pipe(**args)


def run(pipe, batch=1, seed=0, generator=None, **kwargs):
    return call(pipe, batch, seed, generator, **kwargs).frames


def run_i2v(pipe, kind, **kwargs):
    height, width = IMAGE_SIZES[kind]
    return run(pipe, image=tiny.image(height, width), height=height, width=width, **kwargs)


@pytest.mark.parametrize("kind", ["a14b", "i2v_a14b", "ti2v_i2v"])
def test_empty_plan_equals_stock_and_disable_restores_it(kind):
    pipe = make(kind)
    call = (lambda **kw: run_i2v(pipe, kind, batch=2, **kw)) if kind in IMAGE_SIZES else (lambda **kw: run(pipe, batch=2, **kw))
    stock = call(seed=5)
    config_before, scheduler_before, cls_before = dict(pipe.config), pipe.scheduler, type(pipe)
    enable_pnp(pipe, PnPConfig(plan="none"))
    ours = call(seed=5)
    assert pipe.pnp_stats.nfe == STEPS
    diff = (ours - stock).abs().max().item()
    assert diff <= 1e-6, diff
    disable_pnp(pipe)
    assert torch.equal(call(seed=5), stock)
    assert type(pipe) is cls_before and pipe.scheduler is scheduler_before and dict(pipe.config) == config_before
    assert not hasattr(pipe, "pnp_stats")


def test_unipc_pipeline_steps_euler_on_its_grid():
    pipe = make(scheduler=tiny.unipc_scheduler())
    enable_pnp(pipe, PnPConfig(plan="none"))
    out = run(pipe, seed=1)
    grid = pipe.scheduler.scheduler  # the wrapped UniPC scheduler, set for this call
    latents = torch.randn(1, *LATENT, generator=torch.Generator().manual_seed(1))
    denoise = sequential_denoiser(pipe.transformer, grid.timesteps, tiny.prompt_embeds(1, 4), tiny.prompt_embeds(1, 99), SCALE)
    diff = (out - euler(denoise, latents, grid.sigmas)).abs().max().item()
    assert diff <= 1e-6, diff


class CountingDenoiser:
    def __init__(self, denoise):
        self.denoise, self.calls = denoise, 0

    def __call__(self, z, step, sigma):
        self.calls += 1
        return self.denoise(z, step, sigma)


def unguided(model, timesteps, embeds):
    def denoise(z, step, sigma):
        return model(hidden_states=z, timestep=timesteps[step].expand(z.shape[0]), encoder_hidden_states=embeds,
                     return_dict=False)[0]
    return denoise


@pytest.mark.parametrize("batch, guided, certain_stop", [(1, True, 0.9), (2, True, 0.41), (2, False, 0.9)])
def test_plan_equals_naive_loop_and_skips_idle_calls(batch, guided, certain_stop):
    pipe = make()
    config = PnPConfig(plan=PLAN, tau=1.0, certain_stop=certain_stop)
    enable_pnp(pipe, config)
    counter = ForwardCounter(pipe.transformer.patch_embedding)
    out = run(pipe, batch=batch, seed=11, guidance_scale=SCALE if guided else 1.0)
    grid = pipe.scheduler.scheduler
    g = torch.Generator().manual_seed(11)
    latents = torch.randn(batch, *LATENT, generator=g)
    embeds, negative = tiny.prompt_embeds(batch, 4), tiny.prompt_embeds(batch, 99)
    if guided:
        denoise = CountingDenoiser(sequential_denoiser(pipe.transformer, grid.timesteps, embeds, negative, SCALE))
    else:
        denoise = CountingDenoiser(unguided(pipe.transformer, grid.timesteps, embeds))
    before = counter.calls
    expected = naive_pnp(denoise, latents, grid.sigmas, config.plan.ranges, 1.0, 1, certain_stop, g)
    counter.remove()
    diff = (out - expected).abs().max().item()
    assert diff <= 1e-5, diff
    upper = STEPS + RefinePlan.parse(PLAN).extra_nfe(STEPS)
    assert pipe.pnp_stats.nfe == denoise.calls
    assert before == denoise.calls * (2 if guided else 1)  # the skipped calls did not run
    if certain_stop < 0.999:
        assert denoise.calls < upper, "the case must exit early"
    if batch == 2 and certain_stop == 0.41:  # step 1: fractions 0.403 and 0.417
        exits = [s.exit_iteration for s in pipe.pnp_stats.steps if s.planned]
        assert any(e[0] != e[1] for e in exits), f"samples should exit at different iterations: {exits}"


@pytest.mark.parametrize("noise", ["generator", "philox"])
def test_equals_wan_pnp_pipeline(noise):
    parts = tiny.components("a14b")
    config = PnPConfig(plan=PLAN, tau=0.3, noise=noise)
    ours = WanPnPPipeline(**parts)
    ours.set_progress_bar_config(disable=True)
    extra = {"pnp_seed": 7} if noise == "philox" else {}
    expected = call(ours, batch=2, seed=3, pnp=config, guidance_scale_2=2.5, **extra)
    pipe = make(**parts)
    enable_pnp(pipe, config, seed=7 if noise == "philox" else None)
    out = run(pipe, batch=2, seed=3, guidance_scale_2=2.5)
    assert torch.equal(out, expected.frames)
    assert pipe.pnp_stats.nfe == expected.pnp_stats.nfe


def test_i2v_equals_wan_i2v_pnp_pipeline():
    parts = tiny.components("ti2v_i2v")
    config = PnPConfig(plan=PLAN, tau=0.3)
    ours = WanImageToVideoPnPPipeline(**parts)
    ours.set_progress_bar_config(disable=True)
    expected = run_i2v(ours, "ti2v_i2v", batch=2, seed=2, pnp=config).clone()
    pipe = make("ti2v_i2v", **parts)
    enable_pnp(pipe, config)
    out = run_i2v(pipe, "ti2v_i2v", batch=2, seed=2)
    assert torch.equal(out, expected)


def test_same_generator_reproduces_and_philox_follows_the_seed():
    pipe = enable_pnp(make(), PnPConfig(plan=PLAN, tau=0.3))
    assert torch.equal(run(pipe, seed=4), run(pipe, seed=4))
    disable_pnp(pipe)
    enable_pnp(pipe, PnPConfig(plan=PLAN, tau=0.3, noise="philox"), seed=9)
    explicit = run(pipe, seed=4)
    disable_pnp(pipe)
    enable_pnp(pipe, PnPConfig(plan=PLAN, tau=0.3, noise="philox"))  # seed: the generator's initial_seed()
    derived = run(pipe, seed=4)
    assert torch.equal(run(pipe, seed=4), derived) and not torch.equal(derived, explicit)


@pytest.mark.gpu
def test_bf16_on_cuda_gives_the_same_sample():
    config = PnPConfig(plan=PLAN, tau=0.3)
    reference = run(enable_pnp(make(), config))
    pipe = WanPipeline(**tiny.components("t2v", torch.bfloat16)).to("cuda")
    pipe.set_progress_bar_config(disable=True)
    enable_pnp(pipe, config)
    counter = ForwardCounter(pipe.transformer.patch_embedding)
    out = run(pipe, prompt_embeds=tiny.prompt_embeds(1, 4).cuda(), negative_prompt_embeds=tiny.prompt_embeds(1, 99).cuda())
    assert out.is_cuda and torch.isfinite(out).all()
    assert counter.calls == 2 * pipe.pnp_stats.nfe
    diff = (out.float().cpu() - reference).abs()
    print(f"\nbf16 CUDA vs fp32 CPU: max abs diff {diff.max():.4f}, mean {diff.mean():.4f}, latent std {reference.std():.3f}")
    assert diff.mean() < reference.std()  # the same sample up to bf16 rounding, not noise


@pytest.mark.parametrize("stock", [True, False])
def test_model_computes_each_sample_only_while_it_iterates(stock):
    # certain_stop 0.41: at step 1 the two samples leave at different iterations (as above).
    config = PnPConfig(plan=PLAN, tau=1.0, certain_stop=0.41)
    if stock:
        pipe = enable_pnp(make(), config)
    else:
        pipe = WanPnPPipeline(**tiny.components("t2v"))
        pipe.set_progress_bar_config(disable=True)
    rows = []  # per forward that ran: its samples (P&P's hook sits above the transformer's forward)
    pipe.transformer.patch_embedding.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    out = call(pipe, batch=2, seed=11, **({} if stock else {"pnp": config}))
    stats = pipe.pnp_stats if stock else out.pnp_stats
    assert stats.nfe_per_sample[0] != stats.nfe_per_sample[1]
    assert sorted(set(rows)) == [1, 2]
    assert sum(rows) == 2 * sum(stats.nfe_per_sample)  # cond and uncond forwards per model call
