"""What the Wan P&P pipelines add to diffusers' own: the authors' published defaults, the attention
backend choice and compilation, and one output with the P&P statistics.

Sampling is ``enable_pnp``'s (``pnp_kernels.diffusers``): each call attaches the same session (the
scheduler stand-in and the transformer hooks) for its duration and runs diffusers' own ``__call__``,
so prompt encoding, latents, guidance, callbacks and decoding are diffusers', and the samples equal
``enable_pnp`` on the stock pipeline with the same settings.

Defaults follow the authors' published P&P scripts (the table in ``pnp_kernels.published``).
"""
from __future__ import annotations

import contextvars
import inspect
from dataclasses import dataclass
from typing import Callable

import torch
from diffusers.pipelines.wan.pipeline_output import WanPipelineOutput

from ..compat import is_compiled, is_context_parallel, is_from_pipe_dtype_cast
from ..config import PnPConfig
from ..diffusers.pipeline import PnPPipelineMethods
from ..diffusers.session import PnPSession, check_pnp_arguments
from ..diffusers.support import denoisers, refusal
from ..engine import PnPStats
from ..published import Defaults
from ..validators import check_bool, check_callable, check_int, check_real
from .attention import (
    AttentionChoice,
    AttentionInputs,
    choose_attention_backend,
    model_attention_backend,
    use_attention_backend,
)


@dataclass
class WanPnPPipelineOutput(WanPipelineOutput):
    """diffusers' Wan output plus what the P&P run did.

    pnp_stats: NFEs, per-step iterations and certain fractions, timings, uncertainty maps (PnPStats).
    attention_backend: the diffusers attention backend the transformers ran with.
    attention_refused: backends "auto" passed over, with the reasons.
    """

    pnp_stats: PnPStats | None = None
    attention_backend: str | None = None
    attention_refused: dict | None = None


# Set while from_pipe builds a pipeline without an explicit dtype (see PnPPipelineMixin.to).
_KEEP_DTYPES = contextvars.ContextVar("pnp_kernels_keep_dtypes", default=False)

# The P&P arguments every Wan P&P pipeline takes after diffusers' own call arguments (keyword only).
_PNP_PARAMETERS = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
    for name, default, annotation in (
        ("pnp", None, "PnPConfig | None"),
        ("pnp_seed", None, "int | list[int] | None"),
        ("pnp_group", "auto", "str | torch.distributed.ProcessGroup | None"),
        ("attention", "auto", "str"),
        ("compile", False, "bool"),
        ("capture_uncertainty", False, "bool"),
        ("pnp_callback", None, "Callable[[IterationEvent], None] | None"),
    )
]
# Left unset (None), these follow the authors' published scripts for the model (pnp_kernels.published).
_PUBLISHED_WHEN_UNSET = ("num_inference_steps", "guidance_scale")


def pnp_call(stock_pipeline: type) -> Callable:
    """The ``__call__`` of a P&P subclass of ``stock_pipeline``: diffusers' own call arguments, by
    position or name, followed by the P&P keywords (one signature, derived, never copied)."""
    stock = inspect.signature(stock_pipeline.__call__)
    parameters = [p.replace(default=None) if p.name in _PUBLISHED_WHEN_UNSET else p for p in stock.parameters.values()]
    signature = stock.replace(parameters=parameters + _PNP_PARAMETERS, return_annotation="WanPnPPipelineOutput | tuple")

    @torch.no_grad()
    def __call__(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        del arguments["self"]
        options = {p.name: arguments.pop(p.name) for p in _PNP_PARAMETERS}
        return self._run(arguments, **options)

    __call__.__signature__ = signature
    __call__.__doc__ = f"{stock_pipeline.__name__}'s call arguments, then the P&P keywords (see the class docstring)."
    return __call__


class PnPPipelineMixin(PnPPipelineMethods):
    """Shared part of WanPnPPipeline and WanImageToVideoPnPPipeline (put it before the diffusers base)."""

    # The authors' published settings for this pipeline: (one model, two experts); set by each pipeline.
    _published: tuple[Defaults, Defaults]

    @classmethod
    def from_pipe(cls, pipeline, **kwargs):
        """diffusers' from_pipe; without torch_dtype/dtype the shared modules keep their dtypes (diffusers
        would cast every shared module, also the source pipeline's, to float32)."""
        if "torch_dtype" in kwargs or "dtype" in kwargs:
            return super().from_pipe(pipeline, **kwargs)
        token = _KEEP_DTYPES.set(True)
        try:
            return super().from_pipe(pipeline, **kwargs)
        finally:
            _KEEP_DTYPES.reset(token)

    def to(self, *args, **kwargs):
        if _KEEP_DTYPES.get() and is_from_pipe_dtype_cast(args, kwargs):
            return self  # the dtype-only cast at the end of from_pipe (see from_pipe)
        return super().to(*args, **kwargs)

    def _published_defaults(self) -> Defaults:
        one_model, two_experts = self._published
        return two_experts if self.config.boundary_ratio is not None else one_model

    def _run(self, arguments: dict, pnp, pnp_seed, pnp_group, attention, compile, capture_uncertainty, pnp_callback):
        """The whole call: ``arguments`` are diffusers' call arguments by name, the rest the P&P keywords."""
        defaults = self._published_defaults()
        config = check_pnp_arguments(pnp, pnp_seed, pnp_group, names=("pnp", "pnp_seed", "pnp_group"),
                                     default=PnPConfig(plan=defaults.plan, tau=defaults.tau))
        check_bool("compile", compile)
        check_bool("capture_uncertainty", capture_uncertainty)
        check_callable("pnp_callback", pnp_callback)
        reason = refusal(self)
        if reason is not None:
            raise ValueError(f"P&P cannot run: {reason}")
        self._fill_published(arguments, defaults)
        choice = self._choose_attention(attention)
        if compile:
            self._compile_transformers()
        return_dict = arguments.pop("return_dict")
        _call_after_each_step(arguments)
        session = PnPSession(self, config, pnp_seed, pnp_group, callback=pnp_callback,
                             capture_uncertainty=capture_uncertainty)
        with session.attached(), use_attention_backend(choice, self._experts_models()):
            with session.call((), arguments):
                frames = self.stock_pipeline.__call__(self, **arguments, return_dict=True).frames
        if not return_dict:
            return frames, self.pnp_stats
        return WanPnPPipelineOutput(frames=frames, pnp_stats=self.pnp_stats, attention_backend=choice.backend,
                                    attention_refused=choice.refused)

    def _fill_published(self, a: dict, defaults: Defaults) -> None:
        """Steps, guidance scales and the negative prompt left unset follow the published script; the
        scales must be finite (diffusers would silently run without guidance for NaN)."""
        for name in ("height", "width", "num_frames"):
            check_int(name, a[name], 1)
        if a["num_inference_steps"] is None:
            a["num_inference_steps"] = defaults.steps
        two_experts = self.config.boundary_ratio is not None
        if a["guidance_scale"] is None:
            a["guidance_scale"] = defaults.guidance
            if a["guidance_scale_2"] is None and two_experts:
                a["guidance_scale_2"] = defaults.guidance_2
        check_real("guidance_scale", a["guidance_scale"])
        if a["guidance_scale_2"] is not None:
            check_real("guidance_scale_2", a["guidance_scale_2"])
        if a["negative_prompt"] is None and a["negative_prompt_embeds"] is None and a["prompt"] is not None:
            a["negative_prompt"] = defaults.negative_prompt
        if (a["num_videos_per_prompt"] or 1) > 1:
            self._encode_per_video(a)

    def _encode_per_video(self, a: dict) -> None:
        """Several videos per prompt: the prompts encoded here, one copy per video, and passed as
        embeddings of a batch of single videos (diffusers repeats neither embeddings passed in nor
        the image embeddings per video)."""
        videos = a["num_videos_per_prompt"]
        given = a["prompt_embeds"] is not None, a["negative_prompt_embeds"] is not None
        guided = a["guidance_scale"] > 1.0
        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt=a["prompt"], negative_prompt=a["negative_prompt"], do_classifier_free_guidance=guided,
            num_videos_per_prompt=videos, prompt_embeds=a["prompt_embeds"],
            negative_prompt_embeds=a["negative_prompt_embeds"], max_sequence_length=a["max_sequence_length"],
            device=self._execution_device,
        )
        if given[0]:
            prompt_embeds = prompt_embeds.repeat_interleave(videos, dim=0)
        if given[1] and negative_prompt_embeds is not None:
            negative_prompt_embeds = negative_prompt_embeds.repeat_interleave(videos, dim=0)
        a.update(prompt=None, negative_prompt=None, prompt_embeds=prompt_embeds,
                 negative_prompt_embeds=negative_prompt_embeds if guided else None, num_videos_per_prompt=1)

    def _experts_models(self) -> list:
        models = [model for _, model in denoisers(self)]
        if not models:
            raise ValueError("the pipeline has neither transformer nor transformer_2")
        return models

    def _choose_attention(self, attention: str) -> AttentionChoice:
        models = self._experts_models()
        inputs = AttentionInputs(self._execution_device, models[0].dtype, int(models[0].config.attention_head_dim),
                                 context_parallel=any(is_context_parallel(m) for m in models))
        return choose_attention_backend(attention, inputs, model_attention_backend(models))

    def _compile_transformers(self) -> None:
        """Regional compilation of the repeated blocks (once per model); whole-model compile otherwise."""
        for model in self._experts_models():
            blocks = [m for m in model.modules() if type(m).__name__ in (getattr(model, "_repeated_blocks", None) or ())]
            if blocks:
                if not any(is_compiled(block) for block in blocks):
                    model.compile_repeated_blocks(fullgraph=True)
            elif not is_compiled(model):
                model.compile()


def _call_after_each_step(a: dict) -> None:
    """diffusers' callback_on_step_end after each outer step (the last loop entry of a step), with the
    step's index, instead of after every model call."""
    callback = a["callback_on_step_end"]
    if callback is None:
        return

    def after_step(pipe, entry: int, t, tensors: dict):
        step, _, last = pipe.scheduler.schedule[entry]
        return callback(pipe, step, t, tensors) if last else {}

    a["callback_on_step_end_tensor_inputs"] = getattr(callback, "tensor_inputs", a["callback_on_step_end_tensor_inputs"])
    a["callback_on_step_end"] = after_step
