"""tests/eval: a call counter on the demo model's ``generate``, and the tiny Wan checkpoint built by
tests/cli's factory."""
import functools

import pytest

from tests.wan.tiny import build_tiny_wan


@pytest.fixture
def demo_calls(monkeypatch):
    """Every call pnp-eval makes to the demo model's generate, as (seeds, plan or None), in order."""
    from pnp_kernels.physics import generate as module

    calls = []
    real = module.generate

    @functools.wraps(real)
    def counted(seeds, config, **kwargs):
        calls.append((tuple(seeds), None if config is None else str(config.plan)))
        return real(seeds, config, **kwargs)

    monkeypatch.setattr(module, "generate", counted)
    return calls


@pytest.fixture(scope="session")
def tiny_t2v(tmp_path_factory):
    return build_tiny_wan(tmp_path_factory.mktemp("wan") / "t2v", "t2v")
