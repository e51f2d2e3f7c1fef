"""The counts behind GB/s and TFLOP/s, checked independently: FLOPs against torch's FlopCounterMode,
bytes (the bench's variants through the op's accounting) against a count by hand. (Plain tests: they
run with --benchmark-disable and skip with --benchmark-only.)"""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.update_cases import Variant, bytes_moved
from bench.wan_model import TINY, WAN21_1_3B, WanProblem, build_model, forward_flops, text_embeddings


@pytest.mark.parametrize("layers, latents, text_len", [(1, (1, 16, 3, 6, 10), 7), (3, (2, 16, 5, 8, 14), 24)])
def test_forward_flops_match_torch_flop_counter(layers, latents, text_len):
    attention_backend = pytest.importorskip("diffusers.models.attention_dispatch").attention_backend

    problem = WanProblem("odd", dict(TINY, num_layers=layers), latents, text_len)
    model = build_model(problem.config, torch.device("cpu"), torch.float32)
    g = torch.Generator().manual_seed(11)
    x = torch.randn(latents, generator=g)
    t = torch.rand(latents[0], generator=g) * 1000
    text = text_embeddings(problem, latents[0], "cpu", torch.float32, seed=12)
    # Math attention runs as batched matmuls, which the counter sees; fused kernels it may not.
    with attention_backend("_native_math"), FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, t, text, return_dict=False)
    counted = forward_flops(problem, batch=latents[0])
    assert counted["total"] == counter.get_total_flops()
    assert counted["attention"] == counter.get_flop_counts()["Global"][torch.ops.aten.bmm]


def test_wan_480p_forward_flops_by_hand():
    # 21 x 30 x 52 tokens, d = 1536: the attention term dominates and is easy to check by hand.
    problem = WanProblem("480p", WAN21_1_3B, (1, 16, 21, 60, 104), 512)
    flops = forward_flops(problem)
    tokens, d = 21 * 30 * 52, 1536
    assert flops["tokens"] == tokens
    assert flops["attention"] == 30 * (4 * tokens * tokens * d + 4 * tokens * 512 * d)
    assert 80e12 < flops["linear"] < 90e12  # 30 blocks x ~2.8 TFLOP of projections and FFN


def test_bytes_moved_by_hand():
    # The bench's variants through the op's accounting (pnp_kernels/ops/accounting.py), counted here by hand.
    shape = (2, 16, 3, 5, 7)
    n, p, stats = 2 * 16 * 3 * 5 * 7, 2 * 3 * 5 * 7, 2 * 8
    # Refined iteration, tensor noise: z, bf16 v and v_uncond, prev x0 / z_next / mask, noise read;
    # x0, z_next, mask, z_perturbed written.
    assert bytes_moved(shape, Variant(True, True, "tensor")) == 4 * n + 4 * n + 8 * n + p + 4 * n + 12 * n + p + stats
    # First iteration, philox noise: no previous state; the noise is computed from 16 key bytes per sample.
    assert bytes_moved(shape, Variant(False, False, "philox")) == 4 * n + 2 * n + 12 * n + p + 2 * 16 + stats
    # Plain step: z_next alone is written (no z_perturbed, x0 and the mask are not stored).
    assert bytes_moved(shape, Variant(True, False, "none")) == 4 * n + 4 * n + 4 * n + stats
    # Last iteration: the previous state is read, z_next alone written.
    assert bytes_moved(shape, Variant(True, True, "none")) == 4 * n + 4 * n + 8 * n + p + 4 * n + stats
