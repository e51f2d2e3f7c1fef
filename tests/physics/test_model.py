"""The physics velocity network: patch reshapes, shapes, sigma handling, safetensors round trip."""
import pytest
import torch

from pnp_kernels.physics import model as physics_model


def test_patches_match_a_naive_loop_and_invert():
    z = torch.randn(2, 3, 5, 6, 10)
    patches = physics_model.to_patches(z)
    assert patches.shape == (2, 12, 5, 3, 5)
    for c in range(3):
        for dy in range(2):
            for dx in range(2):
                torch.testing.assert_close(patches[:, c * 4 + dy * 2 + dx], z[:, c, :, dy::2, dx::2], rtol=0, atol=0)
    assert torch.equal(physics_model.from_patches(patches), z)


def test_output_shape_and_sigma_forms_agree():
    torch.manual_seed(0)
    net = physics_model.PhysicsVelocityNet(num_frames=5, size=8, channels=(8, 16)).eval()
    z = torch.randn(3, 1, 5, 8, 8)
    with torch.no_grad():
        for parameter in net.parameters():  # blocks start as the identity; make them do something
            parameter.add_(0.1 * torch.randn_like(parameter))
        a = net(z, 0.3)
        b = net(z, torch.full((3,), 0.3))
        c = net(z, torch.tensor([0.3, 0.9, 0.3]))
    assert a.shape == z.shape
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a[[0, 2]], c[[0, 2]])
    assert not torch.allclose(a[1], c[1])  # sigma is used


def test_size_must_fit_the_levels():
    with pytest.raises(ValueError, match="size"):
        physics_model.PhysicsVelocityNet(size=10, channels=(8, 16))


def test_safetensors_round_trip(tmp_path):
    torch.manual_seed(1)
    net = physics_model.PhysicsVelocityNet(num_frames=3, size=8, channels=(8, 16))
    path = physics_model.save_weights(net, tmp_path / "w.safetensors")
    loaded = physics_model.load_weights(path)
    assert loaded.config == net.config and not loaded.training
    z = torch.randn(2, 1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(z, 0.5), net.eval()(z, 0.5), rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="train"):
        physics_model.load_weights(tmp_path / "missing.safetensors")


def test_shipped_weights_are_small_and_load():
    assert physics_model.SHIPPED_WEIGHTS.stat().st_size <= 20 * 2**20
    net = physics_model.load_weights()
    assert sum(p.numel() for p in net.parameters()) > 100_000
