"""Published defaults, guidance checks and per-sample compute of the Wan P&P pipelines."""
import inspect
import math

import pytest
import torch

pytest.importorskip("diffusers", reason="needs diffusers (pip install 'pnp-kernels[wan]')")

from diffusers import WanImageToVideoPipeline, WanPipeline

from pnp_kernels import PnPConfig
from pnp_kernels.wan import WanImageToVideoPnPPipeline, WanPnPPipeline
from tests.wan import tiny
from tests.wan.test_pipeline_wan import PLAN, make_pipe, run


@pytest.mark.parametrize("name", ["guidance_scale", "guidance_scale_2"])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_guidance_is_an_error(name, value):
    pipe = make_pipe("a14b")
    with pytest.raises(ValueError, match=rf"{name} must be finite, got {value}"):
        run(pipe, pnp=PnPConfig(plan="none"), **{name: value})


def i2v_a14b(**kwargs):
    pipe = WanImageToVideoPnPPipeline(**tiny.components("i2v_a14b"))
    pipe.set_progress_bar_config(disable=True)
    return pipe(image=tiny.image(48, 32), height=48, width=32, num_frames=5, generator=torch.Generator().manual_seed(0),
                output_type="latent", **kwargs), pipe


def test_i2v_a14b_defaults_follow_the_published_script():
    embeds = dict(prompt_embeds=tiny.prompt_embeds(1), negative_prompt_embeds=tiny.prompt_embeds(1, 9))
    out, pipe = i2v_a14b(num_inference_steps=14, **embeds)
    stats = out.pnp_stats
    assert [s.planned for s in stats.steps] == [0] + [3] * 5 + [1] * 8  # plan 1-5:3,6-13:1
    assert all(f == 0.0 for s in stats.steps for fr in s.certain_fractions for f in fr)  # tau 0: nothing certain
    assert pipe.guidance_scale == pipe._guidance_scale_2 == 3.5
    assert stats.num_steps == 14


def test_text_to_video_defaults_and_the_negative_prompt():
    pipe = make_pipe("a14b")
    seen = {}

    def encode_prompt(prompt, negative_prompt, **kwargs):
        seen["negative_prompt"] = negative_prompt
        return tiny.prompt_embeds(1), tiny.prompt_embeds(1, 9)

    pipe.encode_prompt = encode_prompt
    out = pipe(prompt="a cat", height=48, width=32, num_frames=5, num_inference_steps=14,
               generator=torch.Generator().manual_seed(0), output_type="latent")
    assert seen["negative_prompt"] == "low quality"
    assert (pipe.guidance_scale, pipe._guidance_scale_2) == (4.0, 3.0)  # Wan 2.2 A14B T2V script
    assert [s.planned for s in out.pnp_stats.steps] == [0, 0] + [3] * 4 + [1] * 8  # plan 2-5:3,6-13:1
    with pytest.raises(ValueError, match="refers to step 13"):  # 40 steps by default: 2-5:3,6-13:1 needs 14
        pipe(prompt="a cat", height=48, width=32, num_frames=5, num_inference_steps=10, output_type="latent")


def test_samples_that_left_a_step_are_not_computed():
    pipe = make_pipe()
    rows = []
    # Inside the transformer: the rows that really ran (P&P's hook sits above its forward).
    pipe.transformer.patch_embedding.register_forward_pre_hook(lambda m, a: rows.append(a[0].shape[0]))
    # As test_two_prompts_equal_one_at_a_time: at step 2 one sample leaves after iteration 1.
    out = run(pipe, batch=2, prompt_seed=8, pnp=PnPConfig(plan=PLAN, tau=1.0, certain_stop=0.58),
              generator=[torch.Generator().manual_seed(s) for s in (21, 22)])
    assert set(rows) == {1, 2}  # 2 rows, 1 once a sample has left
    assert sum(rows) == 2 * sum(out.pnp_stats.nfe_per_sample)  # cond and uncond forwards


def test_a_plan_for_one_expert_is_resolved_with_the_boundary():
    pipe = make_pipe("a14b")
    out = run(pipe, guidance_scale_2=2.0, pnp=PnPConfig(plan="all:1@low", tau=0.3))
    boundary = pipe.config.boundary_ratio
    planned = {s.step: s.planned for s in out.pnp_stats.steps}
    assert planned == {s.step: (1 if s.sigma < boundary else 0) for s in out.pnp_stats.steps}
    assert 0 < sum(planned.values()) < len(planned)  # both experts have steps


@pytest.mark.parametrize("ours, stock", [(WanPnPPipeline, WanPipeline), (WanImageToVideoPnPPipeline, WanImageToVideoPipeline)])
def test_call_takes_every_stock_argument_and_handles_each(ours, stock):
    # The P&P __call__ is derived from diffusers' signature: every stock argument (same order, same
    # defaults, but those the published scripts set) followed by the P&P keywords.
    stock_parameters = inspect.signature(stock.__call__).parameters
    parameters = inspect.signature(ours.__call__).parameters
    assert list(parameters)[: len(stock_parameters)] == list(stock_parameters)
    for name, p in stock_parameters.items():
        expected = None if name in ("num_inference_steps", "guidance_scale") else p.default
        assert parameters[name].default == expected, name
    assert list(parameters)[len(stock_parameters):] == [
        "pnp", "pnp_seed", "pnp_group", "attention", "compile", "capture_uncertainty", "pnp_callback"]
    with pytest.raises(TypeError, match="unexpected keyword argument 'pnp_sed'"):
        inspect.signature(ours.__call__).bind(None, *([None] if "image" in stock_parameters else []), pnp_sed=3)
