"""P&P with a tiny Wan transformer under diffusers' context parallelism on 2 ranks equals the same run in
one process (docs/DISTRIBUTED.md). On CPU the ranks use gloo and Ulysses attention; ring attention needs
an attention backend that returns the softmax's log-sum-exp, which PyTorch's SDPA ("native", the only one
on CPU) does not, so it is tested with 2 CUDA devices (NCCL) only."""
import pytest
import torch
import torch.distributed as dist

pytest.importorskip("diffusers", reason="context parallelism is diffusers'")

from pnp_kernels import PnPConfig, pnp_sample  # noqa: E402
from pnp_kernels.cli_common.parallel import enable_context_parallel  # noqa: E402
from tests.distributed.ranks import run_ranks  # noqa: E402

WORLD = 2
SHAPE = (2, 16, 3, 6, 8)  # B, C, F, H, W
TOKENS = 3 * 3 * 4  # per sample: patches of 1x2x2 latents, split over the ranks
CONFIG = PnPConfig(plan=[(0, 2, 3)], tau=1.0, certain_stop=0.8, noise="philox", backend="torch")
# Ring attention merges partial softmaxes: the same values up to rounding, not bit for bit.
TOLERANCE = {"ulysses": 0.0, "ring": 1e-4}
DEGREES = {"ulysses": (WORLD, 1), "ring": (1, WORLD)}  # (ulysses_degree, ring_degree)


def denoiser(model, text):
    def denoise(z, step, sigma):
        timestep = torch.full((z.shape[0],), sigma * 1000.0, device=z.device)
        with torch.no_grad():
            return model(z, timestep, text, return_dict=False)[0].float()

    return denoise


def worker(rank: int, init_file: str, device_type: str, modes: tuple[str, ...]) -> None:
    from tests.wan import tiny

    torch.set_num_threads(1)
    device = torch.device(device_type, rank) if device_type == "cuda" else torch.device("cpu")
    if device_type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        g = torch.Generator().manual_seed(5)
        latents = torch.randn(SHAPE, generator=g).to(device)
        text = torch.randn(SHAPE[0], tiny.TEXT_LEN, tiny.TEXT_DIM, generator=g).to(device)
        sigmas = torch.linspace(1.0, 0.0, 6)
        alone = pnp_sample(denoiser(tiny.transformer().to(device), text), latents, sigmas, CONFIG, seed=3, group=None)
        for mode in modes:
            model = tiny.transformer().to(device)
            enable_context_parallel(model, *DEGREES[mode])
            block_tokens = set()
            # The second block: the first one splits its input inside its call.
            model.blocks[1].register_forward_hook(lambda block, args, out: block_tokens.add(args[0].shape[1]))
            together = pnp_sample(denoiser(model, text), latents, sigmas, CONFIG, seed=3)
            assert block_tokens == {TOKENS // WORLD}, f"{mode}: the blocks did not see their share of the tokens"
            torch.testing.assert_close(together.latents, alone.latents, rtol=0, atol=TOLERANCE[mode], msg=mode)
            assert together.stats.nfe == alone.stats.nfe, mode
            assert 0 < together.stats.early_exits < SHAPE[0] * 3, "the plan should exit early for some samples only"
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("device_type, modes", [
    ("cpu", ("ulysses",)),
    pytest.param("cuda", ("ulysses", "ring"), marks=[pytest.mark.gpu, pytest.mark.skipif(
        torch.cuda.device_count() < WORLD, reason=f"needs {WORLD} CUDA devices")]),
])
def test_context_parallel_sampling_equals_one_process(device_type, modes, tmp_path):
    run_ranks(worker, (str(tmp_path / "rendezvous"), device_type, modes), WORLD)
