"""``pnp-eval`` under torchrun: the samples shared out over groups of processes (docs/EVAL.md, "Several
GPUs or nodes"; docs/DISTRIBUTED.md).

Every process checks the whole command line alone, then all compare what they are about to evaluate and
refuse to start when any differs. Rank 0 prepares the output folder and decides which samples are left;
the data-parallel groups (one process each, or a context-parallel group with --parallel) take every
group-count-th of them, each group's first rank saving its samples into the shared folder as they finish.
At the end the ranks meet once more (any failure is then every rank's) and rank 0 writes the report from
the saved samples, as a single process does. A rank that dies loses only its unfinished samples: running
the same command again, with any number of processes, computes only the samples without a record.
"""
from __future__ import annotations

from typing import Sequence, TypeVar

from ..cli_common.errors import UsageError
from ..cli_common.parallel import Launch, RankFailure, Ranks, parallel_launch

MODULE = "pnp_kernels.eval"
Item = TypeVar("Item")


def eval_launch(args, demo: bool) -> Launch | None:
    """The launch torchrun's environment and the --parallel flags ask for; None: one process."""
    if demo and args.parallel is not None:
        raise UsageError(f"--parallel does not apply to the demo model (it is too small to split); under "
                         "torchrun its processes each sample their own seeds without it")
    return parallel_launch(args, MODULE, data_parallel=True)


def refuse_differences(ranks: Ranks, plan: dict) -> None:
    """Raise on every rank unless every rank is about to evaluate the same ``plan`` (JSON-able: the
    model, settings, prompts, seeds and output folder) as rank 0; rank 0 names the first one that differs."""
    import torch.distributed as dist

    plans = [None] * ranks.launch.world_size
    dist.all_gather_object(plans, plan)
    for rank, other in enumerate(plans):
        if other != plans[0]:
            differing = sorted(key for key in set(other) | set(plans[0]) if other.get(key) != plans[0].get(key))
            raise RankFailure(f"rank {rank} was given other {', '.join(differing)} than rank 0: every process of a "
                              "torchrun launch must run the same command", 2, ranks.rank)


def agreed(value):
    """Rank 0's ``value`` on every rank."""
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def share(items: Sequence[Item], launch: Launch) -> list[Item]:
    """This rank's data-parallel group's share of ``items``: every data_degree-th, from its own index."""
    return list(items[launch.data_rank :: launch.data_degree])
