"""Text-to-video Wan 2.1 / 2.2 (A14B two-expert, TI2V-5B) with Predict-and-Perturb sampling."""
from __future__ import annotations

from diffusers import WanPipeline

from ..published import WAN21_T2V, WAN22_T2V
from .pipeline_mixin import PnPPipelineMixin, pnp_call


class WanPnPPipeline(PnPPipelineMixin, WanPipeline):
    """diffusers' WanPipeline sampling with P&P (arXiv 2601.18577): ``enable_pnp``'s sampling, attached
    for each call, with the authors' published settings for every option left unset.

    Loads like WanPipeline (``from_pretrained``, ``from_pipe``) and takes all its call arguments, plus:

    pnp: PnPConfig (None: the authors' published settings for the model, see below; an empty plan is
        plain Euler). Plans by step, sigma, fraction or expert (``@high`` / ``@low``) are accepted.
    pnp_seed: philox seed (noise="philox" only); default: the generator's ``initial_seed()`` (sample b
        of one generator gets seed + b; a generator list gives one seed each).
    pnp_group: the torch.distributed ranks that sample this video together (context parallel): they
        agree on early exits ("auto": the default group when torch.distributed runs). None when every
        rank samples its own videos (data parallel); see docs/DISTRIBUTED.md.
    attention: "auto" or a diffusers attention backend name (see ``pnp_kernels.wan.attention``).
    compile: compile the repeated transformer blocks (regional compilation) before sampling.
    capture_uncertainty: keep per-iteration (B, F, H, W) uncertainty and certain maps in pnp_stats.
    pnp_callback: called with an IterationEvent after every model call.

    Defaults left as None follow the authors' published text-to-video scripts: Wan 2.1 50 steps, plan
    2-5:3,6-14:1, tau 0.25, guidance 5; Wan 2.2 A14B 40 steps, plan 2-5:3,6-13:1, tau 0.2, guidance 4
    (high-noise expert) / 3 (low-noise); negative prompt "low quality" for text prompts.

    In a batch, samples that left a refined step early are not computed again. ``callback_on_step_end``
    runs after each outer step, with its index; latents it returns replace the state. The progress bar
    counts model calls. Returns WanPnPPipelineOutput (frames, pnp_stats, attention_backend) or
    ``(frames, pnp_stats)``.
    """

    stock_pipeline = WanPipeline
    _published = (WAN21_T2V, WAN22_T2V)

    __call__ = pnp_call(WanPipeline)
