"""Tiny random components for the non-Wan pipelines (no download; a second or so on a CPU).

Text conditioning is passed as embeddings (no tokenizer or text encoder). Sizes are the smallest the
models accept, with odd token counts so that batch and channel axes cannot be confused.
"""
from __future__ import annotations

import torch

LTX2_CAPTION, LTX2_LAYERS = 16, 3  # text width per encoder layer, encoder layers + 1


def _perturbed(model, scale=0.05):
    # Random init leaves output projections near zero; larger weights make the velocity depend
    # visibly on the inputs (as in tests/wan/tiny.py).
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model.eval()


def ltx2_components():
    from diffusers import AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, FlowMatchEulerDiscreteScheduler
    from diffusers import LTX2VideoTransformer3DModel
    from diffusers.pipelines.ltx2 import LTX2TextConnectors

    torch.manual_seed(0)
    transformer = _perturbed(LTX2VideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
        audio_in_channels=4, audio_out_channels=4, audio_num_attention_heads=2, audio_attention_head_dim=4,
        audio_cross_attention_dim=8, num_layers=1, caption_channels=LTX2_CAPTION, rope_double_precision=False,
        rope_type="split",
    ))
    torch.manual_seed(1)
    connectors = LTX2TextConnectors(
        caption_channels=LTX2_CAPTION, text_proj_in_factor=LTX2_LAYERS, video_connector_num_attention_heads=2,
        video_connector_attention_head_dim=8, video_connector_num_layers=1,
        video_connector_num_learnable_registers=None, audio_connector_num_attention_heads=2,
        audio_connector_attention_head_dim=8, audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=None, connector_rope_base_seq_len=32, rope_double_precision=False,
        rope_type="split",
    ).eval()
    torch.manual_seed(2)
    vae = AutoencoderKLLTX2Video(
        latent_channels=4, block_out_channels=(8,), decoder_block_out_channels=(8,), layers_per_block=(1,),
        decoder_layers_per_block=(1, 1), spatio_temporal_scaling=(True,), decoder_spatio_temporal_scaling=(True,),
        decoder_inject_noise=(False, False), downsample_type=("spatial",), upsample_residual=(False,),
        upsample_factor=(1,), patch_size=1, decoder_causal=False,
    ).eval()
    audio_vae = AutoencoderKLLTX2Audio(
        base_channels=4, ch_mult=(1,), num_res_blocks=1, resolution=32, latent_channels=2, mel_bins=8,
    ).eval()
    return dict(transformer=transformer, connectors=connectors, vae=vae, audio_vae=audio_vae,
                scheduler=FlowMatchEulerDiscreteScheduler(), text_encoder=None, tokenizer=None, vocoder=None)


def ltx2_text(batch, seed=0, length=6):
    """(prompt_embeds, attention_mask) as the Gemma encoder would give them (all layers flattened)."""
    g = torch.Generator().manual_seed(seed)
    embeds = torch.randn(batch, length, LTX2_CAPTION * LTX2_LAYERS, generator=g)
    return embeds, torch.ones(batch, length, dtype=torch.long)


def hunyuan15_components(guidance_scale=1.0):
    from diffusers import AutoencoderKLHunyuanVideo15, FlowMatchEulerDiscreteScheduler, HunyuanVideo15Transformer3DModel
    from diffusers.guiders import ClassifierFreeGuidance

    torch.manual_seed(0)
    transformer = _perturbed(HunyuanVideo15Transformer3DModel(
        in_channels=9, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=1,
        num_refiner_layers=1, mlp_ratio=2.0, patch_size=1, patch_size_t=1, text_embed_dim=16, text_embed_2_dim=32,
        image_embed_dim=12, rope_axes_dim=(2, 2, 4), target_size=16, task_type="t2v",
    ))
    torch.manual_seed(1)
    vae = AutoencoderKLHunyuanVideo15(
        latent_channels=4, block_out_channels=(16, 16), layers_per_block=1, spatial_compression_ratio=4,
        temporal_compression_ratio=2, downsample_match_channel=False, upsample_match_channel=False,
    ).eval()
    return dict(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
                text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                guider=ClassifierFreeGuidance(guidance_scale=guidance_scale))


def hunyuan15_text(batch, seed=0):
    """Keyword arguments with both text encoders' embeddings and masks (prompt or, with prefix, negative)."""
    g = torch.Generator().manual_seed(seed)
    return dict(embeds=torch.randn(batch, 5, 16, generator=g), embeds_mask=torch.ones(batch, 5, dtype=torch.long),
                embeds_2=torch.randn(batch, 3, 32, generator=g), embeds_mask_2=torch.ones(batch, 3, dtype=torch.long))


def mochi_components():
    from diffusers import FlowMatchEulerDiscreteScheduler, MochiTransformer3DModel

    torch.manual_seed(0)
    transformer = _perturbed(MochiTransformer3DModel(
        patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=2, pooled_projection_dim=16,
        in_channels=12, out_channels=None, qk_norm="rms_norm", text_embed_dim=32, time_embed_dim=4,
        activation_fn="swiglu", max_sequence_length=16,
    ))
    return dict(transformer=transformer, vae=None, text_encoder=None, tokenizer=None,
                scheduler=FlowMatchEulerDiscreteScheduler(invert_sigmas=True))


def skyreels_v2_components():
    """SkyReels-V2 text-to-video: a Wan-like transformer with the tiny Wan VAE and a UniPC flow scheduler."""
    from diffusers import SkyReelsV2Transformer3DModel

    from tests.wan import tiny

    torch.manual_seed(0)
    transformer = _perturbed(SkyReelsV2Transformer3DModel(
        num_attention_heads=tiny.HEADS, attention_head_dim=tiny.HEAD_DIM, text_dim=tiny.TEXT_DIM, freq_dim=32,
        ffn_dim=32, num_layers=2, rope_max_seq_len=32,
    ))
    return dict(transformer=transformer, vae=tiny.vae(), scheduler=tiny.unipc_scheduler(), text_encoder=None,
                tokenizer=None)
