"""The models an evaluation can run, behind one small interface (``runner.Sampler``): a Wan checkpoint
through the loading and generation code pnp-sample runs (``pnp_kernels.cli_common.pipeline``), and the
embedded physics-video demo model.

Both load lazily, on the first sample: a resumed evaluation with nothing left to do loads no model.
"""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from .extras import MetricGroup
from .metrics import Metric, to_uint8
from .runner import Clip


def _certain_fractions(stats, index: int = 0) -> list[list[float]]:
    """Sample ``index``'s certain fractions, per refined step and iteration, from a PnPStats."""
    return [[fractions[index] for fractions in step.certain_fractions] for step in stats.steps if step.planned > 0]


class WanSampler:
    """A Wan checkpoint in diffusers format; ``settings`` are resolved ``cli_common.sampling.SamplingSettings``
    (prompt, seed and P&P setting are replaced per run) and ``image`` the conditioning image or None.
    ``ranks``: torchrun's processes (``cli_common.parallel.Ranks``), which sample on their own or, with
    --parallel, in context-parallel groups whose first rank alone decodes (the others' clips have no frames)."""

    uses_prompts = True

    def __init__(self, settings, image=None, ranks=None):
        self._fingerprint = self._fixed(settings)  # the user's settings, however the ranks run them
        self.context_parallel = ranks is not None and ranks.launch.context_degree > 1
        self.settings = ranks.check_fits(settings) if self.context_parallel else settings
        self.image = image
        self.ranks = ranks
        self.description = settings.model.kind.description
        self._pipe = None

    @staticmethod
    def _fixed(settings) -> dict:
        fixed = settings.to_dict()
        for varying in ("prompt", "seed", "plan", "tau"):
            del fixed[varying]
        fixed["device"] = fixed["device"].split(":")[0]  # cuda:LOCAL_RANK under torchrun: the same outputs
        return fixed

    def fingerprint(self) -> dict:
        return self._fingerprint

    def _load(self):
        from ..cli_common.pipeline import load_pipeline

        pipe = load_pipeline(self.settings, with_image=self.image is not None)
        if self.context_parallel:
            self.ranks.enable(pipe)
        pipe.set_progress_bar_config(disable=True)  # the evaluation has its own, over samples
        return pipe

    def sample(self, prompt: str, seed: int, pnp) -> Clip:
        from ..cli_common.pipeline import generate

        if self._pipe is None:
            self._pipe = self._load()
        settings = replace(self.settings, prompt=prompt, seed=seed, pnp=pnp)
        decode = self.ranks is None or self.ranks.leads_group
        group = "auto" if self.ranks is None else self.ranks.pnp_group
        output, seconds = generate(self._pipe, settings, self.image, pnp, capture_uncertainty=False, decode=decode,
                                   pnp_group=group)
        stats = output.pnp_stats
        frames = to_uint8(np.asarray(output.frames[0])) if decode else None
        return Clip(frames, stats.nfe, seconds, _certain_fractions(stats))


def physics_metrics() -> MetricGroup:
    """The demo model's bouncing-ball metrics, named ``physics_*``, as per-clip metrics of the report."""
    from pnp_kernels.physics.metrics import DIRECTIONS, METRIC_NAMES, clip_metrics

    def compute(clip: np.ndarray, prompt: str) -> dict:
        values = clip_metrics(clip)
        return {f"physics_{name}": float(getattr(values, name)) for name in METRIC_NAMES}

    metrics = tuple(Metric(f"physics_{name}", DIRECTIONS[name], "", f"bouncing-ball {name} "
                           "(pnp_kernels/physics/metrics.py)") for name in METRIC_NAMES)
    return MetricGroup(metrics, compute)


class DemoSampler:
    """The embedded physics-video model (unconditional: prompts are ignored)."""

    uses_prompts = False
    description = "embedded physics-video demo model (unconditional)"
    device, latent_channels = "cpu", 1  # grey clips sampled on the CPU (pnp_kernels.physics.generate)

    def __init__(self, num_steps: int):
        self.num_steps = num_steps

    def fingerprint(self) -> dict:
        import hashlib

        from pnp_kernels.physics.model import SHIPPED_WEIGHTS

        # The shipped weights can be retrained: a resumed evaluation must not mix two versions. The noise
        # range is recorded too: an evaluation whose seeds meant other noise must not be resumed.
        digest = hashlib.sha256(SHIPPED_WEIGHTS.read_bytes()).hexdigest()
        return {"model": "demo", "weights_sha256": digest, "steps": self.num_steps, "noise_seeds": "held-out"}

    def sample(self, prompt: str, seed: int, pnp) -> Clip:
        from pnp_kernels.physics.generate import generate
        from pnp_kernels.physics.seeds import eval_seed

        started = time.perf_counter()
        # Each clip alone: under torchrun, the ranks sample different seeds (data parallel). Seed s starts
        # from held-out noise, never from noise the model was trained on.
        clips = generate([eval_seed(seed)], pnp if pnp.plan else None, num_steps=self.num_steps, group=None)
        seconds = time.perf_counter() - started
        return Clip(clips.frames[0], clips.stats.nfe, seconds, _certain_fractions(clips.stats))


def demo_defaults(num_steps: int | None) -> tuple[int, dict, object]:
    """The demo model's steps and P&P settings when not given: the paper's placement and tau, as the
    second column of ``pnp-sample --demo``; and its sigma grid, on which every plan form resolves."""
    from pnp_kernels.physics.demo import PAPER_TAU, paper_plan
    from pnp_kernels.physics.generate import DEFAULT_STEPS, sigma_grid

    num_steps = DEFAULT_STEPS if num_steps is None else num_steps
    return num_steps, {"plan": paper_plan(num_steps), "tau": PAPER_TAU, "noise": "philox"}, sigma_grid(num_steps)
