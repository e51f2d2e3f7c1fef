"""Processes launched with torchrun (docs/DISTRIBUTED.md). ``pnp-sample --parallel``: one video sampled by
several processes together with diffusers' context parallelism. ``pnp-eval``: each group of processes
(one, or a context-parallel group) samples its own share of the evaluation (data parallelism).

Every rank loads the whole pipeline and calls the transformers together; each computes its share of the
video's tokens. The P&P engine runs on every rank with the same noise and agrees across ranks on every
early exit and NaN stop (``pnp_kernels.engine``), so all ranks make the same model calls. Only rank 0
decodes the latents and writes files.

Failures: the flags are checked against torchrun's environment before anything loads (exit 2). At the
points where all ranks meet outside the model (``Ranks.together``: after the arguments are checked and
after loading) every rank learns the first rank's failure and all exit with it; rank 0 prints it. A NaN
stops every rank at the same model call (the engine's agreement). A failure on one rank inside a model
call (out of memory) cannot be shared, as the other ranks wait inside the model's collectives: that rank
prints it and exits, and torchrun stops the others. A rank that stops answering fails the others after
``--parallel-timeout`` seconds (the process group's collective timeout).
"""
from __future__ import annotations

import argparse
import os
import traceback
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import Iterator

from ..validators import check_int, check_real
from .errors import CommandError, UsageError

MODES = ("ulysses", "ring")
TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
# diffusers backends that support context parallelism but not ring attention: they do not return the
# log-sum-exp of their softmax, which ring attention needs to merge the partial results.
NO_LOG_SUM_EXP = ("native", "_native_npu")
DEFAULT_TIMEOUT_S = 600.0  # torch's own default for NCCL; the ranks meet often enough for it (docs/DISTRIBUTED.md)


@dataclass(frozen=True)
class Launch:
    """The --parallel flags checked against torchrun's environment."""

    mode: str
    ulysses_degree: int
    ring_degree: int
    rank: int
    local_rank: int
    world_size: int
    timeout_s: float
    data_degree: int = 1  # groups of ranks that sample different videos (pnp-eval)

    @property
    def context_degree(self) -> int:
        """Ranks that sample one video together (consecutive ranks: a group shares a node when it can)."""
        return self.ulysses_degree * self.ring_degree

    @property
    def data_rank(self) -> int:
        """Which of the ``data_degree`` groups this rank belongs to."""
        return self.rank // self.context_degree


class RankFailure(CommandError):
    """A failure every rank raises alike; only rank 0 prints it."""

    def __init__(self, message: str, exit_status: int, rank: int):
        super().__init__(message)
        self.exit_status = exit_status
        self.quiet = rank != 0


def _torchrun_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def _usage(message: str) -> UsageError:
    """A flag error: every rank finds it alike, so ranks other than 0 stay quiet."""
    error = UsageError(message)
    error.quiet = os.environ.get("RANK", "0") != "0"
    return error


def parallel_launch(args: argparse.Namespace, command: str = "pnp_kernels",
                    data_parallel: bool = False) -> Launch | None:
    """The launch the flags and torchrun's environment ask for (None: one process); a one-line usage error
    for a combination that cannot work, before anything is loaded. ``command``: the module torchrun runs.
    With ``data_parallel`` (pnp-eval), processes that --parallel leaves over sample different videos: all of
    them without --parallel, and world / --parallel-degree groups with it."""
    world = _torchrun_world_size()
    if args.parallel is None and (args.parallel_degree is not None or not (data_parallel and world > 1)):
        where = f"--parallel {'|'.join(MODES)}" + (" or a run under torchrun" if data_parallel else "")
        for flag, value in (("--parallel-degree", args.parallel_degree), ("--parallel-timeout", args.parallel_timeout)):
            if value is not None:
                raise _usage(f"{flag} is for {where}")
        if world > 1:
            raise _usage(f"torchrun started {world} processes but --parallel is not set: each would sample and write "
                         f"the same files; add --parallel {'|'.join(MODES)} (or launch one process)")
        return None
    what = f"--parallel {args.parallel}" if args.parallel else "a run of several processes"
    missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise _usage(f"{what} needs the environment torchrun sets ({', '.join(missing)} missing): "
                     f"launch with torchrun --nproc-per-node N -m {command} ...")
    try:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    except ValueError:
        raise _usage(f"{what}: RANK and LOCAL_RANK must be integers (set by torchrun)") from None
    if world < 2:
        raise _usage(f"{what} needs at least 2 processes; torchrun started {world}")
    try:
        degree = check_int("--parallel-degree", world if args.parallel_degree is None else args.parallel_degree,
                           low=2, high=world) if args.parallel else 1
        timeout = check_real("--parallel-timeout", DEFAULT_TIMEOUT_S if args.parallel_timeout is None
                             else args.parallel_timeout, low=0.0, low_open=True)
    except ValueError as error:
        raise _usage(str(error)) from None
    if world % degree:
        raise _usage(f"--parallel-degree {degree} does not divide the {world} processes torchrun started")
    given = {"--offload": args.offload and args.parallel, "--compile": args.compile and args.parallel,
             "--device": args.device is not None}
    refused = [flag for flag, on in given.items() if on]
    if refused:
        reason = ("each rank's device is cuda:LOCAL_RANK (cpu without CUDA)" if refused[0] == "--device"
                  else "it is not supported with context parallelism")
        raise _usage(f"{refused[0]} cannot be combined with {what}: {reason}")
    if data_parallel:  # the ranks left over sample other videos
        ulysses, ring = (degree, 1) if args.parallel == "ulysses" else (1, degree)
        return Launch(args.parallel, ulysses, ring, rank, local_rank, world, timeout, world // degree)
    other = world // degree  # the ranks left over use the other mode
    ulysses, ring = (degree, other) if args.parallel == "ulysses" else (other, degree)
    return Launch(args.parallel, ulysses, ring, rank, local_rank, world, timeout)


class Ranks:
    """The process group of a run under torchrun, once started."""

    def __init__(self, launch: Launch):
        import torch

        self.launch = launch
        self.rank = launch.rank
        self.device = f"cuda:{launch.local_rank}" if torch.cuda.is_available() else "cpu"
        self.parallel_models: list[str] = []  # the pipeline's components that run context-parallel
        # The ranks that sample one video together and so must agree on P&P's early exits ("auto": all of
        # them; None: each rank alone), and diffusers' device mesh of them (None: all ranks).
        self.pnp_group = "auto" if launch.data_degree == 1 else None
        self.context_mesh = None

    @property
    def writes(self) -> bool:
        """Whether this rank decodes and writes the outputs."""
        return self.rank == 0

    @property
    def leads_group(self) -> bool:
        """Whether this rank decodes and saves the videos of its context-parallel group (its first rank)."""
        return self.rank % self.launch.context_degree == 0

    def start(self) -> "Ranks":
        from datetime import timedelta

        import torch
        import torch.distributed as dist

        backend = "nccl" if self.device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(self.device)
        dist.init_process_group(backend, timeout=timedelta(seconds=self.launch.timeout_s))
        launch = self.launch
        if launch.data_degree > 1 and launch.context_degree > 1:
            from torch.distributed.device_mesh import init_device_mesh

            size = launch.context_degree
            groups = [dist.new_group(list(range(first, first + size))) for first in range(0, launch.world_size, size)]
            self.pnp_group = groups[launch.data_rank]  # every rank creates every group, in the same order
            mesh = init_device_mesh(self.device.split(":")[0], (launch.data_degree, launch.ring_degree,
                                    launch.ulysses_degree), mesh_dim_names=("data", "ring", "ulysses"))
            self.context_mesh = mesh["ring", "ulysses"]
        return self

    def stop(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

    @contextmanager
    def together(self, what: str) -> Iterator[None]:
        """Run the block on every rank, then meet: if it failed anywhere, every rank raises the failure
        of the lowest failing rank (rank 0 prints it). The block must make no collective call that a
        failure could skip."""
        import torch.distributed as dist

        failure = None
        try:
            yield
        except CommandError as error:
            failure = (str(error), error.exit_status)
        except Exception as error:  # an unexpected failure: its traceback stays with the rank that saw it
            traceback.print_exc()
            failure = (f"{type(error).__name__}: {error}", 1)
        failures = [None] * self.launch.world_size
        dist.all_gather_object(failures, failure)
        for rank, failed in enumerate(failures):
            if failed is not None:
                message, status = failed
                raise RankFailure(message if rank == 0 else f"rank {rank}, {what}: {message}", status, self.rank)

    def alone(self, error: CommandError) -> CommandError:
        """A failure of this rank alone (the others are inside a model call): printed, naming the rank."""
        if self.rank:
            error.args = (f"rank {self.rank}: {error}",)
        return error

    def on_every_rank(self, error: CommandError) -> CommandError:
        """A failure every rank raises at the same point: printed by rank 0 only."""
        error.quiet = self.rank != 0
        return error

    def check_fits(self, settings):
        """The settings with an attention backend that supports context parallelism; a usage error if the
        video's tokens or the heads do not split over the ranks."""
        info, launch = settings.model, self.launch
        latent_frames = (settings.frames - 1) // info.temporal_factor + 1
        tokens = latent_frames * (settings.height // info.size_multiple) * (settings.width // info.size_multiple)
        if tokens % launch.context_degree:
            raise UsageError(f"the video has {tokens} tokens ({latent_frames} latent frames of "
                             f"{settings.height // info.size_multiple}x{settings.width // info.size_multiple}), "
                             f"which do not split evenly over {launch.context_degree} ranks; change --frames, "
                             "--height or --width")
        if info.heads % launch.ulysses_degree:
            raise UsageError(f"--parallel: the model's {info.heads} attention heads do not split over "
                             f"{launch.ulysses_degree} Ulysses ranks; choose a --parallel-degree that divides them")
        return replace(settings, attention=_context_parallel_attention(settings, ring=launch.ring_degree > 1))

    def enable(self, pipe) -> None:
        """Context parallelism on every transformer of the pipeline, and no progress bar beside rank 0's."""
        for name in ("transformer", "transformer_2"):
            model = getattr(pipe, name, None)
            if model is not None:
                enable_context_parallel(model, self.launch.ulysses_degree, self.launch.ring_degree, self.context_mesh)
                self.parallel_models.append(name)
        if not self.writes:
            pipe.set_progress_bar_config(disable=True)

    def record(self) -> dict:
        """What the sidecar says about the launch."""
        launch = self.launch
        return {"mode": launch.mode, "world_size": launch.world_size, "ulysses_degree": launch.ulysses_degree,
                "ring_degree": launch.ring_degree, "timeout_s": launch.timeout_s, "models": self.parallel_models}


def together(ranks: Ranks | None, what: str):
    """``ranks.together(what)``, or nothing to agree on in a single process."""
    return nullcontext() if ranks is None else ranks.together(what)


def enable_context_parallel(model, ulysses_degree: int, ring_degree: int, mesh=None) -> None:
    """diffusers' context parallelism on ``model`` (a transformer with a ``_cp_plan``) over the default
    process group or over ``mesh`` (a device mesh with "ring" and "ulysses" dimensions), on CUDA or, with
    gloo, on CPU."""
    from diffusers import ContextParallelConfig

    config = ContextParallelConfig(ulysses_degree=ulysses_degree, ring_degree=ring_degree, mesh=mesh)
    with _accelerator_count_for_cpu():
        model.enable_parallelism(config=config)


def _context_parallel_attention(settings, ring: bool) -> str:
    """The attention backend to run with: the one asked for if it can run under context parallelism, else
    for "auto" the first of the usual order that can and runs here. Ring attention merges partial
    softmaxes and so needs a backend that returns their log-sum-exp."""
    import torch

    from ..compat import context_parallel_backends
    from ..wan.attention import ATTENTION_BACKEND_PRIORITY, AttentionInputs, choose_attention_backend

    def usable(name: str) -> bool:
        return name in context_parallel_backends() and not (ring and name in NO_LOG_SUM_EXP)

    capable = sorted(filter(usable, context_parallel_backends()))
    needs = f"{'ring attention' if ring else 'context parallelism'} needs one of {', '.join(capable)}"
    if settings.attention != "auto":
        if not usable(settings.attention):
            raise UsageError(f"--attention {settings.attention} cannot run under --parallel: {needs}")
        return settings.attention
    inputs = AttentionInputs(torch.device(settings.device), getattr(torch, settings.dtype), settings.model.head_dim)
    for name in filter(usable, ATTENTION_BACKEND_PRIORITY):
        try:
            return choose_attention_backend(name, inputs).backend
        except ValueError:  # cannot run here (device, dtype, package)
            continue
    raise UsageError(f"--parallel: {needs}, and none of those the automatic choice tries "
                     f"({', '.join(filter(usable, ATTENTION_BACKEND_PRIORITY))}) can run on {settings.device} in "
                     f"{settings.dtype}")


@contextmanager
def _accelerator_count_for_cpu() -> Iterator[None]:
    """diffusers (0.42) puts a rank on device ``rank % torch.accelerator.device_count()`` while setting up
    parallelism, which divides by zero on a machine without an accelerator, although its context
    parallelism runs on CPU tensors with gloo (that device is used only by tensor-parallel loading). There,
    the count reads 1 for the duration of the setup."""
    import torch

    if torch.accelerator.device_count() > 0:
        yield
        return
    from unittest import mock

    with mock.patch.object(torch.accelerator, "device_count", return_value=1):
        yield
