"""Tiny but complete Wan checkpoints in diffusers format, built offline for the command-line tests.

Every component is real (tokenizer, UMT5 text encoder, Wan transformer, Wan VAE, scheduler, and for
Wan 2.1 I2V a CLIP image encoder), only shrunk to a few thousand weights, so that ``pnp-sample``
exercises the same loading path as a downloaded checkpoint in seconds on a CPU.
"""
from __future__ import annotations

from pathlib import Path

import torch

# Latent shape rules of a real Wan 2.1 checkpoint: 16 channels, 8x spatial, 4x temporal, patch (1, 2, 2).
TEXT_DIM = 16
VAE_JITTER = 0.08
WORDS = ["a", "cat", "dog", "runs", "on", "the", "beach", "blurry", "static", "low", "quality"]


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def _text_encoder(vocab_size: int):
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(
        vocab_size=vocab_size, d_model=TEXT_DIM, d_kv=4, d_ff=32, num_layers=1, num_heads=2,
        relative_attention_num_buckets=8, relative_attention_max_distance=16,
    )
    return UMT5EncoderModel(config).eval()


def _transformer(in_channels: int = 16, image_dim: int | None = None, out_channels: int = 16):
    from diffusers import WanTransformer3DModel

    heads, head_dim = 2, 12  # head_dim splits into (t, h, w) rotary parts: 12 = 4 + 4 + 4
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=head_dim,
        in_channels=in_channels, out_channels=out_channels, text_dim=TEXT_DIM, freq_dim=32, ffn_dim=32,
        num_layers=2, image_dim=image_dim, added_kv_proj_dim=heads * head_dim if image_dim else None,
        rope_max_seq_len=32,
    )
    # Fresh output projections are near zero, which would make every prediction agree; jittered
    # weights give velocities (and so uncertainty maps) that vary over the frame.
    with torch.no_grad():
        for weight in model.parameters():
            weight.add_(0.05 * torch.randn_like(weight))
    return model.eval()


def _vae(ti2v: bool = False):
    from diffusers import AutoencoderKLWan

    shape = dict(base_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True])
    if ti2v:  # Wan 2.2 VAE: 48 channels, 16x spatial through a 2x2 pixel patch, residual blocks
        vae = AutoencoderKLWan(
            z_dim=48, is_residual=True, in_channels=12, out_channels=12, patch_size=2, scale_factor_spatial=16,
            latents_mean=[0.0] * 48, latents_std=[1.0] * 48, **shape,
        )
    else:
        vae = AutoencoderKLWan(z_dim=16, **shape)
    # A fresh decoder turns any latent into nearly the same grey; jittered weights make the decoded
    # video depend on the latents clearly enough for a written mp4 to be told apart from another run.
    with torch.no_grad():
        for weight in vae.decoder.parameters():
            weight.add_(VAE_JITTER * torch.randn_like(weight))
    return vae.eval()


def _scheduler():
    from diffusers import UniPCMultistepScheduler

    # What the published Wan 2.1 checkpoints ship: UniPC with flow sigmas and a shift of 3 (480p).
    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)


def _image_encoder():
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(
        hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8,
        projection_dim=8,
    )
    processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return CLIPVisionModel(config).eval(), processor


def build_tiny_wan(folder: Path, kind: str = "t2v", seed: int = 0) -> Path:
    """Write a tiny ``kind`` checkpoint to ``folder`` and return it: "t2v" (Wan 2.1), "a14b" (two experts),
    "ti2v" (TI2V-5B: 48 latent channels, per-token timesteps) or "i2v" (Wan 2.1 I2V with a CLIP encoder)."""
    from diffusers import WanImageToVideoPipeline, WanPipeline

    torch.manual_seed(seed)
    tokenizer = _tokenizer()
    common = dict(tokenizer=tokenizer, text_encoder=_text_encoder(len(tokenizer)), vae=_vae(ti2v=kind == "ti2v"),
                  scheduler=_scheduler())
    if kind == "t2v":
        pipe = WanPipeline(transformer=_transformer(), **common)
    elif kind == "a14b":
        pipe = WanPipeline(transformer=_transformer(), transformer_2=_transformer(), boundary_ratio=0.875, **common)
    elif kind == "ti2v":
        pipe = WanPipeline(transformer=_transformer(48, out_channels=48), expand_timesteps=True, **common)
    elif kind == "i2v":
        image_encoder, processor = _image_encoder()
        pipe = WanImageToVideoPipeline(
            transformer=_transformer(in_channels=36, image_dim=8), image_encoder=image_encoder,
            image_processor=processor, **common,
        )
    else:
        raise ValueError(f"kind must be 't2v', 'a14b', 'ti2v' or 'i2v', got {kind!r}")
    folder = Path(folder)
    pipe.save_pretrained(folder)
    return folder
