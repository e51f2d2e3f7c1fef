"""Data parallelism: torch.distributed ranks that each sample their own videos (their own seeds) with the
Wan P&P pipeline and with enable_pnp on the stock pipeline (docs/DISTRIBUTED.md). Left at "auto", the
ranks would agree on early exits of different videos: every rank stops with an error naming the argument
that says otherwise; with it set to None each rank samples alone, as in a process of its own."""
import pytest
import torch
import torch.distributed as dist

pytest.importorskip("diffusers", reason="the pipelines are diffusers'")

from tests.distributed.ranks import run_ranks  # noqa: E402

WORLD = 2
PLAN = "1-2:2,3:1"


def run(pipe, seed: int, **kwargs) -> torch.Tensor:
    """The latents of a 6-step guided call of a tiny Wan pipeline (48x32, 9 frames)."""
    from tests.wan import tiny

    return pipe(prompt_embeds=tiny.prompt_embeds(1, 0), negative_prompt_embeds=tiny.prompt_embeds(1, 99), height=48,
                width=32, num_frames=9, num_inference_steps=6, guidance_scale=4.0, output_type="latent",
                generator=torch.Generator().manual_seed(seed), **kwargs).frames


def gathered(t: torch.Tensor) -> list[torch.Tensor]:
    parts = [torch.empty_like(t) for _ in range(WORLD)]
    dist.all_gather(parts, t.contiguous())
    return parts


def worker(rank: int, init_file: str) -> None:
    from tests.wan import tiny
    from diffusers import WanPipeline

    from pnp_kernels import PnPConfig
    from pnp_kernels.diffusers import disable_pnp, enable_pnp
    from pnp_kernels.wan import WanPnPPipeline

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        config = PnPConfig(plan=PLAN, tau=0.3)
        own_group = [dist.new_group([r]) for r in range(WORLD)][rank]  # every rank creates every group
        stock, ours = WanPipeline(**tiny.components()), WanPnPPipeline(**tiny.components())
        for pipe in (stock, ours):
            pipe.set_progress_bar_config(disable=True)

        def with_enable_pnp(group):
            enable_pnp(stock, config, group=group)
            try:
                return run(stock, seed=10 + rank)
            finally:
                disable_pnp(stock)

        samplers = {
            "pnp_group": lambda group: run(ours, seed=10 + rank, pnp=config, pnp_group=group),
            "group": with_enable_pnp,
        }
        for argument, sample in samplers.items():
            with pytest.raises(ValueError, match=f"data parallel.*{argument}=None"):
                sample("auto")
            mine = sample(None)
            alone = sample(own_group)  # a group of this rank alone: nobody to agree with
            assert torch.equal(mine, alone), argument
            first, second = gathered(mine)
            assert not torch.equal(first, second), f"{argument}: the ranks sampled different seeds"
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # process start-up: about half a minute on two CPU cores
def test_ranks_sampling_their_own_videos(tmp_path):
    run_ranks(worker, (str(tmp_path / "rendezvous"),), WORLD)
