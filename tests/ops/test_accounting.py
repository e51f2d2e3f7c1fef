"""bytes_moved counts exactly the tensors an update in each situation reads and writes."""
from __future__ import annotations

import pytest
import torch

from pnp_kernels.ops import PhiloxNoise, pnp_update
from pnp_kernels.ops.accounting import SITUATIONS, byte_table, bytes_moved

SHAPE = (2, 5, 3, 4, 7)


def _call(situation, guided: bool, noise: str, store_state: bool):
    """The arguments the sampler passes in ``situation`` (fresh random tensors)."""
    z = torch.randn(SHAPE)
    args = dict(z=z, v=torch.randn(SHAPE).bfloat16(), sigma=0.6, sigma_next=0.5, store_state=store_state)
    if guided:
        args.update(v_uncond=torch.randn(SHAPE).bfloat16(), guidance_scale=4.0)
    if situation.prev:
        args.update(prev_x0=torch.randn(SHAPE), prev_z_next=torch.randn(SHAPE),
                    prev_certain=torch.rand(SHAPE[0], *SHAPE[2:]) < 0.5)
    if situation.noise:
        args["noise"] = torch.randn(SHAPE) if noise == "tensor" else PhiloxNoise((1, 2), step=3, iteration=1)
    return args


def _nbytes(args, result) -> int:
    read = sum(t.nbytes for t in args.values() if isinstance(t, torch.Tensor))
    if isinstance(args.get("noise"), PhiloxNoise):
        read += args["noise"].key_table("cpu").nbytes
    written = sum(t.nbytes for t in result if isinstance(t, torch.Tensor))
    return read + written


@pytest.mark.parametrize("variant", list(SITUATIONS))
@pytest.mark.parametrize("guided", [False, True])
@pytest.mark.parametrize("noise", ["philox", "tensor"])
@pytest.mark.parametrize("always_store", [False, True])
def test_bytes_moved_equals_the_tensors_of_a_real_call(variant, guided, noise, always_store):
    situation = SITUATIONS[variant]
    args = _call(situation, guided, noise, store_state=situation.store_state or always_store)
    result = pnp_update(**args, backend="torch")
    assert bytes_moved(variant, SHAPE, guided=guided, noise=noise, always_store=always_store) == _nbytes(args, result)


def test_store_state_saves_a_latent_and_a_mask_where_nobody_reads_them():
    for variant in ("plain step", "last iteration"):
        saved = bytes_moved(variant, SHAPE, always_store=True) - bytes_moved(variant, SHAPE)
        assert saved == 4 * torch.Size(SHAPE).numel() + SHAPE[0] * 3 * 4 * 7
    for variant in ("first iteration", "refined iteration"):
        assert bytes_moved(variant, SHAPE, always_store=True) == bytes_moved(variant, SHAPE)


def test_table_lists_every_situation_per_shape():
    table = byte_table({"tiny": SHAPE})
    assert table.count("| tiny |") == len(SITUATIONS)
    with pytest.raises(ValueError, match="variant"):
        bytes_moved("middle", SHAPE)
