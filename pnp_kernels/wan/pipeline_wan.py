"""Text-to-video Wan 2.1 / 2.2 (A14B two-expert, TI2V-5B) with Predict-and-Perturb sampling."""
from __future__ import annotations

from typing import Any, Callable

import torch
from diffusers import WanPipeline

from ..config import PnPConfig
from ..sampler import IterationEvent
from .denoiser import WanConditioning
from .pipeline_mixin import PnPPipelineMixin, WanPnPPipelineOutput


class WanPnPPipeline(PnPPipelineMixin, WanPipeline):
    """diffusers' WanPipeline sampling with P&P (arXiv 2601.18577; SPEC §3): Euler steps on the
    scheduler's sigma grid, refined steps predict-perturb-predict with the fused ``pnp_update``.

    Loads like WanPipeline (``from_pretrained``, ``from_pipe``) and takes all its call arguments, plus:

    pnp: PnPConfig (None: the published default ``PnPConfig()``; an empty plan is plain Euler).
    pnp_seed: philox seed (noise="philox" only); default: the generator's ``initial_seed()`` (sample b
        of one generator gets seed + b; a generator list gives one seed each).
    cfg_batch: conditional and unconditional passes in one batch-2B forward (False: one after the other).
    attention: "auto" or a diffusers attention backend name (see ``pnp_kernels.wan.attention``).
    compile: compile the repeated transformer blocks (regional compilation) before sampling.
    capture_uncertainty: keep per-iteration (B, F, H, W) uncertainty and certain maps in pnp_stats.
    pnp_callback: called with an IterationEvent after every model call.

    Guidance is combined in float32 inside the update (stock diffusers rounds it in the model dtype).
    ``callback_on_step_end`` runs after each outer step; latents it returns replace the state. Setting
    the pipeline's ``_interrupt`` from a callback has no effect (a refined step is not left half done).
    Returns WanPnPPipelineOutput (frames, pnp_stats, attention_backend) or ``(frames, pnp_stats)``.
    """

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] = None,
        negative_prompt: str | list[str] = None,
        height: int = 480,
        width: int = 832,
        num_frames: int = 81,
        num_inference_steps: int = 50,
        guidance_scale: float = 5.0,
        guidance_scale_2: float | None = None,
        num_videos_per_prompt: int | None = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str | None = "np",
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],
        max_sequence_length: int = 512,
        *,
        pnp: PnPConfig | None = None,
        pnp_seed: int | list[int] | None = None,
        cfg_batch: bool = True,
        attention: str = "auto",
        compile: bool = False,
        capture_uncertainty: bool = False,
        pnp_callback: Callable[[IterationEvent], None] | None = None,
    ) -> WanPnPPipelineOutput | tuple:
        callback_on_step_end_tensor_inputs = getattr(callback_on_step_end, "tensor_inputs", callback_on_step_end_tensor_inputs)
        self.check_inputs(
            prompt, negative_prompt, height, width, prompt_embeds, negative_prompt_embeds,
            callback_on_step_end_tensor_inputs, guidance_scale_2,
        )
        pnp = self._check_pnp_arguments(pnp, pnp_seed, cfg_batch, compile, capture_uncertainty, pnp_callback)
        height, width, num_frames = self._video_size(height, width, num_frames)
        guidance_scale_2 = self._set_call_state(guidance_scale, guidance_scale_2, attention_kwargs)
        device = self._execution_device
        num_videos_per_prompt = num_videos_per_prompt or 1
        batch = self._prompt_batch(prompt, prompt_embeds) * num_videos_per_prompt

        prompt_embeds, negative_prompt_embeds = self._encode_prompts(
            prompt, negative_prompt, prompt_embeds, negative_prompt_embeds,
            num_videos_per_prompt, max_sequence_length, device,
        )
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        in_channels = self._experts_models()[0].config.in_channels
        latents = self.prepare_latents(
            batch, in_channels, height, width, num_frames, torch.float32, device, generator, latents
        )
        conditioning = WanConditioning(
            prompt_embeds, negative_prompt_embeds, expand_timesteps=bool(self.config.expand_timesteps)
        )
        result, choice = self._sample(
            latents, conditioning, pnp=pnp, pnp_seed=pnp_seed, generator=generator,
            guidance_scale=guidance_scale, guidance_scale_2=guidance_scale_2, cfg_batch=cfg_batch,
            attention=attention, compile=compile, capture_uncertainty=capture_uncertainty,
            pnp_callback=pnp_callback, callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            attention_kwargs=attention_kwargs,
        )
        return self._output(result, choice, output_type, return_dict)
