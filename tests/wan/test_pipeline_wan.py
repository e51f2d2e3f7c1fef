"""WanPnPPipeline (T2V, A14B, TI2V-5B) against plain loops, the naive P&P loop and stock diffusers."""
import pytest
import torch

pytest.importorskip("diffusers", reason="needs diffusers (pip install 'pnp-kernels[wan]')")

from pnp_kernels import PnPConfig, RefinePlan
from pnp_kernels.wan import WanPnPPipeline
from pnp_kernels.threads import single_thread
from tests.naive import naive_pnp
from tests.wan import tiny
from tests.wan.reference_loops import euler, sequential_denoiser

HEIGHT, WIDTH, FRAMES = 48, 32, 9  # latents (3, 6, 4): odd frame count, non-square
STEPS = 6
SCALE = 4.0
PLAN = "1-2:2,3:1"


def make_pipe(kind="t2v", dtype=torch.float32, scheduler=None):
    parts = tiny.components(kind, dtype)
    if scheduler is not None:
        parts["scheduler"] = scheduler
    pipe = WanPnPPipeline(**parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, batch=1, seed=0, prompt_seed=0, generator=None, **kwargs):
    args = dict(
        prompt_embeds=tiny.prompt_embeds(batch, prompt_seed), negative_prompt_embeds=tiny.prompt_embeds(batch, 99),
        height=HEIGHT, width=WIDTH, num_frames=FRAMES, num_inference_steps=STEPS, guidance_scale=SCALE,
        generator=torch.Generator().manual_seed(seed) if generator is None else generator, output_type="latent",
    )
    args.update(kwargs)
    return pipe(**args)


def initial_latents(seed, batch=1, channels=16, shape=(3, 6, 4)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, *shape, generator=g), g


@pytest.fixture(scope="module")
def pipe():
    return make_pipe()


def test_empty_plan_is_plain_euler(pipe):
    out = run(pipe, seed=3, pnp=PnPConfig(plan=RefinePlan([])))
    latents, _ = initial_latents(3)
    denoise = sequential_denoiser(
        pipe.transformer, pipe.scheduler.timesteps, tiny.prompt_embeds(1, 0), tiny.prompt_embeds(1, 99), SCALE
    )
    expected = euler(denoise, latents, pipe.scheduler.sigmas)
    assert out.pnp_stats.nfe == STEPS
    diff = (out.frames - expected).abs().max().item()
    assert diff <= 1e-6, diff


@pytest.mark.parametrize("kind, height, width", [("t2v", HEIGHT, WIDTH), ("a14b", HEIGHT, WIDTH), ("ti2v", 96, 64)])
def test_empty_plan_matches_stock_wan_pipeline(kind, height, width):
    from diffusers import WanPipeline

    pipe = make_pipe(kind)
    stock = WanPipeline.from_pipe(pipe)  # same modules; stock uses FlowMatchEulerDiscreteScheduler.step
    stock.set_progress_bar_config(disable=True)
    args = dict(
        prompt_embeds=tiny.prompt_embeds(2, 0), negative_prompt_embeds=tiny.prompt_embeds(2, 99), height=height,
        width=width, num_frames=FRAMES, num_inference_steps=STEPS, guidance_scale=SCALE, output_type="latent",
    )
    if kind == "a14b":
        args["guidance_scale_2"] = 2.5
    expected = stock(generator=torch.Generator().manual_seed(5), **args).frames
    ours = pipe(generator=torch.Generator().manual_seed(5), pnp=PnPConfig(plan="none"), **args).frames
    diff = (ours - expected).abs().max().item()
    assert diff <= 1e-6, diff


def test_plan_matches_naive_loop(pipe):
    config = PnPConfig(plan=PLAN, tau=1.0, certain_stop=0.9)
    out = run(pipe, batch=2, seed=11, pnp=config, prompt_seed=4)
    latents, g = initial_latents(11, batch=2)
    denoise = sequential_denoiser(
        pipe.transformer, pipe.scheduler.timesteps, tiny.prompt_embeds(2, 4), tiny.prompt_embeds(2, 99), SCALE
    )
    expected = naive_pnp(denoise, latents, pipe.scheduler.sigmas, config.plan.ranges, 1.0, 1, 0.9, g)
    refined = [s for s in out.pnp_stats.steps if s.planned]
    assert any(f > 0 for s in refined for fr in s.certain_fractions for f in fr), "tau must leave some certain positions"
    diff = (out.frames - expected).abs().max().item()
    assert diff <= 1e-5, diff


def test_without_guidance_one_forward_per_call(pipe):
    calls = []
    hook = pipe.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        out = run(pipe, guidance_scale=1.0, pnp=PnPConfig(plan=PLAN, tau=0.0))
    finally:
        hook.remove()
    assert len(calls) == out.pnp_stats.nfe == STEPS + 5
    latents, g = initial_latents(0)
    embeds, timesteps = tiny.prompt_embeds(1, 0), pipe.scheduler.timesteps

    def conditional(z, step, sigma):
        return pipe.transformer(hidden_states=z, timestep=timesteps[step].expand(1), encoder_hidden_states=embeds,
                                return_dict=False)[0]

    expected = naive_pnp(conditional, latents, pipe.scheduler.sigmas, RefinePlan.parse(PLAN).ranges, 0.0, 1, 0.999, g)
    diff = (out.frames - expected).abs().max().item()
    assert diff <= 1e-5, diff


def test_two_prompts_equal_one_at_a_time(pipe):
    # tau 1, certain_stop 0.58: at step 2 one sample leaves after iteration 1, the other goes on.
    config = PnPConfig(plan=PLAN, tau=1.0, certain_stop=0.58)
    seeds = (21, 22)
    pair = run(
        pipe, batch=2, prompt_seed=8, pnp=config,
        generator=[torch.Generator().manual_seed(s) for s in seeds],
    )
    embeds = tiny.prompt_embeds(2, 8)
    negative = tiny.prompt_embeds(2, 99)
    for b, s in enumerate(seeds):
        single = run(
            pipe, pnp=config, generator=[torch.Generator().manual_seed(s)],
            prompt_embeds=embeds[b : b + 1], negative_prompt_embeds=negative[b : b + 1],
        )
        diff = (pair.frames[b : b + 1] - single.frames).abs().max().item()
        assert diff <= 1e-5, (b, diff)
    exits = [s.exit_iteration for s in pair.pnp_stats.steps if s.planned]
    assert any(e[0] != e[1] for e in exits), f"samples should exit at different iterations: {exits}"


def test_num_videos_per_prompt(pipe):
    out = run(pipe, num_videos_per_prompt=3, pnp=PnPConfig(plan=PLAN, tau=1.0))
    assert out.frames.shape[0] == 3
    assert torch.isfinite(out.frames).all()
    assert (out.frames[0] - out.frames[1]).abs().max() > 1e-3  # per-sample noise


def test_philox_seed_defaults_to_generator_initial_seed(pipe):
    config = PnPConfig(plan=PLAN, tau=1.0, noise="philox")
    default = run(pipe, seed=7, pnp=config)
    explicit = run(pipe, seed=7, pnp=config, pnp_seed=7)
    other = run(pipe, seed=7, pnp=config, pnp_seed=8)
    assert torch.equal(default.frames, explicit.frames)
    assert (default.frames - other.frames).abs().max() > 1e-4


def test_progress_and_callbacks(pipe):
    events, step_ends = [], []

    def on_step_end(p, step, t, tensors):
        step_ends.append((step, tensors["latents"].clone()))
        return {}

    out = run(
        pipe, pnp=PnPConfig(plan=PLAN, tau=0.0), pnp_callback=events.append, callback_on_step_end=on_step_end,
        capture_uncertainty=True,
    )
    assert len(events) == out.pnp_stats.nfe == STEPS + RefinePlan.parse(PLAN).extra_nfe(STEPS)
    assert [s for s, _ in step_ends] == list(range(STEPS))
    assert torch.equal(step_ends[-1][1], out.frames)
    maps = out.pnp_stats.uncertainty_maps
    assert [(m["step"], m["iteration"]) for m in maps] == [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1)]
    assert maps[0]["uncertainty"].shape == (1, 3, 6, 4) and maps[0]["uncertainty"].device.type == "cpu"


def test_step_end_callback_can_replace_latents(pipe):
    def zero_after_last(p, step, t, tensors):
        return {"latents": torch.zeros_like(tensors["latents"])} if step == STEPS - 1 else {}

    out = run(pipe, pnp=PnPConfig(plan="none"), callback_on_step_end=zero_after_last)
    assert torch.equal(out.frames, torch.zeros_like(out.frames))


def test_a14b_expert_calls_follow_boundary():
    pipe = make_pipe("a14b")
    calls = {"high": 0, "low": 0}
    pipe.transformer.register_forward_pre_hook(lambda *a: calls.__setitem__("high", calls["high"] + 1))
    pipe.transformer_2.register_forward_pre_hook(lambda *a: calls.__setitem__("low", calls["low"] + 1))
    out = run(pipe, pnp=PnPConfig(plan=PLAN, tau=0.0), guidance_scale_2=2.0)
    boundary = pipe.config.boundary_ratio * pipe.scheduler.config.num_train_timesteps
    timesteps = pipe.scheduler.timesteps.tolist()
    expected_high = sum(s.nfe for s, t in zip(out.pnp_stats.steps, timesteps) if t >= boundary)
    expected_low = out.pnp_stats.nfe - expected_high
    assert 0 < expected_high and 0 < expected_low  # the grid crosses the boundary inside the plan
    assert calls == {"high": 2 * expected_high, "low": 2 * expected_low}  # two forwards per call (cond, uncond)
    assert torch.isfinite(out.frames).all()


def test_a14b_uses_guidance_scale_2_after_boundary():
    pipe = make_pipe("a14b")
    base = run(pipe, pnp=PnPConfig(plan="none"), guidance_scale_2=2.0)
    same_high = run(pipe, pnp=PnPConfig(plan="none"), guidance_scale_2=3.0)
    assert (base.frames - same_high.frames).abs().max() > 1e-4


def test_ti2v_text_to_video_end_to_end():
    pipe = make_pipe("ti2v")
    out = run(pipe, height=96, width=64, pnp=PnPConfig(plan=PLAN, tau=1.0), output_type="np")
    assert out.frames.shape == (1, FRAMES, 96, 64, 3)
    assert torch.isfinite(torch.as_tensor(out.frames)).all()


def test_from_pipe_keeps_dtypes():
    from diffusers import WanPipeline

    stock = WanPipeline(**tiny.components("t2v", torch.bfloat16))
    assert stock.transformer.dtype == torch.bfloat16 and stock.vae.dtype == torch.float32
    pnp_pipe = WanPnPPipeline.from_pipe(stock)
    assert pnp_pipe.transformer is stock.transformer
    assert stock.transformer.dtype == torch.bfloat16 and stock.vae.dtype == torch.float32
    cast = WanPnPPipeline.from_pipe(stock, dtype=torch.float32)  # an explicit dtype is honoured
    assert cast.transformer.dtype == torch.float32


def test_from_pretrained_round_trip(tmp_path, pipe):
    pipe.save_pretrained(tmp_path)
    loaded = WanPnPPipeline.from_pretrained(tmp_path, tokenizer=None, text_encoder=None)  # none saved
    loaded.set_progress_bar_config(disable=True)
    # Weights read from a safetensors file may sit at addresses that are not 64-byte aligned, where CPU
    # matmul kernels take another summation path (so may two threads): fresh copies on one thread compare
    # bit for bit.
    with torch.no_grad():
        for parameter in loaded.transformer.parameters():
            parameter.data = parameter.data.clone()
    config = PnPConfig(plan=PLAN, tau=1.0)
    with single_thread():
        assert torch.equal(run(loaded, pnp=config).frames, run(pipe, pnp=config).frames)


def test_decoded_output_and_tuple_return(pipe):
    frames, stats = run(pipe, pnp=PnPConfig(plan="none"), output_type="np", return_dict=False)
    assert frames.shape == (1, FRAMES, HEIGHT, WIDTH, 3) and stats.nfe == STEPS


def test_bf16_transformer_completes_and_reports_difference(pipe):
    config = PnPConfig(plan=PLAN, tau=1.0)
    low = make_pipe(dtype=torch.bfloat16)
    reference = run(pipe, seed=4, pnp=config).frames
    bf16 = run(low, seed=4, pnp=config).frames
    assert torch.isfinite(bf16).all()
    diff = (bf16 - reference).abs()
    print(f"\nfp32 vs bf16 transformer: max abs diff {diff.max():.4f}, mean {diff.mean():.4f}, "
          f"latent std {reference.std():.3f}")
    assert diff.mean() < reference.std()  # same sample, not noise


def test_unipc_scheduler_grid():
    pipe = make_pipe(scheduler=tiny.unipc_scheduler())
    out = run(pipe, pnp=PnPConfig(plan="none"))
    latents, _ = initial_latents(0)
    denoise = sequential_denoiser(
        pipe.transformer, pipe.scheduler.timesteps, tiny.prompt_embeds(1, 0), tiny.prompt_embeds(1, 99), SCALE
    )
    diff = (out.frames - euler(denoise, latents, pipe.scheduler.sigmas)).abs().max().item()
    assert diff <= 1e-6, diff


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(pnp="2-5:3"), TypeError, "pnp must be a PnPConfig"),
        (dict(pnp=PnPConfig(plan="2-9:1")), ValueError, "refers to step 9"),
        (dict(pnp=PnPConfig(plan="none"), pnp_seed=3), ValueError, "pnp_seed=3"),
        (dict(pnp=PnPConfig(plan="none"), compile=1), TypeError, "compile must be True or False"),
        (dict(pnp=PnPConfig(plan="none"), capture_uncertainty="yes"), TypeError, "capture_uncertainty"),
        (dict(pnp=PnPConfig(plan="none"), pnp_callback=3), TypeError, "pnp_callback must be callable"),
        (dict(pnp=PnPConfig(plan="none"), pnp_group="world"), ValueError, "pnp_group must be one of"),
        (dict(pnp=PnPConfig(plan="none"), pnp_group=0), TypeError, "pnp_group must be 'auto', None or"),
        (dict(pnp=PnPConfig(plan="none"), attention="fastest"), ValueError, "fastest"),
        (dict(pnp=PnPConfig(plan="none"), num_frames=0), ValueError, "num_frames"),
    ],
)
def test_bad_arguments(pipe, kwargs, error, match):
    with pytest.raises(error, match=match):
        run(pipe, **kwargs)


def test_negative_prompt_of_another_length(pipe):
    out = run(pipe, pnp=PnPConfig(plan="none"), negative_prompt_embeds=tiny.prompt_embeds(1, 99, length=5))
    assert torch.isfinite(out.frames).all()


def test_progress_bar_counts_model_calls(pipe):
    import io

    text = io.StringIO()
    pipe.set_progress_bar_config(file=text, disable=False, mininterval=0)
    try:
        out = run(pipe, pnp=PnPConfig(plan=PLAN, tau=1.0, certain_stop=0.58))
    finally:
        pipe.set_progress_bar_config(disable=True)
    upper = STEPS + RefinePlan.parse(PLAN).extra_nfe(STEPS)
    shown = text.getvalue()
    assert f"0/{upper}" in shown  # starts at the upper bound of model calls
    assert out.pnp_stats.nfe < upper and f"{out.pnp_stats.nfe}/{out.pnp_stats.nfe}" in shown  # early exit
    assert "step=" in shown and "iteration=" in shown and "certain=" in shown
