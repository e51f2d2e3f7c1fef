"""Drop-in diffusers pipelines for Wan 2.1 / 2.2 with Predict-and-Perturb sampling (SPEC §5)."""
from .attention import AUTO_PRIORITY, AttentionChoice, choose_attention_backend
from .pipeline_mixin import WanPnPPipelineOutput
from .pipeline_wan import WanPnPPipeline
from .pipeline_wan_i2v import WanImageToVideoPnPPipeline

__all__ = [
    "AUTO_PRIORITY",
    "AttentionChoice",
    "WanImageToVideoPnPPipeline",
    "WanPnPPipeline",
    "WanPnPPipelineOutput",
    "choose_attention_backend",
]
