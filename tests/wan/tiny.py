"""Tiny random Wan components (no download; seconds on a CPU): the one builder of every test's Wan.

The pipeline tests pass text conditioning as embeddings (``components``, no tokenizer or text
encoder); ``build_tiny_wan`` writes complete checkpoints (tokenizer and UMT5 encoder included) for
the command-line tests, so that ``pnp-sample`` loads them as it loads a downloaded one. Latent shapes
follow the real checkpoints: Wan 2.1 / A14B 16 channels at 8x, TI2V-5B 48 channels at 16x (VAE patch 2).
"""
from __future__ import annotations

from pathlib import Path

import torch

TEXT_DIM = 32
TEXT_LEN = 7
IMAGE_DIM = 16
HEADS, HEAD_DIM = 2, 12  # head_dim splits into rotary (t, h, w) parts


def transformer(in_channels=16, out_channels=16, image_dim=None, seed=0, dtype=torch.float32, text_dim=TEXT_DIM):
    from diffusers import WanTransformer3DModel

    if seed is not None:
        torch.manual_seed(seed)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=HEADS, attention_head_dim=HEAD_DIM,
        in_channels=in_channels, out_channels=out_channels, text_dim=text_dim, freq_dim=32, ffn_dim=32,
        num_layers=2, image_dim=image_dim, added_kv_proj_dim=HEADS * HEAD_DIM if image_dim else None,
        rope_max_seq_len=32,
    )
    # Random init leaves the output projections near zero; larger weights make the velocity (and the
    # refinement's disagreement) depend visibly on the inputs.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return (model if dtype == torch.float32 else model.to(dtype)).eval()


def vae(ti2v=False, decoder_jitter=0.0, seed=1):
    """decoder_jitter: a fresh decoder turns any latent into nearly the same grey; jittered weights make
    the decoded video depend on the latents clearly enough for written videos to be told apart."""
    from diffusers import AutoencoderKLWan

    if seed is not None:
        torch.manual_seed(seed)
    if not ti2v:
        model = AutoencoderKLWan(
            base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
        )
    else:
        model = AutoencoderKLWan(
            base_dim=4, z_dim=48, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True],
            is_residual=True, in_channels=12, out_channels=12, patch_size=2, scale_factor_spatial=16,
            latents_mean=[0.1 * (i % 5) for i in range(48)], latents_std=[1.0 + 0.1 * (i % 3) for i in range(48)],
        )
    if decoder_jitter:
        with torch.no_grad():
            for weight in model.decoder.parameters():
                weight.add_(decoder_jitter * torch.randn_like(weight))
    return model.eval()


def image_encoder(seed=2):
    """A tiny CLIP vision tower and its processor (Wan 2.1 I2V takes its penultimate hidden states)."""
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel

    if seed is not None:
        torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=IMAGE_DIM, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        image_size=32, patch_size=8, projection_dim=IMAGE_DIM,
    )
    processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
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


# ---- complete checkpoints on disk -------------------------------------------------------------------

CHECKPOINT_TEXT_DIM = 16
WORDS = ["a", "cat", "dog", "runs", "on", "the", "beach", "blurry", "static", "low", "quality"]


def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def text_encoder(vocab_size: int):
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(
        vocab_size=vocab_size, d_model=CHECKPOINT_TEXT_DIM, d_kv=4, d_ff=32, num_layers=1, num_heads=2,
        relative_attention_num_buckets=8, relative_attention_max_distance=16,
    )
    return UMT5EncoderModel(config).eval()


def build_tiny_wan(folder: Path, kind: str = "t2v", seed: int = 0) -> Path:
    """Write a tiny ``kind`` checkpoint to ``folder`` and return it: "t2v" (Wan 2.1), "a14b" (two experts),
    "ti2v" (TI2V-5B: 48 latent channels, per-token timesteps) or "i2v" (Wan 2.1 I2V with a CLIP encoder).
    Its scheduler is what the published Wan 2.1 checkpoints ship: UniPC on flow sigmas, shift 3."""
    from diffusers import WanImageToVideoPipeline, WanPipeline

    torch.manual_seed(seed)
    words = tokenizer()
    common = dict(tokenizer=words, text_encoder=text_encoder(len(words)), scheduler=unipc_scheduler(),
                  vae=vae(ti2v=kind == "ti2v", decoder_jitter=0.08, seed=None))

    def model(in_channels=16, out_channels=16, image_dim=None):
        return transformer(in_channels, out_channels, image_dim, seed=None, text_dim=CHECKPOINT_TEXT_DIM)

    if kind == "t2v":
        pipe = WanPipeline(transformer=model(), **common)
    elif kind == "a14b":
        pipe = WanPipeline(transformer=model(), transformer_2=model(), boundary_ratio=0.875, **common)
    elif kind == "ti2v":
        pipe = WanPipeline(transformer=model(48, 48), expand_timesteps=True, **common)
    elif kind == "i2v":
        encoder, processor = image_encoder(seed=None)
        pipe = WanImageToVideoPipeline(transformer=model(36, image_dim=IMAGE_DIM), image_encoder=encoder,
                                       image_processor=processor, **common)
    else:
        raise ValueError(f"kind must be 't2v', 'a14b', 'ti2v' or 'i2v', got {kind!r}")
    folder = Path(folder)
    pipe.save_pretrained(folder)
    return folder
