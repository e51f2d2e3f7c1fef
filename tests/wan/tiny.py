"""Tiny random Wan components for the pipeline tests (no download; seconds on a CPU).

Text conditioning is passed as embeddings, so there is no tokenizer or text encoder. Latent shapes
follow the real checkpoints: Wan 2.1 / A14B 16 channels at 8x, TI2V-5B 48 channels at 16x (VAE patch 2).
"""
from __future__ import annotations

import torch

TEXT_DIM = 32
TEXT_LEN = 7
IMAGE_DIM = 16
HEADS, HEAD_DIM = 2, 12  # head_dim splits into rotary (t, h, w) parts


def transformer(in_channels=16, out_channels=16, image_dim=None, seed=0, dtype=torch.float32):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=HEADS, attention_head_dim=HEAD_DIM,
        in_channels=in_channels, out_channels=out_channels, text_dim=TEXT_DIM, freq_dim=32, ffn_dim=32,
        num_layers=2, image_dim=image_dim, added_kv_proj_dim=HEADS * HEAD_DIM if image_dim else None,
        rope_max_seq_len=32,
    )
    # Random init leaves the output projections near zero; larger weights make the velocity (and the
    # refinement's disagreement) depend visibly on the inputs.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return (model if dtype == torch.float32 else model.to(dtype)).eval()


def vae(ti2v=False):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(1)
    if not ti2v:
        return AutoencoderKLWan(
            base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
        ).eval()
    return AutoencoderKLWan(
        base_dim=4, z_dim=48, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True],
        is_residual=True, in_channels=12, out_channels=12, patch_size=2, scale_factor_spatial=16,
        latents_mean=[0.1 * (i % 5) for i in range(48)], latents_std=[1.0 + 0.1 * (i % 3) for i in range(48)],
    ).eval()


def image_encoder():
    """A tiny CLIP vision tower and its processor (Wan 2.1 I2V takes its penultimate hidden states)."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(2)
    config = CLIPVisionConfig(
        hidden_size=IMAGE_DIM, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        image_size=32, patch_size=8,
    )
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return CLIPVisionModel(config).eval(), processor


def scheduler(shift=3.0):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(shift=shift)


def unipc_scheduler(shift=3.0):
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift)


def components(kind="t2v", dtype=torch.float32):
    """Components for WanPnPPipeline (kind t2v, a14b, ti2v) or WanImageToVideoPnPPipeline (i2v21,
    i2v_a14b, ti2v_i2v)."""
    parts = dict(tokenizer=None, text_encoder=None, scheduler=scheduler())
    if kind == "t2v":
        parts.update(vae=vae(), transformer=transformer(dtype=dtype))
    elif kind == "a14b":
        parts.update(vae=vae(), transformer=transformer(dtype=dtype), transformer_2=transformer(seed=7, dtype=dtype),
                     boundary_ratio=0.875)
    elif kind in ("ti2v", "ti2v_i2v"):
        parts.update(vae=vae(ti2v=True), transformer=transformer(48, 48, dtype=dtype), expand_timesteps=True)
    elif kind == "i2v_a14b":
        parts.update(vae=vae(), transformer=transformer(36, dtype=dtype), transformer_2=transformer(36, seed=7, dtype=dtype),
                     boundary_ratio=0.9, image_encoder=None, image_processor=None)
    elif kind == "i2v21":
        encoder, processor = image_encoder()
        parts.update(vae=vae(), transformer=transformer(36, image_dim=IMAGE_DIM, dtype=dtype),
                     image_encoder=encoder, image_processor=processor)
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return parts


def prompt_embeds(batch, seed=0, length=TEXT_LEN):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, length, TEXT_DIM, generator=g)


def image(height, width, seed=0):
    """A random RGB PIL image."""
    import PIL.Image

    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (height, width, 3), generator=g, dtype=torch.uint8)
    return PIL.Image.fromarray(pixels.numpy())
