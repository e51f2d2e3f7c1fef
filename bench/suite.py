"""The GPU run in one device call of at most LIMIT_S seconds: build, smoke check, GPU tests, benchmarks.

    python -m bench.suite [--dry-run] [--stages NAME,...] [--out DIR]      (bench/gpu_suite.sh runs this)

Stages run in order, each in its own process under a time limit: its budget plus whatever earlier
stages left unused, never the budgets of the stages after it (the last benchmark stage, the
transformer, gets every second left: 720p runs only then). A stage that reaches its limit gets SIGINT
(pytest then saves what it has) and SIGKILL GRACE_S later. Benchmarks append every finished case to
results.jsonl at once, and summary.md is rewritten after every stage, so nothing is lost when a later
stage, or the whole call, is cut. When the smoke stage finds a kernel disagreeing with the reference,
the run stops: timings of a wrong kernel mean nothing.

Writes OUT/<UTC time>-<device>/ (OUT: --out, else $OUT, else bench/results): summary.md (stages, how
each ended, the result tables), suite.log (every command and its output), results.jsonl,
environment.json, report.md. Four or five files one folder down: what the device tool brings back.

--dry-run runs every stage's code on this machine with tiny shapes and one round (about a minute of
one CPU core; bench/test_suite.py runs it as two halves at once): it keeps the suite from rotting
where no GPU is at hand.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LIMIT_S = 480  # the device call's timeout_s (docs/PERFORMANCE.md): 8 of the task's 15 device minutes
MARGIN_S = 30  # inside the limit, for the suite's own start, the stage switches and writing the summary
GRACE_S = 5  # between SIGINT and SIGKILL at a stage's limit (results are saved per case already)
WHEELS = REPO / "bench" / "wheels"
WHEEL_SITE = Path("/tmp/pnp-suite/site")
EXTENSIONS_DIR = "/tmp/pnp-suite/extensions"  # one JIT cache for every stage: built once, loaded after


@dataclass(frozen=True)
class Stage:
    name: str
    budget_s: int
    purpose: str
    command: tuple[str, ...]  # "{python}" stands for the interpreter
    env: dict = field(default_factory=dict)
    stops_run_on_exit: int | None = None  # this exit status stops the run (not a crash, not the time limit)
    dry_run_command: tuple[str, ...] | None = None  # instead of ``command`` in a dry run


def _pytest(*args: str) -> tuple[str, ...]:
    return ("{python}", "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *args)


STAGES = (
    Stage("prepare", 20, "device and versions recorded (environment.json)",
          ("{python}", "-c", "import json, sys, bench.harness as h; "
           "open(sys.argv[1], 'w').write(json.dumps(h.environment(), indent=1))", "{run_dir}/environment.json")),
    Stage("build", 75, "CUDA extension compiled for this GPU's architecture only",
          ("{python}", "-m", "bench.build_cuda")),
    Stage("smoke", 30, "Triton and CUDA update against the reference (stops the run if one disagrees)",
          ("{python}", "-m", "bench.smoke"), stops_run_on_exit=3),  # bench.smoke.DISAGREES_EXIT
    # On CPU every gpu test skips and CI collects all of tests/ anyway: a dry run checks the command lines.
    Stage("kernel_tests", 25, "the op's correctness tests marked gpu (Triton, CUDA, philox, compile)",
          _pytest("tests/ops", "-m", "gpu"), dry_run_command=_pytest("tests/ops", "-m", "gpu", "--collect-only")),
    Stage("gpu_tests", 20, "the other tests marked gpu (pipelines, attention, command line)",
          _pytest("tests", "--ignore=tests/ops", "-m", "gpu"),
          dry_run_command=_pytest("tests/wan", "-m", "gpu", "--collect-only")),
    Stage("op_bench", 70, "pnp_update device time per provider (graph replay), 4 Wan shapes; host time per update",
          _pytest("bench/test_pnp_update.py", "bench/test_op_host_time.py", "--benchmark-only")),
    Stage("end_to_end", 150, "baseline vs published plan, 480p/81 frames, 15 steps, 3 rounds, compile off then on",
          _pytest("bench/test_end_to_end.py", "--benchmark-only"),
          env={"PNP_BENCH_E2E_STEPS": "15", "PNP_BENCH_E2E_ROUNDS": "3"}),
    Stage("transformer", 40, "forward per attention backend at 480p, regional compile off/on; 720p if time remains",
          _pytest("bench/test_transformer.py", "--benchmark-only")),
    Stage("report", 20, "result tables (report.md, appended to summary.md)",
          ("{python}", "-m", "bench.report", "--results", "{run_dir}", "--output", "{run_dir}/report.md", "--no-plots")),
)
# Tiny tensors: more than one thread per process only adds overhead.
DRY_RUN_ENV = {"PNP_BENCH_SIZE": "tiny", "PNP_BENCH_E2E_ROUNDS": "1", "OMP_NUM_THREADS": "1"}


@dataclass
class Outcome:
    stage: Stage
    status: str
    seconds: float
    last_line: str = ""


def _device_name(dry_run: bool) -> str | None:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30, check=True)
        return done.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "cpu" if dry_run else None


def _command(stage: Stage, python: str, run_dir: Path, dry_run: bool) -> list[str]:
    command = stage.dry_run_command if dry_run and stage.dry_run_command else stage.command
    argv = [part.format(python=python, run_dir=run_dir) for part in command]
    argv = [a for a in argv if not a.endswith(".py") or (REPO / a).exists()]  # a bench file not written yet
    if dry_run and "--benchmark-only" in argv:
        argv[argv.index("--benchmark-only")] = "--benchmark-disable"  # each case once: the code path, not a timing
    return argv


def _run(argv: list[str], env: dict, limit: float, log_path: Path) -> tuple[int | None, str]:
    """Run one stage command, its output appended to the log; returns (exit status, or None when it was
    stopped at its limit, and its last output line)."""
    with log_path.open("ab") as log:
        start = log.tell()
        process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # its own process group: stopped as a whole
        try:
            code = process.wait(timeout=limit - GRACE_S)
        except subprocess.TimeoutExpired:
            code = None
            _signal_group(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=GRACE_S)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()
        _signal_group(process.pid, signal.SIGKILL)  # workers it left behind (compile pools) go with it
    with log_path.open("rb") as log:
        log.seek(start)
        lines = [line for line in log.read().decode(errors="replace").splitlines() if line.strip()]
    return code, lines[-1].strip() if lines else ""


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:  # the whole group has already exited
        pass


def stage_limit(planned: list[Stage], index: int, elapsed: float) -> float:
    """Seconds stage ``index`` may run: what is left of the limit once the later stages' budgets are kept back."""
    return LIMIT_S - MARGIN_S - elapsed - sum(s.budget_s for s in planned[index + 1:])


def _status(code: int | None, limit: float) -> str:
    if code is None:
        return f"stopped at its {limit:.0f} s limit (finished cases kept)"
    return {0: "ok", 5: "ok (nothing ran; suite.log says why)"}.get(code, f"failed (exit {code}; see suite.log)")


def write_summary(run_dir: Path, device: str, outcomes: list[Outcome], planned: list[Stage], started: float,
                  dry_run: bool, note: str = "") -> str:
    """Write summary.md (the stages, then report.md's tables when they exist); returns the stages part."""
    done = {o.stage.name for o in outcomes}
    lines = [f"# GPU suite: {device}{' (dry run, tiny shapes)' if dry_run else ''}", "",
             f"Limit {LIMIT_S} s (stage budgets add to {sum(s.budget_s for s in STAGES)} s, margin {MARGIN_S} s); "
             f"{time.monotonic() - started:.0f} s so far.", ""]
    if note:
        lines += [f"**{note}**", ""]
    lines += ["| stage | what | budget | outcome | time | last line |", "|---|---|---|---|---|---|"]
    lines += [f"| {o.stage.name} | {o.stage.purpose} | {o.stage.budget_s} s | {o.status} | {o.seconds:.0f} s | "
              f"{o.last_line.replace('|', '/')[:160]} |" for o in outcomes]
    lines += [f"| {s.name} | {s.purpose} | {s.budget_s} s | not run | - | |" for s in planned if s.name not in done]
    stages = "\n".join(lines) + "\n"
    report = run_dir / "report.md"
    (run_dir / "summary.md").write_text(stages + ("\n" + report.read_text() if report.exists() else ""))
    return stages


def _install_wheels(env: dict, log_path: Path) -> list[str]:
    """pip-install the carried wheels (bench/fetch_wheels.sh) into a folder put first on PYTHONPATH."""
    wheels = sorted(WHEELS.glob("*.whl"))
    if wheels:
        with log_path.open("a") as log:
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                            "--no-cache-dir", "--upgrade", "--target", str(WHEEL_SITE), *map(str, wheels)],
                           stdout=log, stderr=subprocess.STDOUT, check=False, timeout=60)
        env["PYTHONPATH"] = os.pathsep.join([str(WHEEL_SITE), env["PYTHONPATH"]])
    return [w.name for w in wheels]


def cuda_toolkit_root(env: dict, fallback: Path = Path("/usr/local/cuda")) -> str | None:
    """The CUDA toolkit to build against: that of the ``nvcc`` on PATH (through symlinks), else ``fallback``;
    None when neither has the CUDA headers.

    torch's extension builder, given no CUDA_HOME, takes the folder above the folder of nvcc as found,
    which has no CUDA headers when nvcc is a link or a wrapper script (/usr/local/bin/nvcc calling
    /usr/local/cuda-13.0/bin/nvcc).
    """
    nvcc = shutil.which("nvcc", path=env.get("PATH"))
    candidates = ([Path(nvcc).resolve().parent.parent] if nvcc else []) + [fallback]
    return next((str(root) for root in candidates if (root / "include" / "cuda_runtime.h").is_file()), None)


def _base_env(run_dir: Path, dry_run: bool, on_cpu: bool) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", TORCH_EXTENSIONS_DIR=EXTENSIONS_DIR,
               PNP_BENCH_RESULTS=str(run_dir / "results.jsonl"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if not (env.get("CUDA_HOME") or env.get("CUDA_PATH")) and (root := cuda_toolkit_root(env)):
        env["CUDA_HOME"] = root  # the same for the build and every later load of the cached build
    if dry_run and on_cpu:
        env["TRITON_INTERPRET"] = "1"  # Triton kernels run in its interpreter
    return env


def _arguments(argv: list[str] | None) -> tuple[argparse.Namespace, set[str]]:
    """The command line, and the names of the stages to run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="every stage with tiny shapes and one round")
    parser.add_argument("--stages", default=",".join(s.name for s in STAGES),
                        help="comma list of stages to run, in the suite's order (prepare always runs)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or REPO / "bench" / "results"))
    args = parser.parse_args(argv)
    wanted = {"prepare", *args.stages.split(",")}
    unknown = wanted - {s.name for s in STAGES}
    if unknown:
        parser.error(f"--stages: unknown {sorted(unknown)}; stages are {[s.name for s in STAGES]}")
    return args, wanted


def main(argv: list[str] | None = None) -> int:
    args, wanted = _arguments(argv)
    device = _device_name(args.dry_run)
    if device is None:
        print("suite: no NVIDIA GPU found (nvidia-smi); --dry-run runs every stage on this machine", file=sys.stderr)
        return 2
    started = time.monotonic()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    run_dir = args.out / f"{stamp}-{re.sub('[^A-Za-z0-9]+', '-', device).strip('-')}"
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "suite.log"
    planned = [s for s in STAGES if s.name in wanted]
    env = _base_env(run_dir, args.dry_run, device == "cpu")

    def say(text: str) -> None:
        line = f"[{time.monotonic() - started:4.0f} s] {text}"
        print(line, flush=True)
        with log_path.open("a") as log:
            log.write(line + "\n")

    wheels = _install_wheels(env, log_path)
    say(f"carried wheels: {', '.join(wheels)}" if wheels else
        "no carried wheels in bench/wheels (bench/fetch_wheels.sh): what needs diffusers skips, saying so")
    outcomes: list[Outcome] = []
    note = ""
    for index, stage in enumerate(planned):
        limit = stage_limit(planned, index, time.monotonic() - started)
        if limit <= GRACE_S:
            outcomes.append(Outcome(stage, "not run: no time left", 0.0))
            continue
        argv = _command(stage, sys.executable, run_dir, args.dry_run)
        say(f"RUN {stage.name} (limit {limit:.0f} s): {' '.join(argv)}")
        stage_started = time.monotonic()
        stage_env = dict(env, **stage.env, PNP_SUITE_DEADLINE=str(time.time() + limit - GRACE_S))
        code, last = _run(argv, stage_env | (DRY_RUN_ENV if args.dry_run else {}), limit, log_path)
        outcomes.append(Outcome(stage, _status(code, limit), time.monotonic() - stage_started, last))
        say(f"END {stage.name}: {outcomes[-1].status} after {outcomes[-1].seconds:.0f} s")
        if stage.name == "prepare" and code == 0:
            capability = json.loads((run_dir / "environment.json").read_text()).get("capability")
            if capability:  # one architecture for the build and every later load of the cached build
                env.setdefault("TORCH_CUDA_ARCH_LIST", capability)
        if stage.name == "build" and code != 0:
            env["PNP_KERNELS_NO_JIT"] = "1"  # no later stage may start the compile again
        if stage.stops_run_on_exit is not None and code == stage.stops_run_on_exit:
            note = f"Run stopped: the {stage.name} stage exited {code} ({stage.purpose}); its output is in suite.log."
        write_summary(run_dir, device, outcomes, planned, started, args.dry_run, note)  # nothing lost if cut later
        if note:
            break
    stages = write_summary(run_dir, device, outcomes, planned, started, args.dry_run, note)
    say(f"results in {run_dir}")
    report = run_dir / "report.md"
    # The stages last: the end of the output is what a cut-off log still shows.
    print((report.read_text() if report.exists() else "") + "\n" + stages)
    return 0 if all(o.status.startswith("ok") for o in outcomes) and not note else 1


if __name__ == "__main__":
    sys.exit(main())
