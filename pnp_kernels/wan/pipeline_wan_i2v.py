"""Image-to-video Wan 2.1 I2V, Wan 2.2 I2V-A14B and TI2V-5B with Predict-and-Perturb sampling."""
from __future__ import annotations

from diffusers import WanImageToVideoPipeline

from ..published import WAN21_I2V, WAN22_I2V
from .pipeline_mixin import PnPPipelineMixin, pnp_call


class WanImageToVideoPnPPipeline(PnPPipelineMixin, WanImageToVideoPipeline):
    """diffusers' WanImageToVideoPipeline sampling with P&P; the extra arguments are those of
    ``WanPnPPipeline``.

    36-channel models (Wan 2.1 I2V, Wan 2.2 I2V-A14B) see ``cat([z, mask + image latents])``; only the 16
    noisy channels are refined. TI2V-5B (``expand_timesteps``) puts the encoded image into the first
    latent frame, which is pinned there (timestep 0, never perturbed, never counted as uncertain).

    Defaults left as None follow the authors' published image-to-video pipeline and scripts: tau 0
    (every region is re-predicted) with the text-to-video plan; Wan 2.2 I2V-A14B 40 steps, plan
    1-5:3,6-13:1, guidance 3.5 for both experts; negative prompt "low quality" for text prompts.
    """

    stock_pipeline = WanImageToVideoPipeline
    _published = (WAN21_I2V, WAN22_I2V)

    __call__ = pnp_call(WanImageToVideoPipeline)
