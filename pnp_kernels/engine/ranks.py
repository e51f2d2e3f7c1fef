"""Agreement between the torch.distributed ranks that sample one video together."""
from __future__ import annotations

import hashlib

import torch

from ..validators import check_choice


def check_process_group(name: str, group):
    """``group`` as the engine takes it: "auto", None, or a torch.distributed ProcessGroup."""
    if isinstance(group, str):
        return check_choice(name, group, ("auto",))
    if group is None:
        return None
    import torch.distributed as dist

    if not (dist.is_available() and isinstance(group, dist.ProcessGroup)):
        raise TypeError(f"{name} must be 'auto', None or a torch.distributed ProcessGroup, got {group!r}")
    return group


class RankAgreement:
    """Makes the ranks of a process group decide alike. In a sequence- or context-parallel run every rank
    holds the whole latents and calls the model together; if rounding made one rank stop a step early,
    the ranks would make different numbers of model calls and the model's collectives would hang. So the
    per-sample "still iterating" flags and the NaN counts are combined with MAX at the host reads the run
    makes anyway: a sample iterates while any rank wants it to, and a NaN on any rank stops every rank."""

    def __init__(self, group, device: torch.device):
        import torch.distributed as dist

        self.dist, self.group = dist, group
        self.world_size = dist.get_world_size(group)
        # Gloo reduces CPU tensors; NCCL and the others reduce tensors on the latents' device.
        self.device = torch.device("cpu") if dist.get_backend(group) == "gloo" else device

    @classmethod
    def of(cls, group, device: torch.device) -> "RankAgreement | None":
        """For ``group`` ("auto": the default group when torch.distributed runs more than one rank; None:
        every rank decides alone), or None when there is nobody to agree with."""
        import torch.distributed as dist

        check_process_group("group", group)
        if group == "auto":
            if not (dist.is_available() and dist.is_initialized()):
                return None
            group = dist.group.WORLD
        elif group is None:
            return None
        agreement = cls(group, device)
        return agreement if agreement.world_size > 1 else None

    def maximum(self, flags: torch.Tensor) -> torch.Tensor:
        reduced = flags.to(self.device, copy=True)
        self.dist.all_reduce(reduced, op=self.dist.ReduceOp.MAX, group=self.group)
        return reduced.to(flags.device)

    def check_same_noise(self, fingerprint: bytes, what: str) -> None:
        """Raise on every rank unless all ranks start from the same noise source."""
        digest = hashlib.sha256(fingerprint).digest()
        words = torch.tensor([int.from_bytes(digest[i : i + 8], "little", signed=True) for i in (0, 8)],
                             dtype=torch.int64, device=self.device)
        gathered = [torch.empty_like(words) for _ in range(self.world_size)]
        self.dist.all_gather(gathered, words, group=self.group)
        differing = [rank for rank, other in enumerate(gathered) if not torch.equal(other, gathered[0])]
        if differing:
            raise ValueError(
                f"the ranks of the process group start from different {what} (ranks {differing} differ from rank "
                "0): in a sequence- or context-parallel run every rank must seed the same noise. For ranks that "
                "sample different videos (data parallel), pass group=None (enable_pnp(..., group=None); "
                "pnp_group=None to the Wan P&P pipelines)"
            )
