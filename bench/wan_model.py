"""A Wan2.1-1.3B-shaped diffusers WanTransformer3DModel with random weights, its FLOP count, and
denoiser closures for pnp_sample (shared by the transformer and end-to-end benchmarks).

diffusers is imported only where a model is built: importing this module needs torch alone."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.harness import bench_size
from pnp_kernels import Guided

WAN21_1_3B = dict(
    patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
    text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
)
# Same architecture, a few thousand times smaller: exercises every code path on CPU in milliseconds.
TINY = dict(WAN21_1_3B, num_attention_heads=2, attention_head_dim=16, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2)


@dataclass(frozen=True)
class WanProblem:
    name: str
    config: dict
    latents: tuple[int, int, int, int, int]  # (B, C, F, H, W) of one sample
    text_len: int


PROBLEMS = {
    "full": {
        "480p-81f": WanProblem("480p-81f", WAN21_1_3B, (1, 16, 21, 60, 104), 512),
        "720p-81f": WanProblem("720p-81f", WAN21_1_3B, (1, 16, 21, 90, 160), 512),
    },
    "tiny": {"tiny": WanProblem("tiny", TINY, (1, 16, 3, 6, 10), 16)},
}[bench_size()]


def build_model(config: dict, device: torch.device, dtype: torch.dtype = torch.bfloat16):
    """Random-weight model on ``device`` (initialised there: 1.3B parameters take long to init on CPU),
    in ``dtype`` except the modules diffusers keeps in float32 when it loads a checkpoint that way."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    with torch.device(device):
        model = WanTransformer3DModel(**config)
    keep_fp32 = set(model._keep_in_fp32_modules or ())
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        tensor.data = tensor.data.to(torch.float32 if keep_fp32 & set(name.split(".")) else dtype)
    return model.eval().requires_grad_(False)


def text_embeddings(problem: WanProblem, batch: int, device, dtype=torch.bfloat16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(batch, problem.text_len, problem.config["text_dim"], generator=g, device=device).to(dtype)


def forward_flops(problem: WanProblem, batch: int = 1) -> dict:
    """FLOPs of one forward: linear layers (2 per multiply-add) and attention (QK^T and PV).

    L tokens after patching, d = heads * head_dim, T text tokens. Per block: self-attention
    projections 4 L d^2, cross-attention q/o 2 L d^2 and k/v 2 T d^2, FFN 2 L d ffn; plus patch
    embedding, text/time embedders and the output projection. Attention per block: self 4 L^2 d,
    cross 4 L T d. Norms, RoPE, modulation and softmax are left out (they are not matrix work).
    """
    c = problem.config
    pt, ph, pw = c["patch_size"]
    _, _, f, h, w = problem.latents
    tokens = (f // pt) * (h // ph) * (w // pw)
    d, text, ffn = c["num_attention_heads"] * c["attention_head_dim"], problem.text_len, c["ffn_dim"]
    patch_in, patch_out = c["in_channels"] * pt * ph * pw, c["out_channels"] * pt * ph * pw
    per_block_macs = 6 * tokens * d * d + 2 * text * d * d + 2 * tokens * d * ffn
    embed_macs = tokens * patch_in * d + text * (c["text_dim"] * d + d * d) + c["freq_dim"] * d + 7 * d * d
    linear = 2 * batch * (c["num_layers"] * per_block_macs + embed_macs + tokens * d * patch_out)
    attention = batch * c["num_layers"] * (4 * tokens * tokens * d + 4 * tokens * text * d)
    return {"linear": linear, "attention": attention, "total": linear + attention, "tokens": tokens}


def plain_denoiser(model, text: torch.Tensor):
    """pnp_sample denoiser around the transformer without guidance: one forward per model call."""

    def denoise(z: torch.Tensor, step: int, sigma: float) -> torch.Tensor:
        t = torch.full((z.shape[0],), sigma * 1000.0, device=z.device)  # Wan timesteps: sigma * 1000
        return model(z.to(model.dtype), t, text, return_dict=False)[0]

    return denoise


def guided_denoiser(model, cond: torch.Tensor, uncond: torch.Tensor, guidance_scale: float, batched: bool):
    """pnp_sample denoiser around the transformer: cond and uncond in one batch-2B forward, or two
    sequential batch-B forwards (the published pipelines' way). Guidance itself is fused into the update."""

    def denoise(z: torch.Tensor, step: int, sigma: float) -> Guided:
        x = z.to(model.dtype)
        t = torch.full((z.shape[0],), sigma * 1000.0, device=z.device)  # Wan timesteps: sigma * 1000
        if batched:
            both = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, uncond]), return_dict=False)[0]
            v_cond, v_uncond = both.chunk(2)
        else:
            v_cond = model(x, t, cond, return_dict=False)[0]
            v_uncond = model(x, t, uncond, return_dict=False)[0]
        return Guided(v_cond, v_uncond, guidance_scale)

    return denoise
