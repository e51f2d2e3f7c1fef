"""A stand-in for the parts of ComfyUI a sampler function meets, written from ComfyUI's calling convention
(docs/COMFYUI.md names the version): ``KSAMPLER.sample`` scales the noise with the model sampling's
``noise_scaling``, calls ``sampler_function(model, x, sigmas, extra_args=..., callback=..., disable=...,
**extra_options)`` with a model that returns the denoised x0, and undoes the scaling with
``inverse_noise_scaling``. The model is wrapped as ComfyUI wraps it: an inpainting wrapper around the
guider around the base model that holds ``model_sampling`` (and ``latent_shapes`` for packed latents).
"""
from __future__ import annotations

import types

import torch


class CONST:
    """Flow matching: x = (1 - sigma) x0 + sigma noise (ComfyUI's class of this name; the name is checked)."""

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        return sigma * noise + (1.0 - sigma) * latent_image

    def inverse_noise_scaling(self, sigma, latent):
        return latent / (1.0 - sigma)


class EPS:
    """Noise prediction with sigmas above 1 (SD 1.x / SDXL)."""

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        return sigma * noise + latent_image

    def inverse_noise_scaling(self, sigma, latent):
        return latent


class IMG_TO_IMG_FLOW(CONST):
    """A CONST variant that starts from the image, not from noise."""


def model_sampling(prediction):
    """A model sampling object as ComfyUI builds one: a class derived from a prediction class."""
    return type("ModelSampling", (prediction,), {})()


class BaseModel:
    def __init__(self, prediction=CONST, latent_shapes=None):
        self.model_sampling = model_sampling(prediction)
        self.latent_shapes = latent_shapes


class X0Model:
    """What a sampler function is given: model(x, sigma, **extra_args) -> x0. ``x0_of(x, sigma)``
    computes the denoised sample; every call's sigma is recorded."""

    def __init__(self, x0_of, base: BaseModel):
        self.inner_model = types.SimpleNamespace(inner_model=base)  # the guider's place
        self.x0_of = x0_of
        self.sigmas_seen: list[float] = []

    def __call__(self, x, sigma, denoise_mask=None, model_options=None, seed=None):
        assert sigma.shape == (x.shape[0],), "ComfyUI passes one sigma per sample"
        self.sigmas_seen.append(float(sigma[0]))
        return self.x0_of(x, sigma)


class KSAMPLER:
    """ComfyUI's sampler object around a sampler function, as SamplerCustomAdvanced uses it."""

    def __init__(self, sampler_function, extra_options=None, inpaint_options=None):
        self.sampler_function = sampler_function
        self.extra_options = {} if extra_options is None else extra_options

    def sample(self, model, sigmas, extra_args, callback, noise, latent_image=None, disable_pbar=False):
        sampling = model.inner_model.inner_model.model_sampling
        latent_image = torch.zeros_like(noise) if latent_image is None else latent_image
        x = sampling.noise_scaling(sigmas[0], noise, latent_image)
        total = len(sigmas) - 1

        def k_callback(info):
            if callback is not None:
                callback(info["i"], info["denoised"], info["x"], total)

        samples = self.sampler_function(model, x, sigmas, extra_args=extra_args, callback=k_callback,
                                        disable=disable_pbar, **self.extra_options)
        return sampling.inverse_noise_scaling(sigmas[-1], samples)


def start_latents(noise, sigmas, latent_image=None):
    """The x a sampler function receives for this noise (CONST noise scaling at sigmas[0])."""
    latent_image = torch.zeros_like(noise) if latent_image is None else latent_image
    return CONST().noise_scaling(sigmas[0], noise, latent_image)


class Interrupted(Exception):
    """ComfyUI's InterruptProcessingException."""


def comfy_modules(interrupt_after: int | None = None) -> dict:
    """The modules ``comfy.samplers`` and ``comfy.model_management``: the interruption check raises
    ``Interrupted`` on its (interrupt_after + 1)-th call (never with None)."""
    samplers = types.ModuleType("comfy.samplers")
    samplers.KSAMPLER = KSAMPLER
    management = types.ModuleType("comfy.model_management")
    management.checks = 0

    def throw_exception_if_processing_interrupted():
        management.checks += 1
        if interrupt_after is not None and management.checks > interrupt_after:
            raise Interrupted()

    management.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    return {"comfy.samplers": samplers, "comfy.model_management": management}
