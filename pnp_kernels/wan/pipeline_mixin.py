"""What the Wan P&P pipelines share: the whole call (``_run``), the sampling run, decoding, output,
published defaults, from_pipe dtypes.

The pipelines subclass diffusers' own (prompt encoding, latent preparation, VideoProcessor stay
diffusers'); only the denoising loop is replaced: the P&P engine (``pnp_kernels.engine``) on the
scheduler's sigma grid (Euler steps, the scheduler's ``step`` is never called). Each pipeline adds
its own input checks and conditioning (``_check_call``, ``_prepare``).

Defaults follow the authors' published P&P scripts (the table in ``pnp_kernels.published``): the
text-to-video plan 2-5:3,6-14:1 with tau 0.25 (Wan 2.2 A14B: 40 steps, 2-5:3,6-13:1, tau 0.2, guidance
4 / 3); image-to-video tau 0 (Wan 2.2 I2V-A14B: plan 1-5:3,6-13:1, guidance 3.5 for both experts); the
negative prompt "low quality".
"""
from __future__ import annotations

import contextvars
import dataclasses
import inspect
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable

import torch
from diffusers.pipelines.wan.pipeline_output import WanPipelineOutput

from ..published import Defaults
from ..compat import is_compiled, is_context_parallel, is_from_pipe_dtype_cast, set_call_state
from ..config import PnPConfig
from ..diffusers.session import check_seed_noise, engine_noise
from ..diffusers.support import denoisers
from ..engine import IterationEvent, PnPEngine, PnPStats, check_process_group
from ..sampler import Guided, PnPResult
from ..validators import check_bool, check_callable, check_int, check_real
from .attention import (
    AttentionChoice,
    AttentionInputs,
    choose_attention_backend,
    model_attention_backend,
    use_attention_backend,
)
from .denoiser import Expert, WanConditioning, WanDenoiser


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


class _StepEndCallback:
    """Runs diffusers' ``callback_on_step_end(pipe, step, t, tensors)`` as pnp_sample's step_end hook:
    latents it returns replace the sampler state; prompt embeddings it returns replace the denoiser's."""

    def __init__(self, pipe, callback, tensor_names, denoiser: WanDenoiser, timesteps):
        self.pipe, self.callback, self.tensor_names = pipe, callback, tensor_names
        self.denoiser, self.timesteps = denoiser, timesteps

    def __call__(self, step: int, latents: torch.Tensor) -> torch.Tensor | None:
        c = self.denoiser.conditioning
        available = {
            "latents": latents,
            "prompt_embeds": c.prompt_embeds,
            "negative_prompt_embeds": c.negative_prompt_embeds,
        }
        returned = self.callback(self.pipe, step, self.timesteps[step], {k: available[k] for k in self.tensor_names})
        returned = dict(returned or {})
        new_latents = returned.pop("latents", None)
        if "prompt_embeds" in returned or "negative_prompt_embeds" in returned:
            self.denoiser.set_prompt_embeds(
                returned.pop("prompt_embeds", c.prompt_embeds),
                returned.pop("negative_prompt_embeds", c.negative_prompt_embeds),
            )
        return new_latents


# The P&P arguments every Wan P&P pipeline takes after diffusers' own call arguments (keyword only).
_PNP_PARAMETERS = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
    for name, default, annotation in (
        ("pnp", None, "PnPConfig | None"),
        ("pnp_seed", None, "int | list[int] | None"),
        ("pnp_group", "auto", "str | torch.distributed.ProcessGroup | None"),
        ("cfg_batch", True, "bool"),
        ("attention", "auto", "str"),
        ("compile", False, "bool"),
        ("capture_uncertainty", False, "bool"),
        ("pnp_callback", None, "Callable[[IterationEvent], None] | None"),
    )
]
# Left unset (None), these follow the authors' published scripts for the model (pnp_kernels.published).
_PUBLISHED_WHEN_UNSET = ("num_inference_steps", "guidance_scale")
# Every diffusers call argument the shared run reads; a diffusers release that adds one fails
# tests/wan/test_pipeline_defaults.py instead of having it silently ignored.
HANDLED_CALL_ARGUMENTS = frozenset({
    "image", "prompt", "negative_prompt", "height", "width", "num_frames", "num_inference_steps",
    "guidance_scale", "guidance_scale_2", "num_videos_per_prompt", "generator", "latents", "prompt_embeds",
    "negative_prompt_embeds", "image_embeds", "last_image", "output_type", "return_dict", "attention_kwargs",
    "callback_on_step_end", "callback_on_step_end_tensor_inputs", "max_sequence_length",
})


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
        return self._run(arguments)

    __call__.__signature__ = signature
    __call__.__doc__ = f"{stock_pipeline.__name__}'s call arguments, then the P&P keywords (see the class docstring)."
    return __call__


class PnPPipelineMixin:
    """Shared part of WanPnPPipeline and WanImageToVideoPnPPipeline (put it before the diffusers base).
    Each pipeline provides ``_check_call`` (diffusers' input checks) and ``_prepare`` (timesteps, latents,
    conditioning)."""

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

    # ---- arguments -------------------------------------------------------------------------------

    def _published_defaults(self) -> Defaults:
        """The authors' published settings for this pipeline and model (see the module docstring)."""
        one_model, two_experts = self._published
        return two_experts if self.config.boundary_ratio is not None else one_model

    def _check_pnp_arguments(self, a) -> PnPConfig:
        pnp = a.pnp
        if pnp is None:
            defaults = self._published_defaults()
            pnp = PnPConfig(plan=defaults.plan, tau=defaults.tau)
        if not isinstance(pnp, PnPConfig):
            raise TypeError(f"pnp must be a PnPConfig or None, got {type(pnp).__name__}")
        check_bool("cfg_batch", a.cfg_batch)
        check_bool("compile", a.compile)
        check_bool("capture_uncertainty", a.capture_uncertainty)
        check_callable("pnp_callback", a.pnp_callback)
        check_seed_noise("pnp_seed", a.pnp_seed, pnp)
        check_process_group("pnp_group", a.pnp_group)
        return pnp

    def _video_size(self, height: int, width: int, num_frames: int) -> tuple[int, int, int]:
        """Round as diffusers' Wan pipelines do: num_frames to 4k + 1, height/width to whole patches."""
        for name, value in (("height", height), ("width", width), ("num_frames", num_frames)):
            check_int(name, value, 1)
        step_t = self.vae_scale_factor_temporal
        if num_frames % step_t != 1:
            num_frames = num_frames // step_t * step_t + 1
        patch = self._experts_models()[0].config.patch_size
        multiple_h, multiple_w = self.vae_scale_factor_spatial * patch[1], self.vae_scale_factor_spatial * patch[2]
        return height // multiple_h * multiple_h, width // multiple_w * multiple_w, max(num_frames, 1)

    def _experts_models(self) -> list:
        models = [model for _, model in denoisers(self)]
        if not models:
            raise ValueError("the pipeline has neither transformer nor transformer_2")
        return models

    @staticmethod
    def _prompt_batch(prompt, prompt_embeds) -> int:
        if isinstance(prompt, str):
            return 1
        if isinstance(prompt, list):
            return len(prompt)
        return prompt_embeds.shape[0]

    def _encode_prompts(self, prompt, negative_prompt, prompt_embeds, negative_prompt_embeds,
                        num_videos_per_prompt, max_sequence_length, device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """diffusers' encode_prompt, plus the per-video repeat it skips for embeddings passed in directly."""
        given = prompt_embeds is not None, negative_prompt_embeds is not None
        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt=prompt, negative_prompt=negative_prompt,
            do_classifier_free_guidance=self.do_classifier_free_guidance,
            num_videos_per_prompt=num_videos_per_prompt,
            prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds,
            max_sequence_length=max_sequence_length, device=device,
        )
        if num_videos_per_prompt > 1:
            if given[0]:
                prompt_embeds = prompt_embeds.repeat_interleave(num_videos_per_prompt, dim=0)
            if given[1] and negative_prompt_embeds is not None:
                negative_prompt_embeds = negative_prompt_embeds.repeat_interleave(num_videos_per_prompt, dim=0)
        dtype = self._experts_models()[0].dtype
        if not self.do_classifier_free_guidance:
            negative_prompt_embeds = None
        return prompt_embeds.to(dtype), None if negative_prompt_embeds is None else negative_prompt_embeds.to(dtype)

    def _guidance_scales(self, guidance_scale, guidance_scale_2) -> tuple[float, float | None]:
        """The scales of the call: the published ones when none is given; guidance_scale_2 (the
        low-noise expert's) defaults to guidance_scale when only that is given. Non-finite scales are
        refused (diffusers would silently run without guidance for NaN)."""
        two_experts = self.config.boundary_ratio is not None
        if guidance_scale is None:
            defaults = self._published_defaults()
            guidance_scale = defaults.guidance
            if guidance_scale_2 is None and two_experts:
                guidance_scale_2 = defaults.guidance_2
        guidance_scale = check_real("guidance_scale", guidance_scale)
        if guidance_scale_2 is None and two_experts:
            guidance_scale_2 = guidance_scale
        if guidance_scale_2 is not None:
            guidance_scale_2 = check_real("guidance_scale_2", guidance_scale_2)
        return guidance_scale, guidance_scale_2

    # ---- the run ---------------------------------------------------------------------------------

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

    def _run(self, arguments: dict):
        """The whole call of either pipeline; ``arguments`` are its call arguments by name."""
        a = SimpleNamespace(**arguments)
        tensor_inputs = getattr(a.callback_on_step_end, "tensor_inputs", a.callback_on_step_end_tensor_inputs)
        a.guidance_scale, a.guidance_scale_2 = self._guidance_scales(a.guidance_scale, a.guidance_scale_2)
        self._check_call(a, tensor_inputs)
        pnp = self._check_pnp_arguments(a)
        defaults = self._published_defaults()
        steps = defaults.steps if a.num_inference_steps is None else a.num_inference_steps
        negative_prompt = a.negative_prompt
        if negative_prompt is None and a.negative_prompt_embeds is None and a.prompt is not None:
            negative_prompt = defaults.negative_prompt
        a.height, a.width, a.num_frames = self._video_size(a.height, a.width, a.num_frames)
        # What diffusers' properties (guidance_scale, ...) and callbacks read.
        set_call_state(self, guidance_scale=a.guidance_scale, guidance_scale_2=a.guidance_scale_2,
                       attention_kwargs=a.attention_kwargs, current_timestep=None, interrupt=False)
        device = self._execution_device
        videos_per_prompt = a.num_videos_per_prompt or 1
        batch = self._prompt_batch(a.prompt, a.prompt_embeds) * videos_per_prompt
        prompt_embeds, negative_prompt_embeds = self._encode_prompts(
            a.prompt, negative_prompt, a.prompt_embeds, a.negative_prompt_embeds,
            videos_per_prompt, a.max_sequence_length, device,
        )
        latents, conditioning = self._prepare(a, batch, device, prompt_embeds, negative_prompt_embeds, steps)
        result, choice = self._sample(latents, conditioning, pnp, a, tensor_inputs)
        return self._output(result, choice, a.output_type, a.return_dict)

    def _sample(self, latents: torch.Tensor, conditioning: WanConditioning, pnp: PnPConfig, a: SimpleNamespace,
                tensor_inputs) -> tuple[PnPResult, AttentionChoice]:
        """The P&P engine with the Wan denoiser on the scheduler's grid (set_timesteps already called):
        each model call computes only the samples the engine still iterates."""
        choice = self._choose_attention(a.attention)
        if a.compile:
            self._compile_transformers()
        timesteps = self.scheduler.timesteps
        num_steps = len(timesteps)
        sigmas = self.scheduler.sigmas[: num_steps + 1]
        set_call_state(self, num_timesteps=num_steps)
        boundary = None
        if self.config.boundary_ratio is not None:
            boundary = self.config.boundary_ratio * self.scheduler.config.num_train_timesteps
        # Plans by sigma, fraction or expert mean a step-index plan on this grid (t = sigma * 1000).
        pnp = dataclasses.replace(pnp, plan=pnp.plan.resolve(sigmas, boundary_sigma=self.config.boundary_ratio))
        experts = [Expert(self.transformer, a.guidance_scale)]
        if boundary is not None:
            experts.append(Expert(self.transformer_2, a.guidance_scale_2))
        denoiser = WanDenoiser(experts, boundary, timesteps, conditioning, a.cfg_batch, a.attention_kwargs)
        for step, expert in enumerate(denoiser.step_experts):
            if expert.model is None:
                raise ValueError(f"step {step} (t={float(timesteps[step]):.1f}) needs a transformer the pipeline lacks")
        step_end = None
        if a.callback_on_step_end is not None:
            step_end = _StepEndCallback(self, a.callback_on_step_end, tensor_inputs, denoiser, timesteps)
        noise = engine_noise(pnp, a.pnp_seed, a.generator)

        with self.progress_bar(total=num_steps + pnp.plan.extra_nfe(num_steps)) as bar:

            def on_model_call(event: IterationEvent) -> None:
                set_call_state(self, current_timestep=timesteps[event.step])
                bar.update()
                postfix = {"step": f"{event.step + 1}/{event.num_steps}", "iteration": f"{event.iteration}/{event.planned}"}
                if event.certain_fraction:
                    postfix["certain"] = "/".join(f"{f:.2f}" for f in event.certain_fraction)
                bar.set_postfix(postfix, refresh=False)
                if a.pnp_callback is not None:
                    a.pnp_callback(event)

            engine = PnPEngine(pnp, sigmas, latents, num_pinned_frames=conditioning.num_pinned_frames,
                               capture_uncertainty=a.capture_uncertainty, callback=on_model_call, group=a.pnp_group,
                               **noise)
            with use_attention_backend(choice, self._experts_models()):
                for step in range(num_steps):
                    z_in = engine.begin_step(step)
                    while z_in is not None:
                        out = denoiser(z_in, step, engine.sigmas[step], engine.active)
                        z_in = engine.feed(out.cond, out.uncond, out.scale) if isinstance(out, Guided) else engine.feed(out)
                    if step_end is not None:
                        replaced = step_end(step, engine.z)
                        if replaced is not None:
                            engine.set_state(replaced, source=f"the latents callback_on_step_end returned after step {step}")
            result = PnPResult(engine.z, engine.finish())
            bar.total = bar.n  # early exits spend fewer calls than the upper bound
            bar.refresh()
        set_call_state(self, current_timestep=None)
        return result, choice

    def _decode(self, latents: torch.Tensor, output_type: str):
        if output_type == "latent":
            return latents
        from diffusers.utils.torch_utils import get_module_execution_device

        vae = self.vae
        latents = latents.to(get_module_execution_device(vae), vae.dtype)
        shape = (1, vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents)
        std = torch.tensor(vae.config.latents_std).view(shape).to(latents)
        video = vae.decode(latents * std + mean, return_dict=False)[0]
        return self.video_processor.postprocess_video(video, output_type=output_type)

    def _output(self, result: PnPResult, choice: AttentionChoice, output_type: str, return_dict: bool):
        video = self._decode(result.latents, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return video, result.stats
        return WanPnPPipelineOutput(
            frames=video, pnp_stats=result.stats, attention_backend=choice.backend, attention_refused=choice.refused
        )

