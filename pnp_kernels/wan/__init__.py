"""Drop-in diffusers pipelines for Wan 2.1 / 2.2 with Predict-and-Perturb sampling.

    from pnp_kernels import PnPConfig
    from pnp_kernels.wan import WanPnPPipeline

    pipe = WanPnPPipeline.from_pretrained(folder, torch_dtype=torch.bfloat16).to("cuda")
    out = pipe(prompt="a cat on a beach", num_inference_steps=50, generator=torch.Generator().manual_seed(0),
               pnp=PnPConfig(plan="2-5:3,6-14:1", tau=0.25))
    out.frames, out.pnp_stats.summary(), out.attention_backend

``WanImageToVideoPnPPipeline`` takes ``image=`` as well. An empty plan (``PnPConfig(plan="none")``)
is plain Euler on the scheduler's sigma grid.
"""
from .attention import ATTENTION_BACKEND_PRIORITY, AttentionChoice, choose_attention_backend
from .pipeline_mixin import WanPnPPipelineOutput
from .pipeline_wan import WanPnPPipeline
from .pipeline_wan_i2v import WanImageToVideoPnPPipeline

__all__ = [
    "ATTENTION_BACKEND_PRIORITY",
    "AttentionChoice",
    "WanImageToVideoPnPPipeline",
    "WanPnPPipeline",
    "WanPnPPipelineOutput",
    "choose_attention_backend",
]
