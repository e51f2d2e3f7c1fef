"""Test-local model calls and loops the pipelines are checked against: plain Python, one forward per
pass, conditional then unconditional, as the published code does."""
from __future__ import annotations

import torch

from pnp_kernels import Guided


def velocity(model, z, t, text, condition=None, image_embeds=None):
    hidden = z if condition is None else torch.cat([z, condition], dim=1)
    return model(
        hidden_states=hidden.to(model.dtype), timestep=t.expand(z.shape[0]), encoder_hidden_states=text,
        encoder_hidden_states_image=image_embeds, return_dict=False,
    )[0]


def sequential_denoiser(model, timesteps, prompt_embeds, negative_prompt_embeds, scale, condition=None):
    """denoise(z, step, sigma) -> Guided, transformer called cond then uncond."""

    def denoise(z, step, sigma):
        t = timesteps[step]
        cond = velocity(model, z, t, prompt_embeds, condition)
        uncond = velocity(model, z, t, negative_prompt_embeds, condition)
        return Guided(cond, uncond, scale)

    return denoise


def euler(denoise, latents, sigmas):
    """Plain Euler on the sigma grid with guidance in fp32."""
    z = latents.clone().float()
    sigmas = [float(s) for s in sigmas]
    for step in range(len(sigmas) - 1):
        out = denoise(z, step, sigmas[step])
        v = out.uncond.float() + out.scale * (out.cond.float() - out.uncond.float())
        z = z + (sigmas[step + 1] - sigmas[step]) * v
    return z
