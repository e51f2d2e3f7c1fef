"""pnp_sample on several torch.distributed ranks (CPU processes, gloo) sampling one batch together, as
with sequence parallelism: equal to one process bit for bit, the same model calls on every rank when
rounding differs between ranks, and a clear error when the ranks' noise differs (docs/ALGORITHM.md,
"Several ranks")."""

import pytest
import torch
import torch.distributed as dist

from pnp_kernels import PnPConfig, pnp_sample
from tests.distributed.ranks import run_ranks

SHAPE = (2, 4, 3, 4, 5)  # B, C, F, H, W: 60 tokens, split evenly over 2 or 3 ranks
SIGMAS = torch.linspace(1.0, 0.0, 7)
CONFIG = dict(plan=[(1, 3, 3), (4, 4, 1)], tau=0.05, certain_stop=0.9, backend="torch")


class ToyModel:
    """A toy velocity model that runs on one process or on all ranks together.

    parallel=None: one process. "sharded": as with sequence parallelism, each rank computes its share of
    the tokens and all-gathers the full velocity; the math is per token (channel mixing written out
    elementwise), so a share computes exactly what the whole computes. "replicated": each rank computes
    the whole velocity, scaled by ``rank_gain``: rank-dependent rounding, made large enough to change
    early exits. Running together, every call first checks that all ranks are at the same step, as a
    real sharded model needs (ranks that disagreed would mix shards of different steps).
    """

    def __init__(self, targets, gains, parallel: str | None = None, rank_gain: float = 1.0):
        mixing = torch.Generator().manual_seed(0)
        self.channels = targets.shape[1]
        self.mix = (torch.randn(self.channels, self.channels, generator=mixing) / self.channels).tolist()
        self.targets = targets.flatten(2)
        self.gains = torch.tensor(gains).view(-1, 1, 1) * rank_gain
        self.parallel = parallel
        self.calls = 0

    def velocity(self, tokens, targets, gains, sigma):
        squashed = torch.tanh(tokens)
        mixed = [sum(self.mix[i][c] * squashed[:, c] for c in range(self.channels)) for i in range(self.channels)]
        return (tokens - targets) / max(sigma, 1e-3) + gains * torch.stack(mixed, dim=1) * (1.0 + sigma)

    def __call__(self, z, step, sigma):
        self.calls += 1
        tokens = z.flatten(2)
        if self.parallel is not None:
            steps = gathered(step)
            assert len(set(steps)) == 1, f"ranks called the model at different steps {steps}"
        if self.parallel != "sharded":
            return self.velocity(tokens, self.targets, self.gains, sigma).view_as(z)
        rank, world = dist.get_rank(), dist.get_world_size()
        share = tokens.shape[2] // world
        mine = slice(rank * share, (rank + 1) * share)
        part = self.velocity(tokens[..., mine], self.targets[..., mine], self.gains, sigma).contiguous()
        parts = [torch.empty_like(part) for _ in range(world)]
        dist.all_gather(parts, part)
        return torch.cat(parts, dim=2).view_as(z)


def problem():
    g = torch.Generator().manual_seed(3)
    return torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g), [0.05, 0.6]


def gathered(value: int) -> list[int]:
    values = [torch.zeros(1, dtype=torch.int64) for _ in range(dist.get_world_size())]
    dist.all_gather(values, torch.tensor([value]))
    return [int(v) for v in values]


def worker(rank: int, world: int, init_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        latents, targets, gains = problem()
        for noise, source in (("philox", lambda: {"seed": 7}), ("generator", lambda: {"generator": torch.Generator().manual_seed(11)})):
            cfg = PnPConfig(noise=noise, **CONFIG)
            together = pnp_sample(ToyModel(targets, gains, "sharded"), latents, SIGMAS, cfg, **source())
            alone = pnp_sample(ToyModel(targets, gains), latents, SIGMAS, cfg, group=None, **source())
            assert torch.equal(together.latents, alone.latents), noise
            assert together.stats.early_exits > 0 and together.stats.nfe == alone.stats.nfe

        # Rank-dependent velocities: alone, the ranks would stop at different iterations ...
        cfg = PnPConfig(noise="philox", **CONFIG)
        skewed = dict(targets=targets, gains=[0.02, 0.1], rank_gain=1.0 + 2.0 * rank)
        alone = pnp_sample(ToyModel(**skewed), latents, SIGMAS, cfg, seed=7, group=None)
        assert len(set(gathered(alone.stats.nfe))) > 1, "the test needs ranks that would decide differently"
        # ... together they call the model at the same steps, as often, and finish.
        model = ToyModel(parallel="replicated", **skewed)
        together = pnp_sample(model, latents, SIGMAS, cfg, seed=7)
        assert len(set(gathered(model.calls))) == 1 and together.stats.nfe == model.calls

        for source in ({"generator": torch.Generator().manual_seed(rank)}, {"seed": [rank, 1]}):
            cfg = PnPConfig(noise="generator" if "generator" in source else "philox", **CONFIG)
            with pytest.raises(ValueError, match="ranks of the process group start from different"):
                pnp_sample(ToyModel(targets, gains, "sharded"), latents, SIGMAS, cfg, **source)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # about a minute on two CPU cores: process start-up
@pytest.mark.parametrize("world", [2, 3])
def test_ranks_sampling_together(world, tmp_path):
    run_ranks(worker, (world, str(tmp_path / "rendezvous")), world)
