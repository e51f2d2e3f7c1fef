"""The model call that ``pnp_sample`` sees for every Wan variant: expert choice, timesteps, conditioning, CFG.

Per-model differences live in one table, ``WanConditioning``:

======================  ==========================  ============  =================  ================
model                   condition (extra channels)  image_embeds  num_pinned_frames  expand_timesteps
======================  ==========================  ============  =================  ================
Wan 2.1 T2V, 2.2 A14B   -                           -             0                  False
TI2V-5B text-to-video   -                           -             0                  True
TI2V-5B image-to-video  -                           -             1                  True
Wan 2.1 I2V             mask + image latents (20)   CLIP tokens   0                  False
Wan 2.2 I2V-A14B        mask + image latents (20)   -             0                  False
======================  ==========================  ============  =================  ================

Two-expert models (A14B) add ``transformer_2`` and a boundary: the expert is chosen once per outer step
from that step's timestep, so every P&P evaluation of a step uses the same expert (docs/DIFFUSERS.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..sampler import Guided


@dataclass
class WanConditioning:
    """What a Wan transformer gets besides the noisy latents z (see the table in the module docstring).

    negative_prompt_embeds is None when guidance is off. condition is concatenated to z along channels
    (36-channel I2V); only z is refined. num_pinned_frames leading latent frames hold the image
    condition (TI2V image-to-video) and get timestep 0 with expand_timesteps.
    """

    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    condition: torch.Tensor | None = None
    expand_timesteps: bool = False
    num_pinned_frames: int = 0


@dataclass
class Expert:
    """A transformer and the guidance scale it is used with."""

    model: Any  # WanTransformer3DModel
    guidance_scale: float


class WanDenoiser:
    """``denoise(z, step_index, sigma)`` for ``pnp_sample``: returns ``Guided(cond, uncond, scale)`` with
    classifier-free guidance (combined in fp32 inside the fused update), else the conditional velocity.

    cfg_batch=True runs the conditional and unconditional passes as one batch-2B forward; False runs
    them one after the other (less memory). Each forward is wrapped in the model's ``cache_context``.
    """

    def __init__(
        self,
        experts: list[Expert],
        boundary_timestep: float | None,
        timesteps: torch.Tensor,
        conditioning: WanConditioning,
        cfg_batch: bool = True,
        attention_kwargs: dict | None = None,
    ):
        if boundary_timestep is not None and len(experts) != 2:
            raise ValueError(f"a boundary timestep needs two experts, got {len(experts)}")
        self.timesteps = timesteps
        self.conditioning = conditioning
        self.cfg_batch = cfg_batch
        self.attention_kwargs = attention_kwargs
        # One host copy of the timesteps: each step's expert is known without device reads.
        self.step_experts = [
            experts[0] if boundary_timestep is None or t >= boundary_timestep else experts[1]
            for t in timesteps.tolist()
        ]
        self._token_scale = None  # expand_timesteps: (tokens,) 0 on pinned frames, 1 elsewhere
        self._condition = None  # conditioning.condition in the model dtype
        self._text_pair = None  # batched CFG: [prompt; negative prompt], built once
        self.set_prompt_embeds(conditioning.prompt_embeds, conditioning.negative_prompt_embeds)

    def set_prompt_embeds(self, prompt_embeds: torch.Tensor, negative_prompt_embeds: torch.Tensor | None) -> None:
        """Set the text conditioning (diffusers' callback_on_step_end may replace it between steps)."""
        self.conditioning.prompt_embeds = prompt_embeds
        self.conditioning.negative_prompt_embeds = negative_prompt_embeds
        self._text_pair = None
        if self.cfg_batch and negative_prompt_embeds is not None:
            if negative_prompt_embeds.shape[1:] != prompt_embeds.shape[1:]:
                raise ValueError(
                    f"cfg_batch=True needs prompt_embeds and negative_prompt_embeds of one sequence length, got "
                    f"{tuple(prompt_embeds.shape)} and {tuple(negative_prompt_embeds.shape)}; pass cfg_batch=False"
                )
            self._text_pair = torch.cat([prompt_embeds, negative_prompt_embeds])

    @property
    def guided(self) -> bool:
        return self.conditioning.negative_prompt_embeds is not None

    def expert(self, step: int) -> Expert:
        return self.step_experts[step]

    def _model_input(self, z: torch.Tensor, dtype: torch.dtype, rows: torch.Tensor | None) -> torch.Tensor:
        hidden = z.to(dtype)
        if self.conditioning.condition is None:
            return hidden
        if self._condition is None or self._condition.dtype != dtype:  # cast once, not per call
            self._condition = self.conditioning.condition.to(dtype)
        return torch.cat([hidden, _select(self._condition, rows)], dim=1)

    def _timestep(self, t: torch.Tensor, model, latents_shape: torch.Size) -> torch.Tensor:
        batch = latents_shape[0]
        if not self.conditioning.expand_timesteps:
            return t.expand(batch)
        if self._token_scale is None:  # TI2V-5B: one timestep per patch token
            frames, height, width = latents_shape[2:]
            patch_t, patch_h, patch_w = model.config.patch_size
            scale = torch.ones(frames // patch_t, (height // patch_h) * (width // patch_w), device=t.device)
            scale[: self.conditioning.num_pinned_frames] = 0.0
            self._token_scale = scale.flatten()
        return (self._token_scale * t).unsqueeze(0).expand(batch, -1)

    def __call__(self, z: torch.Tensor, step: int, sigma: float, active: list[bool] | None = None):
        """Guided(cond, uncond, scale) or the conditional velocity at (z, step). active: the samples the
        engine still iterates; the others are not computed (their rows are zero, and the engine ignores
        them), so an early exit costs no compute while the batch equals its samples run one by one."""
        if active is None or all(active):
            return self._evaluate(z, step, sigma, None)
        rows = torch.tensor([b for b, on in enumerate(active) if on], device=z.device)
        part = self._evaluate(z.index_select(0, rows), step, sigma, rows)
        if isinstance(part, Guided):
            return Guided(_scatter(part.cond, rows, z.shape[0]), _scatter(part.uncond, rows, z.shape[0]), part.scale)
        return _scatter(part, rows, z.shape[0])

    def _evaluate(self, z: torch.Tensor, step: int, sigma: float, rows: torch.Tensor | None):
        expert = self.expert(step)
        model, c = expert.model, self.conditioning
        t = self.timesteps[step]
        hidden = self._model_input(z, model.dtype, rows)
        timestep = self._timestep(t, model, z.shape)
        text, negative, image_embeds = (_select(x, rows) for x in (c.prompt_embeds, c.negative_prompt_embeds, c.image_embeds))

        def forward(name, hidden, timestep, text, image):
            with model.cache_context(
                name, step_index=step, num_inference_steps=len(self.timesteps), timestep=t, sigma=sigma
            ):
                return model(
                    hidden_states=hidden,
                    timestep=timestep,
                    encoder_hidden_states=text,
                    encoder_hidden_states_image=image,
                    attention_kwargs=self.attention_kwargs,
                    return_dict=False,
                )[0]

        if not self.guided:
            return forward("cond", hidden, timestep, text, image_embeds)
        if self.cfg_batch:
            image = None if image_embeds is None else torch.cat([image_embeds, image_embeds])
            pair = self._text_pair if rows is None else torch.cat([text, negative])
            both = forward("cond_uncond", torch.cat([hidden, hidden]), torch.cat([timestep, timestep]), pair, image)
            cond, uncond = both.chunk(2)
        else:
            cond = forward("cond", hidden, timestep, text, image_embeds)
            uncond = forward("uncond", hidden, timestep, negative, image_embeds)
        return Guided(cond, uncond, expert.guidance_scale)


def _select(x: torch.Tensor | None, rows: torch.Tensor | None) -> torch.Tensor | None:
    """The rows of a per-sample tensor (all of it for rows=None)."""
    return x if x is None or rows is None else x.index_select(0, rows)


def _scatter(part: torch.Tensor, rows: torch.Tensor, batch: int) -> torch.Tensor:
    full = part.new_zeros((batch, *part.shape[1:]))
    return full.index_copy_(0, rows, part)
