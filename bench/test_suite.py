"""bench/suite.py: budgets fit the device call, a stage at its limit is stopped with its output kept, the
dry run goes through every stage, and without diffusers nothing fails collection."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench import suite

REPO = Path(__file__).resolve().parent.parent


def test_cuda_toolkit_is_found_through_a_linked_nvcc(tmp_path):
    toolkit, fallback = tmp_path / "cuda-13.0", tmp_path / "cuda"
    (toolkit / "bin").mkdir(parents=True)
    (toolkit / "include").mkdir()
    (toolkit / "bin" / "nvcc").write_text("#!/bin/sh\n")
    (toolkit / "bin" / "nvcc").chmod(0o755)
    links = tmp_path / "local" / "bin"
    links.mkdir(parents=True)
    (links / "nvcc").symlink_to(toolkit / "bin" / "nvcc")
    env = {"PATH": str(links)}
    assert suite.cuda_toolkit_root(env, fallback) is None  # no headers anywhere: nothing to build against
    (toolkit / "include" / "cuda_runtime.h").write_text("")
    assert suite.cuda_toolkit_root(env, fallback) == str(toolkit.resolve())
    # nvcc not on PATH (or a wrapper script whose folder has no headers): the fallback, when it has them
    assert suite.cuda_toolkit_root({"PATH": str(tmp_path / "empty")}, fallback) is None
    (fallback / "include").mkdir(parents=True)
    (fallback / "include" / "cuda_runtime.h").write_text("")
    assert suite.cuda_toolkit_root({"PATH": str(tmp_path / "empty")}, fallback) == str(fallback)


def test_stage_budgets_fit_the_device_call():
    budgets = [stage.budget_s for stage in suite.STAGES]
    assert sum(budgets) + suite.MARGIN_S <= suite.LIMIT_S <= 8 * 60
    assert min(budgets) > suite.GRACE_S  # every stage has time after its own SIGINT grace
    assert len({stage.name for stage in suite.STAGES}) == len(budgets)


def test_a_stage_gets_what_earlier_stages_left_but_never_later_budgets():
    stages = list(suite.STAGES)
    total = suite.LIMIT_S - suite.MARGIN_S
    assert suite.stage_limit(stages, 0, elapsed=0.0) == stages[0].budget_s
    # Every stage before the last finished 30 s early: the last one gets its budget and those 30 s each.
    last = len(stages) - 1
    elapsed = sum(s.budget_s for s in stages[:last]) - 30 * last
    assert suite.stage_limit(stages, last, elapsed) == stages[last].budget_s + 30 * last
    # However late a stage starts, the budgets of the stages after it are kept back.
    assert suite.stage_limit(stages, 2, elapsed=total) == -sum(s.budget_s for s in stages[3:])


def test_a_stage_at_its_limit_is_stopped_and_its_output_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(suite, "GRACE_S", 1)
    log = tmp_path / "suite.log"
    started = time.monotonic()
    code, last = suite._run([sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"],
                            {}, limit=6, log_path=log)
    assert code is None and time.monotonic() - started < 20
    assert last.startswith("KeyboardInterrupt") and "started" in log.read_text()


# Two halves of the suite, run at once (one per core of a 2-core CI machine): every stage in well under a minute.
DRY_RUN_HALVES = ("build,smoke,kernel_tests,gpu_tests,op_bench", "end_to_end,transformer,report")


def test_dry_run_goes_through_every_stage(tmp_path):
    runs = [subprocess.Popen([sys.executable, "-m", "bench.suite", "--dry-run", "--stages", half,
                              "--out", str(tmp_path / str(i))], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for i, half in enumerate(DRY_RUN_HALVES)]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], "\n".join(output[-3000:] for output in outputs)
    run_dirs = [next((tmp_path / str(i)).iterdir()) for i in range(len(runs))]
    summaries = "".join((run_dir / "summary.md").read_text() for run_dir in run_dirs)
    for stage in suite.STAGES:
        assert f"| {stage.name} | {stage.purpose} | {stage.budget_s} s | ok" in summaries
    ops = {json.loads(line)["op"] for run_dir in run_dirs for line in (run_dir / "results.jsonl").read_text().splitlines()}
    assert {"pnp_update", "pnp_update launch", "end_to_end", "guidance_mode", "transformer_forward"} <= ops
    assert "## Targets" in (run_dirs[1] / "report.md").read_text()
    for run_dir in run_dirs:  # what the device tool brings back: a few files, one folder down
        assert {p.name for p in run_dir.iterdir()} <= {"summary.md", "suite.log", "results.jsonl", "environment.json", "report.md"}


def test_without_diffusers_gpu_test_collection_has_no_errors(tmp_path):
    # What a GPU machine without the carried wheel sees: diffusers cannot be imported.
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['diffusers'] = None\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/wan", "tests/cli",
         "bench/test_end_to_end.py", "bench/test_transformer.py", "-m", "gpu"],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}"),
    )
    assert done.returncode in (0, 5), done.stdout[-3000:]  # 5: nothing selected
    assert "error" not in done.stdout.splitlines()[-1]
    assert "needs diffusers" in done.stdout and "the Wan transformer comes from diffusers" in done.stdout

