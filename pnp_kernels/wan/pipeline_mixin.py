"""What the Wan P&P pipelines share: P&P arguments, the sampling run, decoding, output, from_pipe dtypes.

The pipelines subclass diffusers' own (prompt encoding, latent preparation, VideoProcessor stay
diffusers'); only the denoising loop is replaced by ``pnp_sample`` on the scheduler's sigma grid
(SPEC §3: Euler steps, the scheduler's ``step`` is never called).
"""
from __future__ import annotations

import contextvars
import numbers
from dataclasses import dataclass
from typing import Callable

import torch
from diffusers.pipelines.wan.pipeline_output import WanPipelineOutput

from ..compat import is_compiled, is_from_pipe_dtype_cast
from ..config import PnPConfig
from ..sampler import IterationEvent, PnPResult, PnPStats, pnp_sample
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


def _check_flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value


def _derived_pnp_seed(generator) -> int | list[int]:
    """Philox seed when none is given: the generator's initial_seed() (one per generator in a list; a
    single seed s gives sample b the seed s + b), or a draw from torch's global RNG without a generator."""
    if isinstance(generator, torch.Generator):
        return generator.initial_seed()
    if isinstance(generator, (list, tuple)):
        return [g.initial_seed() for g in generator]
    return int(torch.randint(0, 2**62, ()).item())


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


class PnPPipelineMixin:
    """Shared part of WanPnPPipeline and WanImageToVideoPnPPipeline (put it before the diffusers base)."""

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

    @staticmethod
    def _check_pnp_arguments(pnp, pnp_seed, cfg_batch, compile, capture_uncertainty, pnp_callback) -> PnPConfig:
        pnp = PnPConfig() if pnp is None else pnp
        if not isinstance(pnp, PnPConfig):
            raise TypeError(f"pnp must be a PnPConfig or None, got {type(pnp).__name__}")
        _check_flag("cfg_batch", cfg_batch)
        _check_flag("compile", compile)
        _check_flag("capture_uncertainty", capture_uncertainty)
        if pnp_callback is not None and not callable(pnp_callback):
            raise TypeError(f"pnp_callback must be callable, got {type(pnp_callback).__name__}")
        if pnp_seed is not None and pnp.noise != "philox":
            raise ValueError(f"pnp_seed={pnp_seed!r} is only used with PnPConfig(noise='philox'), got noise={pnp.noise!r}")
        return pnp

    def _video_size(self, height: int, width: int, num_frames: int) -> tuple[int, int, int]:
        """Round as diffusers' Wan pipelines do: num_frames to 4k + 1, height/width to whole patches."""
        for name, value in (("height", height), ("width", width), ("num_frames", num_frames)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        step_t = self.vae_scale_factor_temporal
        if num_frames % step_t != 1:
            num_frames = num_frames // step_t * step_t + 1
        patch = self._experts_models()[0].config.patch_size
        multiple_h, multiple_w = self.vae_scale_factor_spatial * patch[1], self.vae_scale_factor_spatial * patch[2]
        return height // multiple_h * multiple_h, width // multiple_w * multiple_w, max(num_frames, 1)

    def _experts_models(self) -> list:
        models = [m for m in (self.transformer, self.transformer_2) if m is not None]
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

    def _set_call_state(self, guidance_scale, guidance_scale_2, attention_kwargs):
        """The attributes diffusers' properties (guidance_scale, ...) and callbacks read."""
        if self.config.boundary_ratio is not None and guidance_scale_2 is None:
            guidance_scale_2 = guidance_scale
        self._guidance_scale, self._guidance_scale_2 = guidance_scale, guidance_scale_2
        self._attention_kwargs = attention_kwargs
        self._current_timestep = None
        self._interrupt = False
        return guidance_scale_2

    # ---- the run ---------------------------------------------------------------------------------

    def _choose_attention(self, attention: str) -> AttentionChoice:
        models = self._experts_models()
        inputs = AttentionInputs(self._execution_device, models[0].dtype, int(models[0].config.attention_head_dim))
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

    def _sample(
        self,
        latents: torch.Tensor,
        conditioning: WanConditioning,
        *,
        pnp: PnPConfig,
        pnp_seed,
        generator,
        guidance_scale: float,
        guidance_scale_2: float | None,
        cfg_batch: bool,
        attention: str,
        compile: bool,
        capture_uncertainty: bool,
        pnp_callback: Callable[[IterationEvent], None] | None,
        callback_on_step_end,
        callback_on_step_end_tensor_inputs,
        attention_kwargs,
    ) -> tuple[PnPResult, AttentionChoice]:
        """Runs pnp_sample with the Wan denoiser on the scheduler's grid (set_timesteps already called)."""
        choice = self._choose_attention(attention)
        if compile:
            self._compile_transformers()
        timesteps = self.scheduler.timesteps
        num_steps = len(timesteps)
        sigmas = self.scheduler.sigmas[: num_steps + 1]
        self._num_timesteps = num_steps
        boundary = None
        if self.config.boundary_ratio is not None:
            boundary = self.config.boundary_ratio * self.scheduler.config.num_train_timesteps
        experts = [Expert(self.transformer, guidance_scale)]
        if boundary is not None:
            experts.append(Expert(self.transformer_2, guidance_scale_2))
        denoiser = WanDenoiser(experts, boundary, timesteps, conditioning, cfg_batch, attention_kwargs)
        for step, expert in enumerate(denoiser.step_experts):
            if expert.model is None:
                raise ValueError(f"step {step} (t={float(timesteps[step]):.1f}) needs a transformer the pipeline lacks")
        step_end = None
        if callback_on_step_end is not None:
            step_end = _StepEndCallback(self, callback_on_step_end, callback_on_step_end_tensor_inputs, denoiser, timesteps)
        if pnp.noise == "philox":
            noise = {"seed": _derived_pnp_seed(generator) if pnp_seed is None else pnp_seed}
        else:
            noise = {"generator": generator}

        pnp.plan.validate(num_steps)
        with self.progress_bar(total=num_steps + pnp.plan.extra_nfe(num_steps)) as bar:

            def on_model_call(event: IterationEvent) -> None:
                self._current_timestep = timesteps[event.step]
                bar.update()
                postfix = {"step": f"{event.step + 1}/{event.num_steps}", "iteration": f"{event.iteration}/{event.planned}"}
                if event.certain_fraction:
                    postfix["certain"] = "/".join(f"{f:.2f}" for f in event.certain_fraction)
                bar.set_postfix(postfix, refresh=False)
                if pnp_callback is not None:
                    pnp_callback(event)

            with use_attention_backend(choice, self._experts_models()):
                result = pnp_sample(
                    denoiser, latents, sigmas, pnp, **noise,
                    num_pinned_frames=conditioning.num_pinned_frames,
                    capture_uncertainty=capture_uncertainty, callback=on_model_call, step_end=step_end,
                )
            bar.total = bar.n  # early exits spend fewer calls than the upper bound
            bar.refresh()
        self._current_timestep = None
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
