"""Attention backend choice: auto priority with reasons, explicit requests, and what the pipeline reports."""
import importlib.util

import pytest
import torch

pytest.importorskip("diffusers", reason="needs diffusers (pip install 'pnp-kernels[wan]')")

from pnp_kernels import PnPConfig
from pnp_kernels.wan import ATTENTION_BACKEND_PRIORITY, WanPnPPipeline, choose_attention_backend
from pnp_kernels.wan.attention import AttentionInputs
from tests.wan import tiny

CPU_FP32 = AttentionInputs(torch.device("cpu"), torch.float32, 128)
CPU_BF16 = AttentionInputs(torch.device("cpu"), torch.bfloat16, 128)


def test_auto_on_cpu_picks_native_and_says_why_not_the_others():
    choice = choose_attention_backend("auto", CPU_BF16)
    assert choice.backend == "native"
    assert list(choice.refused) == list(ATTENTION_BACKEND_PRIORITY[:-1])
    for name, reasons in choice.refused.items():
        assert any("CUDA" in r for r in reasons), (name, reasons)
    assert "native" in choice.describe() and "refused" in choice.describe()


def test_fp32_is_a_reason_for_the_half_precision_kernels():
    choice = choose_attention_backend("auto", CPU_FP32)
    for name in ("_flash_3", "flash", "_native_cudnn"):
        assert any("float16 or bfloat16" in r for r in choice.refused[name])


def test_sage_is_never_chosen_by_auto():
    assert "sage" not in ATTENTION_BACKEND_PRIORITY
    assert "sage" not in choose_attention_backend("auto", CPU_BF16).refused


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None, reason="flash-attn is installed")
def test_flash_without_flash_attn_raises_with_the_reason():
    with pytest.raises(ValueError, match=r"attention='flash' cannot run: flash-attn>=2.6.3 is not installed"):
        choose_attention_backend("flash", CPU_BF16)


def test_unknown_and_wrongly_typed_names():
    with pytest.raises(ValueError, match="'flashy'"):
        choose_attention_backend("flashy", CPU_BF16)
    with pytest.raises(TypeError, match="attention must be"):
        choose_attention_backend(None, CPU_BF16)


def test_explicit_native_and_diffusers_checked_backends():
    assert choose_attention_backend("native", CPU_FP32).backend == "native"
    assert choose_attention_backend("_native_math", CPU_FP32).backend == "_native_math"


@pytest.fixture(scope="module")
def pipe():
    pipe = WanPnPPipeline(**tiny.components("t2v"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, **kwargs):
    return pipe(
        prompt_embeds=tiny.prompt_embeds(1), negative_prompt_embeds=tiny.prompt_embeds(1, 9), height=32, width=32,
        num_frames=5, num_inference_steps=3, guidance_scale=3.0, generator=torch.Generator().manual_seed(0),
        output_type="latent", pnp=PnPConfig(plan="1:1", tau=1.0), **kwargs,
    )


def test_pipeline_reports_the_backend(pipe):
    out = run(pipe)
    assert out.attention_backend == "native"
    assert set(out.attention_refused) == set(ATTENTION_BACKEND_PRIORITY[:-1])
    math = run(pipe, attention="_native_math")
    assert math.attention_backend == "_native_math"
    assert (math.frames - out.frames).abs().max() < 1e-5  # both exact


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None, reason="flash-attn is installed")
def test_pipeline_flash_request_raises(pipe):
    with pytest.raises(ValueError, match="flash-attn"):
        run(pipe, attention="flash")


@pytest.mark.gpu
def test_auto_on_cuda_bf16_picks_an_exact_kernel():
    inputs = AttentionInputs(torch.device("cuda"), torch.bfloat16, 128)
    choice = choose_attention_backend("auto", inputs)
    assert choice.backend in ATTENTION_BACKEND_PRIORITY
    print("\n" + choice.describe())


@pytest.mark.gpu
def test_compile_runs_on_cuda():
    pipe = WanPnPPipeline(**tiny.components("t2v", torch.bfloat16)).to("cuda")
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        prompt_embeds=tiny.prompt_embeds(1).cuda(), negative_prompt_embeds=tiny.prompt_embeds(1, 9).cuda(),
        height=32, width=32, num_frames=5, num_inference_steps=3, guidance_scale=3.0,
        generator=torch.Generator("cuda").manual_seed(0), output_type="latent",
        pnp=PnPConfig(plan="1:1", tau=1.0), compile=True,
    )
    assert torch.isfinite(out.frames).all()


def test_backend_set_on_the_model_is_kept_by_auto_and_restored_after_a_request():
    from diffusers.models.attention_dispatch import attention_backend

    pipe = WanPnPPipeline(**tiny.components("t2v"))
    pipe.set_progress_bar_config(disable=True)
    processor = next(
        m.processor for m in pipe.transformer.modules() if hasattr(getattr(m, "processor", None), "_attention_backend")
    )
    seen = []
    pipe.transformer.register_forward_pre_hook(lambda *a: seen.append(str(processor._attention_backend.value)))
    with attention_backend("native"):  # set_attention_backend also sets diffusers' global; restore it after
        pipe.transformer.set_attention_backend("_native_math")
        assert run(pipe).attention_backend == "_native_math"
        assert run(pipe, attention="native").attention_backend == "native"
    assert seen[0] == "_native_math" and seen[-1] == "native"
    assert processor._attention_backend.value == "_native_math"  # the user's setting is back


def test_context_parallel_refuses_backends_diffusers_does_not_run_split(monkeypatch):
    # Under context parallelism a backend without diffusers' support would attend over this rank's
    # tokens only: a silently wrong video. It must be refused, explicitly, by auto and when set on the model.
    import pnp_kernels.wan.attention as attention

    split = AttentionInputs(torch.device("cpu"), torch.float32, 128, context_parallel=True)
    assert choose_attention_backend("auto", split).backend == "native"  # native runs split in diffusers
    monkeypatch.setattr(attention, "context_parallel_backends", lambda: {"flash"})
    with pytest.raises(ValueError, match="context parallelism"):
        choose_attention_backend("auto", split)
    with pytest.raises(ValueError, match="context parallelism"):
        choose_attention_backend("native", split)
    with pytest.raises(ValueError, match="context parallelism"):
        choose_attention_backend("auto", split, model_backend="native")
    assert choose_attention_backend("auto", CPU_FP32).backend == "native"  # one process: unchanged
