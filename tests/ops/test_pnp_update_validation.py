"""pnp_update rejects bad input with errors that name the argument; backends say why they refuse."""
from __future__ import annotations

import logging

import pytest
import torch

from pnp_kernels import PhiloxNoise, PnPConfig, PnPUpdateOutput, pnp_update
from pnp_kernels.ops import PnPUpdateInputs, backends, pnp_update_reference

from .helpers import BACKEND_DEVICES

SHAPE = (2, 4, 3, 5, 7)


def good_args():
    z = torch.randn(SHAPE)
    return dict(
        z=z, v=torch.randn(SHAPE).bfloat16(), sigma=0.8, sigma_next=0.7,
        prev_x0=torch.randn(SHAPE), prev_z_next=torch.randn(SHAPE),
        prev_certain=torch.zeros(SHAPE[0], *SHAPE[2:], dtype=torch.bool),
        noise=torch.randn(SHAPE), backend="torch",
    )


def empty_out(**fields):
    return PnPUpdateOutput(*([None] * 7))._replace(**fields)


BAD = [
    # overrides, error type, words the message must contain
    (dict(v=torch.randn(2, 4, 3, 5, 6)), ValueError, ["v", "(2, 4, 3, 5, 6)"]),
    (dict(z=torch.randn(2, 4, 15, 7)), ValueError, ["z", "(B, C, F, H, W)"]),
    (dict(z=torch.randn(SHAPE).half()), TypeError, ["z", "float16"]),
    (dict(v=torch.ones(SHAPE, dtype=torch.int32)), TypeError, ["v", "int32"]),
    (dict(noise=torch.ones(SHAPE, dtype=torch.int64)), TypeError, ["noise", "int64"]),
    (dict(v=torch.randn(SHAPE, device="meta")), ValueError, ["v", "meta", "cpu"]),
    (dict(prev_certain=torch.zeros(SHAPE[0], *SHAPE[2:], dtype=torch.bool, device="meta")), ValueError, ["prev_certain", "meta"]),
    (dict(v=[1.0]), TypeError, ["v", "list"]),
    (dict(sigma=1.5), ValueError, ["sigma", "1.5"]),
    (dict(sigma=-0.1, sigma_next=-0.2), ValueError, ["sigma", "-0.1"]),
    (dict(sigma=float("nan")), ValueError, ["sigma", "nan"]),
    (dict(sigma=torch.tensor(0.5)), TypeError, ["sigma"]),
    (dict(sigma=0.5, sigma_next=0.6), ValueError, ["sigma_next", "0.6"]),
    (dict(tau=-1.0), ValueError, ["tau", "-1.0"]),
    (dict(tau=True), TypeError, ["tau", "True"]),
    (dict(tau=float("inf")), ValueError, ["tau", "inf"]),  # PnPConfig rejects it too
    (dict(tau=10**400), ValueError, ["tau", "digits"]),
    (dict(sigma=10**400), ValueError, ["sigma", "digits"]),
    (dict(guidance_scale=10**400, v_uncond=torch.randn(SHAPE)), ValueError, ["guidance_scale", "digits"]),
    (dict(store_state=None), TypeError, ["store_state", "None"]),
    (dict(round_products_to=torch.int8), ValueError, ["round_products_to", "int8"]),
    (dict(p_norm=3), ValueError, ["p_norm", "3"]),
    (dict(guidance_scale=float("inf"), v_uncond=torch.randn(SHAPE)), ValueError, ["guidance_scale", "inf"]),
    (dict(prev_z_next=None), ValueError, ["prev_x0", "prev_z_next"]),
    (dict(prev_certain=torch.zeros(SHAPE[0], *SHAPE[2:])), TypeError, ["prev_certain", "float32"]),
    (dict(active=torch.ones(3, dtype=torch.bool)), ValueError, ["active"]),
    (dict(noise=PhiloxNoise((1, 2, 3), 0, 1)), ValueError, ["philox", "3 seeds", "batch of 2"]),
    (dict(noise=torch.randn(2, 4, 3, 5, 8)), ValueError, ["noise", "(2, 4, 3, 5, 8)"]),
    (dict(num_pinned_frames=3), ValueError, ["num_pinned_frames", "3"]),
    (dict(num_pinned_frames=1.0), TypeError, ["num_pinned_frames", "1.0"]),
    (dict(return_uncertainty=1), TypeError, ["return_uncertainty", "1"]),
    (dict(backend="fast"), ValueError, ["backend", "fast"]),
    (dict(backend=None), TypeError, ["backend", "None"]),
    (dict(out=(None,) * 7), TypeError, ["out", "tuple"]),
    (dict(out=empty_out(x0=torch.empty(2, 4, 3, 5, 8))), ValueError, ["out.x0", "(2, 4, 3, 5, 8)"]),
    (dict(out=empty_out(certain=torch.empty(2, 3, 5, 7))), ValueError, ["out.certain", "float32", "bool"]),
    (dict(out=empty_out(nonfinite=torch.empty(2))), ValueError, ["out.nonfinite", "int32"]),
    (dict(sigma_scale=0.5), TypeError, ["sigma_scale"]),  # a misspelt option is not ignored
    (dict(z=torch.randn(SHAPE, device="meta")), ValueError, ["z is on the meta device"]),
    (dict(out=empty_out(z_next=torch.empty(2, 4, 3, 5, 1).expand(SHAPE))), ValueError,
     ["out.z_next", "stride 0 along dimension 4", "expanded"]),
    (dict(out=empty_out(certain_fraction=torch.empty(1).expand(2))), ValueError, ["out.certain_fraction", "stride 0"]),
]


@pytest.mark.parametrize("overrides, error, words", BAD, ids=lambda x: None)
def test_bad_input_raises_naming_it(overrides, error, words):
    args = {**good_args(), **overrides}
    with pytest.raises(error) as info:
        pnp_update(**args)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_triton_refuses_more_than_64_channels():
    z = torch.randn(1, 65, 1, 2, 3)
    with pytest.raises(RuntimeError, match=r"'triton'.*1 to 64 channels, got C=65"):
        pnp_update(z, torch.randn_like(z), 0.5, 0.4, backend="triton")
    # auto quietly falls back to a backend that can run it
    torch.testing.assert_close(pnp_update(z, z, 0.5, 0.4, backend="auto").x0, torch.zeros_like(z) + 0.5 * z)


def test_explicit_triton_on_cpu_without_interpreter_says_why(monkeypatch):
    monkeypatch.setattr(backends, "_triton_interpreter_on", lambda: False)
    z = torch.randn(1, 4, 1, 2, 3)
    with pytest.raises(RuntimeError, match="needs CUDA tensors.*TRITON_INTERPRET=1"):
        pnp_update(z, z, 0.5, 0.4, backend="triton")


def test_unavailable_backend_raises_with_its_reason(monkeypatch):
    monkeypatch.setitem(backends.BACKENDS, "cuda", backends.UnavailableBackend("cuda", "extension not built"))
    z = torch.randn(1, 4, 1, 2, 3)
    with pytest.raises(RuntimeError, match="'cuda' cannot run.*extension not built"):
        pnp_update(z, z, 0.5, 0.4, backend="cuda")


def test_auto_reports_its_choice_once(monkeypatch, caplog):
    monkeypatch.setattr(backends, "_reported", set())
    z = torch.randn(1, 4, 1, 2, 3)
    with caplog.at_level(logging.INFO, logger="pnp_kernels"):
        pnp_update(z, z, 0.5, 0.4, backend="auto")
        pnp_update(z, z, 0.5, 0.4, backend="auto")
    chose = [r.getMessage() for r in caplog.records if "chose" in r.getMessage()]
    assert len(chose) == 1 and "'torch'" in chose[0] and "triton" in chose[0], chose


def test_auto_with_no_backend_lists_every_reason(monkeypatch):
    for name in backends.OP_BACKEND_PRIORITY:
        monkeypatch.setitem(backends.BACKENDS, name, backends.UnavailableBackend(name, f"{name} is switched off"))
    z = torch.randn(1, 4, 1, 2, 3)
    with pytest.raises(RuntimeError) as info:
        pnp_update(z, z, 0.5, 0.4, backend="auto")
    for name in backends.OP_BACKEND_PRIORITY:
        assert f"{name}: " in str(info.value)


def test_non_contiguous_inputs_give_the_reference_result():
    args = good_args()
    expected = pnp_update_reference(**{k: v for k, v in args.items() if k != "backend"})
    strided = {
        k: (v.transpose(-1, -2).contiguous().transpose(-1, -2) if isinstance(v, torch.Tensor) else v)
        for k, v in args.items()
    }
    assert not strided["z"].is_contiguous()
    actual = pnp_update(**strided)
    for name in ("x0", "z_next", "certain", "certain_fraction", "nonfinite", "z_perturbed"):
        torch.testing.assert_close(getattr(actual, name), getattr(expected, name), atol=0, rtol=0)


def test_out_buffers_are_written_in_place():
    args = good_args()
    out = PnPUpdateOutput(
        x0=torch.full(SHAPE, float("nan")), z_next=torch.full(SHAPE, float("nan")),
        certain=torch.ones(SHAPE[0], *SHAPE[2:], dtype=torch.bool),
        certain_fraction=torch.full((2,), float("nan")), nonfinite=torch.full((2,), -1, dtype=torch.int32),
        z_perturbed=torch.full(SHAPE, float("nan")), uncertainty=None,
    )
    result = pnp_update(**args, out=out)
    expected = pnp_update_reference(**{k: v for k, v in args.items() if k != "backend"})
    for name in ("x0", "z_next", "certain", "certain_fraction", "nonfinite", "z_perturbed"):
        assert getattr(result, name) is getattr(out, name), name
        torch.testing.assert_close(getattr(out, name), getattr(expected, name), atol=0, rtol=0)
    assert result.uncertainty is None


def _aliasing_outs(args):
    shared = torch.empty(SHAPE)
    mask_shape = (SHAPE[0], *SHAPE[2:])
    return {
        "out.x0 is out.z_next": (empty_out(x0=shared, z_next=shared), ["out.x0", "out.z_next"]),
        "out.x0 is prev_x0": (empty_out(x0=args["prev_x0"]), ["out.x0", "prev_x0"]),
        "out.z_perturbed views z": (empty_out(z_perturbed=args["z"][:, :]), ["out.z_perturbed", "z"]),
        "out.certain inside prev_certain's storage": (
            empty_out(certain=args["prev_certain"].view(-1)[: args["prev_certain"].numel()].view(mask_shape)),
            ["out.certain", "prev_certain"]),
    }


@pytest.mark.parametrize("case", ["out.x0 is out.z_next", "out.x0 is prev_x0", "out.z_perturbed views z",
                                  "out.certain inside prev_certain's storage"])
def test_outputs_must_not_share_memory(case):
    args = good_args()
    out, words = _aliasing_outs(args)[case]
    with pytest.raises(ValueError, match="shares memory") as info:
        pnp_update(**args, out=out)
    for word in words:
        assert word in str(info.value)


def test_disjoint_views_of_one_buffer_are_fine():
    args = good_args()
    storage = torch.full((2, *SHAPE), float("nan"))
    result = pnp_update(**args, out=empty_out(x0=storage[0], z_next=storage[1]))
    expected = pnp_update_reference(**{k: v for k, v in args.items() if k != "backend"})
    torch.testing.assert_close(storage[0], expected.x0, atol=0, rtol=0)
    torch.testing.assert_close(result.z_next, expected.z_next, atol=0, rtol=0)


@pytest.mark.parametrize("tau", [0, 0.3, 2, float("inf"), float("nan"), -0.5, 10**400, True])
def test_op_and_config_accept_the_same_tau(tau):
    def accepted(build) -> bool:
        try:
            build()
        except (TypeError, ValueError):
            return False
        return True

    z = torch.zeros(1, 4, 1, 2, 3)
    assert accepted(lambda: PnPConfig(tau=tau)) == accepted(lambda: PnPUpdateInputs(z, z, 0.5, 0.4, tau=tau))


@pytest.mark.parametrize("backend, device", [pytest.param("torch", "cpu", id="torch-cpu"), *BACKEND_DEVICES])
def test_nonfinite_counts_nan_and_inf_in_a_noise_tensor(backend, device):
    # Sample 0 gets NaN and Inf at two unpinned positions (one of them in two channels: one position),
    # sample 1 a NaN in the pinned frame only, sample 2 a NaN but it is not active: 2, 0, 0.
    shape, pinned = (3, 5, 3, 4, 3), 1
    z, prev_x0, prev_z_next = (torch.randn(shape, device=device) for _ in range(3))
    noise = torch.randn(shape, device=device)
    noise[0, 1, 2, 3, 1] = noise[0, 4, 2, 3, 1] = float("nan")
    noise[0, 0, 1, 0, 2] = float("inf")
    noise[1, 2, 0, 1, 1] = float("nan")
    noise[2, 3, 1, 2, 0] = float("nan")
    result = pnp_update(z, torch.randn(shape, device=device), 0.6, 0.5, prev_x0=prev_x0, prev_z_next=prev_z_next,
                        prev_certain=torch.zeros(3, *shape[2:], dtype=torch.bool, device=device),
                        active=torch.tensor([True, True, False], device=device), noise=noise,
                        num_pinned_frames=pinned, backend=backend)
    assert result.nonfinite.tolist() == [2, 0, 0]
    finite = pnp_update(z, torch.randn(shape, device=device), 0.6, 0.5, noise=torch.randn(shape, device=device),
                        backend=backend)
    assert finite.nonfinite.tolist() == [0, 0, 0]
    reference = pnp_update_reference(z, torch.randn(shape, device=device), 0.6, 0.5, noise=noise)
    assert reference.nonfinite.tolist() == [2, 1, 1]  # no pinned frames, every sample active


@pytest.mark.parametrize("shape", [(2, 4, 0, 5, 7), (0, 4, 3, 5, 7), (2, 4, 3, 0, 7)], ids=["no-frames", "no-samples", "no-rows"])
def test_an_empty_axis_gives_empty_outputs(shape):
    z = torch.randn(shape)
    result = pnp_update(z, torch.randn(shape), 0.5, 0.4, num_pinned_frames=0, backend="torch")
    assert result.z_next.shape == shape and result.certain_fraction.shape == (shape[0],)
    with pytest.raises(ValueError, match="num_pinned_frames"):
        pnp_update(z, z, 0.5, 0.4, num_pinned_frames=shape[2] + 1)  # more frames than there are
