"""The reference update's per-sample semantics, checked by hand on small batches."""
import torch

from pnp_kernels.ops import PhiloxNoise, philox_normal, pnp_update_reference

B, C, F, H, W = 3, 5, 3, 4, 6


def inputs(seed):
    g = torch.Generator().manual_seed(seed)
    z, v, prev_x0, prev_zn, noise = (torch.randn(B, C, F, H, W, generator=g) for _ in range(5))
    return z, v, prev_x0, prev_zn, noise


def test_masks_act_per_sample():
    # The published code multiplies a (B,F,H,W) mask into (B,C,F,H,W) tensors without a channel axis,
    # which mixes samples for B > 1. Here: sample 0 is all certain, sample 1 never, sample 2 half.
    z, v, prev_x0, prev_zn, _ = inputs(0)
    sigma, sigma_next = 0.8, 0.7
    x0_new = z - sigma * v
    prev_x0[0] = x0_new[0] + 1e-3  # tiny disagreement: certain
    prev_x0[1] = x0_new[1] + 10.0  # large disagreement: uncertain
    prev_x0[2] = x0_new[2] + 10.0
    prev_x0[2, :, :, :2] = x0_new[2, :, :, :2] + 1e-3
    out = pnp_update_reference(z, v, sigma, sigma_next, prev_x0=prev_x0, prev_z_next=prev_zn, tau=0.25)
    assert out.certain[0].all() and not out.certain[1].any() and out.certain[2, :, :2].all() and not out.certain[2, :, 2:].any()
    torch.testing.assert_close(out.certain_fraction, torch.tensor([1.0, 0.0, 0.5]))
    torch.testing.assert_close(out.x0[0], prev_x0[0])
    torch.testing.assert_close(out.z_next[0], prev_zn[0])
    torch.testing.assert_close(out.x0[1], x0_new[1])
    torch.testing.assert_close(out.z_next[1], z[1] + (sigma_next - sigma) * v[1])
    torch.testing.assert_close(out.x0[2, :, :, :2], prev_x0[2, :, :, :2])
    torch.testing.assert_close(out.x0[2, :, :, 2:], x0_new[2, :, :, 2:])


def test_uncertainty_is_channel_norm_over_c():
    z, v, prev_x0, prev_zn, _ = inputs(1)
    for p in (1, 2):
        out = pnp_update_reference(z, v, 0.5, 0.4, prev_x0=prev_x0, prev_z_next=prev_zn, p_norm=p, return_uncertainty=True)
        diff = (z - 0.5 * v) - prev_x0
        expected = (diff.abs() ** p).sum(1) ** (1 / p) / C
        torch.testing.assert_close(out.uncertainty, expected)


def test_inactive_sample_keeps_previous_state():
    z, v, prev_x0, prev_zn, noise = inputs(2)
    prev_certain = torch.rand(B, F, H, W) < 0.3
    v[1] = float("nan")  # an inactive sample's model output is discarded, NaN included
    active = torch.tensor([True, False, True])
    out = pnp_update_reference(z, v, 0.6, 0.5, prev_x0=prev_x0, prev_z_next=prev_zn, prev_certain=prev_certain,
                               noise=noise, active=active, tau=0.25)
    assert torch.equal(out.x0[1], prev_x0[1]) and torch.equal(out.z_next[1], prev_zn[1])
    assert torch.equal(out.certain[1], prev_certain[1])
    assert out.nonfinite.tolist() == [0, 0, 0]
    torch.testing.assert_close(out.certain_fraction[1], prev_certain[1].float().mean())
    torch.testing.assert_close(out.z_perturbed, 0.4 * out.x0 + 0.6 * noise)
    assert (out.certain[0] >= prev_certain[0]).all()  # union with the previous mask


def test_pinned_frames_hold_their_input():
    z, v, prev_x0, prev_zn, noise = inputs(3)
    prev_x0 = z - 0.9 * v + 1e-4  # everything would be certain
    out = pnp_update_reference(z, v, 0.9, 0.8, prev_x0=prev_x0, prev_z_next=prev_zn, noise=noise, num_pinned_frames=1)
    for t in (out.x0, out.z_next, out.z_perturbed):
        assert torch.equal(t[:, :, 0], z[:, :, 0])
    assert not out.certain[:, 0].any() and out.certain[:, 1:].all()
    torch.testing.assert_close(out.certain_fraction, torch.ones(B))  # pinned positions are not counted


def test_nonfinite_counts_positions():
    z, v, *_ = inputs(4)
    v[2, 1, 0, 0, 0] = float("inf")
    v[2, :, 1, 2, 3] = float("nan")
    out = pnp_update_reference(z, v, 0.5, 0.4)
    assert out.nonfinite.tolist() == [0, 0, 2]
    assert not out.certain.any() and out.certain_fraction.tolist() == [0.0] * B


def test_guidance_in_float32():
    z, v, _, _, _ = inputs(5)
    v_cond, v_uncond = v.bfloat16(), (v * 0.5).bfloat16()
    out = pnp_update_reference(z, v_cond, 0.7, 0.6, v_uncond=v_uncond, guidance_scale=5.0)
    guided = v_uncond.float() + 5.0 * (v_cond.float() - v_uncond.float())
    torch.testing.assert_close(out.x0, z - 0.7 * guided)


def test_philox_reference_noise_per_sample_seed():
    noise = PhiloxNoise(seeds=(7, 8), step=3, iteration=1)
    both = philox_normal(noise, (C, F, H, W))
    second = philox_normal(PhiloxNoise(seeds=(8,), step=3, iteration=1), (C, F, H, W))
    assert torch.equal(both[1:], second)
    assert not torch.equal(both[0], both[1])
