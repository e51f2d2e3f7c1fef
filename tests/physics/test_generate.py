"""generate(): seeds fix the noise, clips do not depend on their batch, Euler and P&P share the start."""
import numpy as np
import pytest
import torch

from pnp_kernels import PnPConfig, RefinePlan
from pnp_kernels.physics import generate as gen
from pnp_kernels.physics.model import PhysicsVelocityNet


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    net = PhysicsVelocityNet(num_frames=5, size=8, channels=(8, 16)).eval()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return net


def test_shipped_weights_sample_rgb_uint8_clips():
    clips = gen.generate([4, 9], None, num_steps=3)
    assert clips.frames.shape == (2, 12, 16, 16, 3) and clips.frames.dtype == np.uint8
    assert (clips.frames[..., 0] == clips.frames[..., 2]).all()  # grey model, RGB frames
    assert clips.latents.shape == (2, 1, 12, 16, 16) and clips.stats.nfe == 3
    np.testing.assert_array_equal(clips.frames, gen.latents_to_frames(clips.latents))


def test_noise_depends_only_on_the_seed(tiny_model):
    noise = gen.initial_noise([7, 3, 7], tiny_model)
    assert torch.equal(noise[0], noise[2]) and not torch.equal(noise[0], noise[1])
    assert torch.equal(noise[0, 0], torch.randn(5, 8, 8, generator=torch.Generator().manual_seed(7)))


def test_a_clip_does_not_depend_on_its_batch(tiny_model):
    config = PnPConfig(plan=RefinePlan([(1, 2, 2)]), tau=0.1, noise="philox")
    together = gen.generate([11, 5, 8], config, num_steps=4, model=tiny_model)
    alone = gen.generate([5], config, num_steps=4, model=tiny_model)
    torch.testing.assert_close(alone.latents[0], together.latents[1], rtol=0, atol=1e-6)


def test_euler_is_an_empty_plan_and_pnp_starts_from_the_same_noise(tiny_model, monkeypatch):
    euler = gen.generate([1, 2], None, num_steps=4, model=tiny_model)
    empty = gen.generate([1, 2], PnPConfig(plan=RefinePlan(()), noise="philox"), num_steps=4, model=tiny_model)
    assert torch.equal(euler.latents, empty.latents)
    starts, original = [], gen.pnp_sample

    def recording_sampler(denoise, latents, *args, **kwargs):
        starts.append(latents.clone())
        return original(denoise, latents, *args, **kwargs)

    monkeypatch.setattr(gen, "pnp_sample", recording_sampler)
    gen.generate([1, 2], None, num_steps=4, model=tiny_model)
    refined = gen.generate([1, 2], PnPConfig(plan=RefinePlan([(1, 2, 1)]), noise="philox"), num_steps=4, model=tiny_model)
    assert torch.equal(starts[0], starts[1]) and refined.stats.nfe == 6


def test_generator_mode_is_reproducible(tiny_model):
    config = PnPConfig(plan=RefinePlan([(1, 1, 1)]), tau=0.0, noise="generator")
    a = gen.generate([3, 4], config, num_steps=3, model=tiny_model)
    b = gen.generate([3, 4], config, num_steps=3, model=tiny_model)
    assert torch.equal(a.latents, b.latents)


def test_uncertainty_maps_and_progress(tiny_model, capsys):
    config = PnPConfig(plan=RefinePlan([(1, 2, 1)]), tau=0.0, noise="philox")
    clips = gen.generate([0], config, num_steps=3, capture_uncertainty=True, progress=True, model=tiny_model)
    assert [m["step"] for m in clips.stats.uncertainty_maps] == [1, 2]
    assert "5/5" in capsys.readouterr().err


def test_bad_arguments_are_refused(tiny_model):
    with pytest.raises(TypeError, match="seeds"):
        gen.generate(3, None, model=tiny_model)
    with pytest.raises(ValueError, match=r"seeds\[1\]"):
        gen.generate([1, -2], None, model=tiny_model)
    with pytest.raises(TypeError, match="config"):
        gen.generate([1], "1-2:1", model=tiny_model)
    with pytest.raises(ValueError, match="num_steps"):
        gen.generate([1], None, num_steps=0, model=tiny_model)
    with pytest.raises(TypeError, match="progress"):
        gen.generate([1], None, progress=1, model=tiny_model)
