"""pnp-eval under torchrun (docs/EVAL.md): ranks spawned with torchrun's environment (gloo, CPU) on the
demo model, whose generate each rank wraps to log its calls. The merged report equals one process's, every
sample is computed once even across a killed rank and a rerun with another world size, and ranks given
different arguments are refused before any work. run_ranks fails a test whose ranks do not finish in time."""
import contextlib
import io
import json
import os
import re
import signal
import socket
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from pnp_kernels.eval import cli
from pnp_kernels.physics.seeds import eval_seed
from pnp_kernels.threads import single_thread
from tests.distributed.ranks import run_ranks

FAST = ["--no-progress", "--steps", "4", "--plan", "1-2:2"]
KEY = "seed{}-da39a3ee5e"  # the demo's samples: no prompt


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rank(rank: int, world: int, port: int, logs: str, argvs: list, kill: tuple[int, int] | None) -> None:
    """One process of a torchrun launch: pnp-eval with ``argvs[rank]``, every demo model call appended to
    ``logs/rank{rank}.calls`` as it starts; with ``kill = (r, n)`` rank r kills itself (SIGKILL) at its call n."""
    import torch

    from pnp_kernels.physics import generate as module

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    real, log = module.generate, Path(logs) / f"rank{rank}.calls"
    made = []

    def logged(seeds, config, **kwargs):
        if kill == (rank, len(made)):
            os.kill(os.getpid(), signal.SIGKILL)
        made.append(seeds)
        with log.open("a") as file:
            file.write(json.dumps([list(seeds), None if config is None else str(config.plan)]) + "\n")
        return real(seeds, config, **kwargs)

    module.generate = logged
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = cli.main(argvs[rank])
    (Path(logs) / f"rank{rank}.json").write_text(json.dumps({"status": status, "stderr": err.getvalue()}))


def _launch(tmp_path, name: str, argvs: list, kill: tuple[int, int] | None = None) -> Path:
    logs = tmp_path / name
    logs.mkdir()
    run_ranks(_rank, (len(argvs), _free_port(), str(logs), argvs, kill), len(argvs))
    return logs


def _calls(logs: Path) -> list[tuple]:
    """Every rank's model calls as (seeds, plan or None), as the demo_calls fixture lists them."""
    calls = [json.loads(line) for path in sorted(logs.glob("*.calls")) for line in path.read_text().splitlines()]
    return [(tuple(seeds), plan) for seeds, plan in calls]


def _results(logs: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(logs.glob("rank*.json"))]


def _without_timings(report: dict) -> dict:
    """The report without what the clock decides (wall times, samples/s, the run's own record)."""
    if isinstance(report, dict):
        return {key: _without_timings(value) for key, value in report.items()
                if key not in ("run", "time_s", "time_s_mean")}
    if isinstance(report, list):
        return [_without_timings(item) for item in report]
    return report


def _markdown_without_timings(text: str) -> str:
    text = re.sub(r"[\d.]+ s per sample", "T s per sample", text)
    return "\n".join(line for line in text.splitlines() if not line.startswith("Wall time"))


@pytest.mark.slow  # three launches of 2 and 3 processes: about a minute on two CPU cores
def test_merged_report_equals_one_process_and_each_sample_runs_once(demo_calls, tmp_path, capsys):
    seeds = ["--seed-list", "3,0,8,5,1"]
    alone = tmp_path / "alone"
    assert cli.main(["--model", "demo", "--out", str(alone), *FAST, *seeds]) == 0
    capsys.readouterr()
    expected = sorted(demo_calls, key=str)
    report = json.loads((alone / "report.json").read_text())
    assert report["run"]["processes"] == 1 and report["run"]["computed"] == 5
    for world in (2, 3):
        out = tmp_path / f"world{world}"
        logs = _launch(tmp_path, f"logs{world}", [["--model", "demo", "--out", str(out), *FAST, *seeds]] * world)
        assert [result["status"] for result in _results(logs)] == [0] * world
        assert sorted(_calls(logs), key=str) == expected  # each sample computed once, by one of the ranks
        merged = json.loads((out / "report.json").read_text())
        assert _without_timings(merged) == _without_timings(report)
        assert merged["run"] == {**merged["run"], "processes": world, "computed": 5}
        assert (_markdown_without_timings((out / "report.md").read_text())
                == _markdown_without_timings((alone / "report.md").read_text()))
        for picture in ("differences.png", "contact_sheet.png"):
            assert (out / picture).read_bytes() == (alone / picture).read_bytes(), picture
        names = [sorted(p.name for p in (folder / "samples").iterdir()) for folder in (out, alone)]
        assert names[0] == names[1]


@pytest.mark.slow  # two launches of 2 and 3 processes: about 40 s on two CPU cores
def test_a_killed_rank_loses_only_its_unfinished_samples_and_a_rerun_on_3_ranks_finishes(tmp_path):
    out = tmp_path / "eval"
    argv = ["--model", "demo", "--out", str(out), *FAST, "--seeds", "7"]
    # Rank 1 (seeds 1, 3, 5 of the round-robin share) dies at its third model call: one sample saved,
    # the second cut short. torchrun (here run_ranks) then stops the other rank, wherever it is.
    with pytest.raises(mp.ProcessExitedException):
        _launch(tmp_path, "killed", [argv, argv], kill=(1, 2))
    saved = {path.name: path.stat().st_mtime_ns for path in (out / "samples").glob("*.json")}
    assert KEY.format(1) + ".json" in saved and KEY.format(3) + ".json" not in saved
    assert not list((out / "samples").glob(".*.partial"))

    logs = _launch(tmp_path, "rerun", [argv] * 3)
    assert [result["status"] for result in _results(logs)] == [0, 0, 0]
    missing = [seed for seed in range(7) if KEY.format(seed) + ".json" not in saved]
    expected = [((eval_seed(seed),), plan) for seed in missing for plan in (None, "1-2:2")]
    assert sorted(_calls(logs), key=str) == sorted(expected, key=str)
    assert "resuming: " in _results(logs)[0]["stderr"]
    for name, written in saved.items():  # the finished samples were read back, not computed again
        assert (out / "samples" / name).stat().st_mtime_ns == written
    report = json.loads((out / "report.json").read_text())
    assert [s["seed"] for s in report["samples"]] == list(range(7))
    assert report["run"]["computed"] == len(missing) and report["run"]["processes"] == 3


@pytest.mark.slow  # one launch of 2 processes: about 15 s on two CPU cores
def test_ranks_given_different_arguments_are_refused_before_any_work(tmp_path):
    out = tmp_path / "eval"
    argv = ["--model", "demo", "--out", str(out), *FAST]
    logs = _launch(tmp_path, "logs", [argv + ["--seeds", "3"], argv + ["--seeds", "4"]])
    results = _results(logs)
    assert [result["status"] for result in results] == [2, 2]
    assert results[0]["stderr"].splitlines() == [
        "pnp-eval: error: rank 1 was given other seeds than rank 0: every process of a torchrun launch must run the "
        "same command"]
    assert results[1]["stderr"] == ""  # rank 0 speaks for every rank
    assert _calls(logs) == [] and not out.exists()


@pytest.mark.slow  # four processes loading a tiny Wan checkpoint: a few minutes on two CPU cores
@pytest.mark.filterwarnings("ignore:.*torch_dtype.*:FutureWarning")
def test_context_parallel_groups_share_out_a_wan_evaluation(tiny_t2v, tmp_path, capsys):
    pytest.importorskip("diffusers", reason="context parallelism is diffusers'")
    small = ["--height", "32", "--width", "48", "--frames", "5", "--steps", "2", "--dtype", "fp32", "--no-progress",
             "--prompt", "a cat", "--seeds", "3", "--plan", "0-1:1", "--tau", "0"]
    alone = tmp_path / "alone"
    with single_thread():  # as the ranks run: with two threads CPU BLAS may round the last bits otherwise
        assert cli.main(["--model", str(tiny_t2v), *small, "--out", str(alone)]) == 0
    capsys.readouterr()
    out = tmp_path / "together"
    argv = ["--model", str(tiny_t2v), *small, "--out", str(out), "--parallel", "ulysses", "--parallel-degree", "2"]
    logs = _launch(tmp_path, "logs", [argv] * 4)  # 2 groups of 2 Ulysses ranks
    assert [result["status"] for result in _results(logs)] == [0] * 4
    merged = json.loads((out / "report.json").read_text())
    # Ulysses attention computes what one process computes: the same samples, bit for bit on the CPU.
    assert _without_timings(merged) == _without_timings(json.loads((alone / "report.json").read_text()))
    assert merged["run"]["processes"] == 4
