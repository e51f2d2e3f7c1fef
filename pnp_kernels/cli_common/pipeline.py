"""Running a local Wan checkpoint with resolved ``SamplingSettings`` (``sampling``): load its P&P
pipeline, and one call of it. torch and diffusers are imported when these run, not with this module."""
from __future__ import annotations

import time
import warnings

from ..config import PnPConfig
from .sampling import SamplingSettings


def load_pipeline(settings: SamplingSettings, with_image: bool):
    import torch

    from ..wan import WanImageToVideoPnPPipeline, WanPnPPipeline

    pipeline_class = WanImageToVideoPnPPipeline if with_image else WanPnPPipeline
    with warnings.catch_warnings():
        # Newer diffusers renamed torch_dtype to dtype; the old name works on every supported version.
        warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
        pipe = pipeline_class.from_pretrained(settings.model.folder, torch_dtype=getattr(torch, settings.dtype))
    if settings.offload:
        pipe.enable_model_cpu_offload(device=settings.device)
    else:
        pipe.to(settings.device)
    return pipe


def generate(pipe, settings: SamplingSettings, image, pnp: PnPConfig, capture_uncertainty: bool,
             decode: bool = True, pnp_group="auto"):
    """One pipeline call; returns (output, seconds). The seed fixes the initial noise and P&P's noise.
    Without ``decode`` the output holds the latents (the ranks that do not write). ``pnp_group``: the
    ranks sampling this video together (the pipeline's argument)."""
    import torch

    generator = torch.Generator(device=settings.device).manual_seed(settings.seed)
    call = dict(
        prompt=settings.prompt, negative_prompt=settings.negative_prompt, height=settings.height,
        width=settings.width, num_frames=settings.frames, num_inference_steps=settings.steps,
        guidance_scale=settings.guidance, generator=generator, output_type="np" if decode else "latent", pnp=pnp,
        pnp_seed=settings.seed if pnp.noise == "philox" else None,
        attention=settings.attention, compile=settings.compile, capture_uncertainty=capture_uncertainty,
        pnp_group=pnp_group,
    )
    if settings.guidance_2 is not None:
        call["guidance_scale_2"] = settings.guidance_2
    if image is not None:
        call["image"] = image
    started = time.perf_counter()
    output = pipe(**call)
    return output, time.perf_counter() - started
