"""Image-to-video Wan 2.1 I2V, Wan 2.2 I2V-A14B and TI2V-5B with Predict-and-Perturb sampling."""
from __future__ import annotations

import torch
from diffusers import WanImageToVideoPipeline

from ..published import WAN21_I2V, WAN22_I2V
from .denoiser import WanConditioning
from .pipeline_mixin import PnPPipelineMixin, pnp_call


class WanImageToVideoPnPPipeline(PnPPipelineMixin, WanImageToVideoPipeline):
    """diffusers' WanImageToVideoPipeline sampling with P&P; the extra arguments are those of
    ``WanPnPPipeline``.

    36-channel models (Wan 2.1 I2V, Wan 2.2 I2V-A14B) see ``cat([z, mask + image latents])``; only the 16
    noisy channels are refined. TI2V-5B (``expand_timesteps``) puts the encoded image into the first
    latent frame, which is pinned there (timestep 0, never perturbed, never counted as uncertain), so
    image-to-video works for it too.

    Defaults left as None follow the authors' published image-to-video pipeline and scripts: tau 0
    (every region is re-predicted) with the text-to-video plan; Wan 2.2 I2V-A14B 40 steps, plan
    1-5:3,6-13:1, guidance 3.5 for both experts; negative prompt "low quality" for text prompts.
    """

    _published = (WAN21_I2V, WAN22_I2V)

    __call__ = pnp_call(WanImageToVideoPipeline)

    def _check_call(self, a, tensor_inputs) -> None:
        self.check_inputs(
            a.prompt, a.negative_prompt, a.image, a.height, a.width, a.prompt_embeds, a.negative_prompt_embeds,
            a.image_embeds, tensor_inputs, a.guidance_scale_2,
        )

    def _prepare(self, a, batch, device, prompt_embeds, negative_prompt_embeds, steps):
        image_embeds = self._image_embeds(a.image, a.last_image, a.image_embeds, batch, device, prompt_embeds.dtype)
        self.scheduler.set_timesteps(steps, device=device)
        image = self.video_processor.preprocess(a.image, height=a.height, width=a.width).to(device, torch.float32)
        last_image = a.last_image
        if last_image is not None:
            last_image = self.video_processor.preprocess(last_image, height=a.height, width=a.width).to(device, torch.float32)
        prepared = self.prepare_latents(
            image, batch, self.vae.config.z_dim, a.height, a.width, a.num_frames, torch.float32, device, a.generator,
            a.latents, last_image,
        )
        if self.config.expand_timesteps:
            # TI2V-5B: the encoded image becomes latent frame 0 and stays pinned there.
            latents, image_latents, _ = prepared
            latents = latents.clone()
            latents[:, :, :1] = image_latents
            conditioning = WanConditioning(
                prompt_embeds, negative_prompt_embeds, image_embeds, expand_timesteps=True, num_pinned_frames=1
            )
        else:
            latents, condition = prepared  # mask (4 channels) + image latents (16 channels)
            conditioning = WanConditioning(prompt_embeds, negative_prompt_embeds, image_embeds, condition=condition)
        return latents, conditioning

    def _image_embeds(self, image, last_image, image_embeds, batch, device, dtype) -> torch.Tensor | None:
        """CLIP image tokens, for the transformers that take them (Wan 2.1 I2V: ``image_dim`` is set);
        one copy per video (diffusers repeats per prompt only, which breaks num_videos_per_prompt > 1)."""
        if self.transformer is None or self.transformer.config.image_dim is None:
            return None
        if image_embeds is None:
            if self.image_encoder is None or self.image_processor is None:
                raise ValueError("this transformer takes CLIP image embeddings: load image_encoder and "
                                 "image_processor, or pass image_embeds=")
            image_embeds = self.encode_image(image if last_image is None else [image, last_image], device)
        return image_embeds.repeat(batch, 1, 1).to(device, dtype)
