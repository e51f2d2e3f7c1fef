"""pnp-sample --parallel (docs/DISTRIBUTED.md): flag errors before anything loads, failures shared by the
ranks where they meet, and a 2-process torchrun run on CPU (gloo, Ulysses) that equals one process and
writes its files from rank 0 only."""
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from pnp_kernels import cli
from pnp_kernels.cli_common.errors import RunError, UsageError
from pnp_kernels.cli_common.parallel import Launch, Ranks, RankFailure

from tests.distributed.ranks import TIMEOUT_S, run_ranks

SMALL = ["--height", "32", "--width", "48", "--frames", "5", "--steps", "3", "--plan", "0-1:2", "--dtype", "fp32"]
TORCHRUN = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29555"}


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("pnp-sample: error:")]


@pytest.fixture
def torchrun_env(monkeypatch):
    """The environment torchrun gives rank ``rank`` of ``world`` processes (no process group is started:
    every case here fails before)."""

    def set_env(world=2, rank=0, **drop):
        for name in TORCHRUN:
            monkeypatch.delenv(name, raising=False)
        env = dict(TORCHRUN, WORLD_SIZE=str(world), RANK=str(rank))
        for name, value in env.items():
            if name not in drop:
                monkeypatch.setenv(name, value)

    for name in TORCHRUN:
        monkeypatch.delenv(name, raising=False)
    return set_env


# A model folder that does not exist: each flag error must come before the model is even looked at.
ARGS = ["--model", "/nonexistent/wan", "--prompt", "a cat"]


@pytest.mark.parametrize("world, extra, needles", [
    (None, ["--parallel", "ulysses"], ["torchrun", "RANK"]),
    (1, ["--parallel", "ulysses"], ["at least 2 processes"]),
    (4, ["--parallel", "ring", "--parallel-degree", "3"], ["--parallel-degree 3 does not divide the 4 processes"]),
    (4, ["--parallel", "ulysses", "--parallel-degree", "1"], ["--parallel-degree must be >= 2, got 1"]),
    (2, ["--parallel", "ulysses", "--parallel-degree", "4"], ["--parallel-degree must be <= 2, got 4"]),
    (2, ["--parallel", "ulysses", "--offload"], ["--offload cannot be combined with --parallel"]),
    (2, ["--parallel", "ulysses", "--compile"], ["--compile cannot be combined with --parallel"]),
    (2, ["--parallel", "ulysses", "--device", "cuda:1"], ["--device cannot be combined", "LOCAL_RANK"]),
    (2, ["--parallel", "ulysses", "--parallel-timeout", "0"], ["--parallel-timeout must be > 0.0, got 0.0"]),
    (None, ["--parallel-degree", "2"], ["--parallel-degree is for --parallel"]),
    (2, [], ["torchrun started 2 processes but --parallel is not set"]),
    (None, ["--parallel", "mesh"], ["--parallel", "invalid choice"]),
])
def test_flag_errors_are_one_line_before_loading(torchrun_env, capsys, world, extra, needles):
    if world is not None:
        torchrun_env(world)
    status = cli.main([*ARGS, *extra])
    err = capsys.readouterr().err
    assert status == 2
    (line,) = _errors(err)
    for needle in needles:
        assert needle in line, line


def test_flag_errors_are_printed_by_rank_0_only(torchrun_env, capsys):
    torchrun_env(world=2, rank=1)
    assert cli.main([*ARGS, "--parallel", "ulysses", "--offload"]) == 2
    assert capsys.readouterr().err == ""


def test_demo_refuses_parallel(tmp_path, capsys):
    assert cli.main(["--demo", "--parallel", "ulysses", "--out", str(tmp_path / "demo")]) == 2
    (line,) = _errors(capsys.readouterr().err)
    assert "--demo video does not use --parallel" in line


@pytest.mark.parametrize("rank", [0, 1])
def test_failures_inside_sampling_name_the_rank_or_leave_it_to_rank_0(rank):
    ranks = Ranks(Launch("ulysses", 2, 1, rank, rank, 2, 60.0))
    alone = ranks.alone(RunError("out of memory on cuda:1"))  # only this rank saw it: it must say so
    assert not alone.quiet
    assert str(alone) == ("out of memory on cuda:1" if rank == 0 else f"rank {rank}: out of memory on cuda:1")
    shared = ranks.on_every_rank(RunError("the model returned NaN/Inf at step 2, iteration 0"))  # the same on all
    assert shared.quiet == (rank != 0) and str(shared) == "the model returned NaN/Inf at step 2, iteration 0"


FAILING = [(2,), (1, 2), (0, 2)]  # the ranks that fail at a meeting point, one case after the other


def _meeting_worker(rank: int, init_file: str) -> None:
    """The ranks of each ``FAILING`` case raise inside ``together``; every rank must then raise the
    failure of the lowest of them, and only rank 0 print it."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=3)
    try:
        ranks = Ranks(Launch("ulysses", 3, 1, rank, rank, 3, 60.0))
        with ranks.together("checking the arguments"):
            pass  # nobody fails: every rank goes on
        for failing in FAILING:
            try:
                with ranks.together("loading the model"):
                    if rank in failing:
                        raise UsageError(f"bad input seen by rank {rank}")
            except RankFailure as failure:
                first = min(failing)
                expected = f"bad input seen by rank {first}"
                assert str(failure) == (expected if first == 0 else f"rank {first}, loading the model: {expected}")
                assert failure.exit_status == 2 and failure.quiet == (rank != 0)
            else:
                raise AssertionError(f"rank {rank} went on although ranks {failing} failed")
    finally:
        dist.destroy_process_group()


def test_a_failure_at_a_meeting_point_ends_every_rank(tmp_path):
    run_ranks(_meeting_worker, (str(tmp_path / "rendezvous"),), 3)


def _torchrun(*args, cwd):
    env = {name: value for name, value in os.environ.items() if name not in TORCHRUN}
    env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "pnp_kernels", *map(str, args)]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


@pytest.mark.slow  # two torchrun launches of two processes each: about 40 s on two CPU cores
def test_torchrun_ulysses_run_equals_one_process(tiny_t2v, tmp_path, capsys):
    iio = pytest.importorskip("imageio.v3")
    alone = tmp_path / "alone" / "v.mp4"
    assert cli.main(["--model", str(tiny_t2v), "--prompt", "a cat", *SMALL, "--out", str(alone)]) == 0
    capsys.readouterr()

    out = tmp_path / "together" / "v.mp4"
    result = _torchrun("--parallel", "ulysses", "--model", tiny_t2v, "--prompt", "a cat", *SMALL, "--out", out,
                       cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [line for line in result.stdout.splitlines() if line.startswith("wrote video")] == [f"wrote video: {out}"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["v.json", "v.mp4"]  # rank 0's files, nothing staged
    record, single = (json.loads(path.with_suffix(".json").read_text()) for path in (out, alone))
    assert record["parallel"] == {"mode": "ulysses", "world_size": 2, "ulysses_degree": 2, "ring_degree": 1,
                                  "timeout_s": 600.0, "models": ["transformer"]}
    assert record["settings"]["attention"] == "native"
    for key in ("nfe", "iterations_per_step", "nfe_per_sample"):
        assert record["refined"][key] == single["refined"][key], key
    # Ulysses attention computes what one process computes, bit for bit: the same latents, the same frames.
    assert np.array_equal(iio.imread(out), iio.imread(alone))

    # A failure found on every rank after the group has started: one line, from rank 0, exit 2.
    result = _torchrun("--parallel", "ulysses", "--model", tiny_t2v, "--prompt", "a cat", *SMALL, "--out", out,
                       cwd=tmp_path)
    assert result.returncode != 0
    assert _errors(result.stderr) == [f"pnp-sample: error: --out: {out}, {out.with_suffix('.json')} already "
                                      "exist(s); pass --overwrite to replace"]


def test_video_and_attention_must_fit_the_ranks(tiny_t2v, tmp_path):
    """Checked on each rank once the group has started (here one rank's view, without a group)."""
    from pnp_kernels.cli.settings import resolve_settings

    args = cli.build_parser().parse_args(["--model", str(tiny_t2v), "--prompt", "a cat", *SMALL,
                                          "--out", str(tmp_path / "v.mp4")])
    settings, _ = resolve_settings(args)  # 2 latent frames of 2x3 tokens: 12 tokens; the tiny model has 2 heads

    def check(mode, ulysses, ring):
        return Ranks(Launch(mode, ulysses, ring, 0, 0, ulysses * ring, 60.0)).check_fits(settings)

    assert check("ulysses", 2, 1).attention == "native"
    with pytest.raises(UsageError, match="12 tokens .* do not split evenly over 5 ranks"):
        check("ring", 1, 5)
    with pytest.raises(UsageError, match="2 attention heads do not split over 4 Ulysses ranks"):
        check("ulysses", 4, 1)
    if not torch.cuda.is_available():  # only "native" attention runs on CPU, and ring attention cannot use it
        with pytest.raises(UsageError, match="ring attention needs one of .* can run on cpu"):
            check("ring", 1, 2)
    with pytest.raises(UsageError, match="--attention xformers cannot run under --parallel"):
        Ranks(Launch("ulysses", 2, 1, 0, 0, 2, 60.0)).check_fits(dataclasses.replace(settings, attention="xformers"))
