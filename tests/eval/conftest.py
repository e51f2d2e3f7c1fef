"""tests/eval: a stand-in for the demo model's ``generate`` (the real sampler on an analytic velocity), and
the tiny Wan checkpoint built by tests/cli's factory."""
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from pnp_kernels import PnPConfig, pnp_sample

CLI_TESTS = Path(__file__).parents[1] / "cli"
if str(CLI_TESTS) not in sys.path:
    sys.path.insert(0, str(CLI_TESTS))

from tiny_checkpoint import build_tiny_wan  # noqa: E402

FAKE_STEPS = 6


class FakeDemo:
    """``generate(seeds, config, *, num_steps, ...)`` of the demo model's interface, counting its calls.
    Velocity ``v = z - tanh(2 z)``: P&P changes the output, and the output depends on the seed."""

    DEFAULT_CONFIG = PnPConfig(plan="1-2:2", tau=0.05)

    def __init__(self):
        self.calls = []

    def generate(self, seeds, config, *, num_steps=FAKE_STEPS, capture_uncertainty=False, progress=False):
        self.calls.append((tuple(seeds), None if config is None else str(config.plan)))
        # One generator per sample, drawn for the initial noise and then for P&P's noise, as the pipelines do.
        generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        noise = torch.stack([torch.randn(1, 6, 10, 12, generator=g) for g in generators])
        result = pnp_sample(lambda z, step, sigma: z - torch.tanh(2.0 * z), noise, torch.linspace(1.0, 0.0, num_steps + 1),
                            PnPConfig(plan="none") if config is None else config, generator=generators)
        grey = ((result.latents[:, 0].clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).numpy()
        frames = np.repeat(grey[..., None], 3, axis=-1)  # (B, F, H, W, 3)
        return types.SimpleNamespace(frames=frames, stats=result.stats, latents=result.latents)


@pytest.fixture
def fake_demo(monkeypatch):
    """Installs the stand-in as ``pnp_kernels.physics.generate`` for the test."""
    demo = FakeDemo()
    module = types.ModuleType("pnp_kernels.physics.generate")
    module.generate, module.DEFAULT_CONFIG = demo.generate, demo.DEFAULT_CONFIG
    monkeypatch.setitem(sys.modules, "pnp_kernels.physics.generate", module)
    return demo


@pytest.fixture(scope="session")
def tiny_t2v(tmp_path_factory):
    return build_tiny_wan(tmp_path_factory.mktemp("wan") / "t2v", "t2v")
