#!/usr/bin/env bash
# The GPU run in one command: install what the machine lacks, run the GPU correctness tests, then every
# GPU benchmark, then the summary table; about 10 minutes on one H100/H200 (PNP_SUITE_BUDGET_S).
#
# usage: bench/gpu_suite.sh [--dry-run] [OUTPUT_ROOT]
#   OUTPUT_ROOT: defaults to $OUT when set (the device tool's folder), else bench/results.
#   Writes OUTPUT_ROOT/<UTC date>-<device>/: pnp_update.json, sampler_overhead.json, transformer.json,
#   end_to_end.json (pytest-benchmark files), suite.log (every command's output) and summary.md
#   (the report's tables and each stage's status). At most 8 files, one folder down: fits the device tool.
#   --dry-run: print the plan and every command without running anything (works without a GPU).
#
# Every stage runs under its own time limit (cut to what is left of the budget); pytest is stopped with
# SIGINT, so a stage that runs out of time still saves the results it has. A failing stage does not stop
# the others; the exit status is 1 when any stage failed or ran out of time.
#
# Settings (environment): PNP_SUITE_BUDGET_S (570), PYTHON (python3), PNP_BENCH_E2E_STEPS (20 here; the
# published plan is for 50 steps, which takes about twice the time), and the PNP_BENCH_* settings read by
# the bench files (see bench/harness.py and each file).
set -euo pipefail

dry_run=0
if [[ ${1:-} == --dry-run ]]; then
    dry_run=1
    shift
fi
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
python=${PYTHON:-python3}
budget=${PNP_SUITE_BUDGET_S:-570}
report_reserve=20  # seconds kept for the summary
started=$SECONDS

if ((dry_run)); then
    device="dry-run"
elif ! device=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1) || [[ -z $device ]]; then
    echo "gpu_suite.sh: no NVIDIA GPU found (nvidia-smi); use --dry-run to see the plan" >&2
    exit 2
fi
slug=$(printf '%s' "$device" | tr -cs 'A-Za-z0-9' '-' | sed 's/^-*//; s/-*$//')
run_dir="${1:-${OUT:-bench/results}}/$(date -u +%Y%m%d-%H%M)-$slug"
mkdir -p "$run_dir"
log="$run_dir/suite.log"
statuses=()

say() {
    printf '[%4ds] %s\n' $((SECONDS - started)) "$*" | tee -a "$log"
}

# stage NAME LIMIT_SECONDS COMMAND...: run one stage under its limit and record how it ended.
stage() {
    local name=$1 limit=$2
    shift 2
    local left=$((budget - report_reserve - (SECONDS - started)))
    ((limit > left)) && limit=$left
    if ((limit <= 0)); then
        say "SKIP $name: the ${budget}s budget is spent"
        statuses+=("| $name | not run: budget spent | - |")
        return 0
    fi
    say "RUN  $name (limit ${limit}s): $*"
    if ((dry_run)); then
        statuses+=("| $name | dry run | - |")
        return 0
    fi
    local stage_started=$SECONDS rc=0
    timeout --signal=INT --kill-after=20 "$limit" "$@" >>"$log" 2>&1 || rc=$?
    local took=$((SECONDS - stage_started)) outcome
    case $rc in
        0) outcome="ok" ;;
        5) outcome="ok (nothing to run)" ;;  # pytest: no tests collected/selected
        124 | 137) outcome="stopped at its ${limit}s limit (results so far kept)" ;;
        *) outcome="failed (exit $rc; see suite.log)" ;;
    esac
    say "END  $name: $outcome after ${took}s"
    statuses+=("| $name | $outcome | ${took}s |")
}

# 1. What the machine lacks: carried wheels (bench/fetch_wheels.sh) and this project (with its CUDA
#    extension where setup.py builds one). PYTHONPATH keeps the package importable if the install fails.
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G "bench/wheels/*.whl" >/dev/null; then
    site=/tmp/pnp-bench-site
    stage "install carried wheels" 60 "$python" -m pip install -q --no-index --no-deps --no-compile \
        --no-cache-dir --upgrade --target "$site" bench/wheels/*.whl
    export PYTHONPATH="$site:$PYTHONPATH"
else
    say "no wheels in bench/wheels/ (bench/fetch_wheels.sh fetches diffusers); transformer benches skip without it"
fi
stage "install pnp_kernels" 90 env MAX_JOBS="$(nproc 2>/dev/null || echo 8)" \
    "$python" -m pip install -q --no-index --no-deps --no-build-isolation -e .
stage "environment" 30 "$python" -c 'import json, bench.harness as h; print(json.dumps(h.environment(), indent=1))'

# 2. Correctness on the GPU first: numbers from a wrong kernel are worth nothing.
stage "GPU correctness tests" 90 "$python" -m pytest tests -m gpu -q -p no:cacheprovider -rs

# 3. Benchmarks, one result file each. Order: what the SPEC targets need most comes first.
bench() {
    local name=$1 limit=$2 file=$3
    shift 3
    stage "bench $name" "$limit" "$python" -m pytest "bench/$file" --benchmark-only -q -p no:cacheprovider -rs \
        --benchmark-json="$run_dir/$name.json" "$@"
}
bench pnp_update 150 test_pnp_update.py
bench sampler_overhead 30 test_sampler_overhead.py
bench transformer 120 test_transformer.py
PNP_BENCH_E2E_STEPS=${PNP_BENCH_E2E_STEPS:-20} bench end_to_end 120 test_end_to_end.py

# 4. Summary: the report's tables for this run, and how each stage ended.
summary="$run_dir/summary.md"
if ((dry_run)); then
    say "RUN  summary: $python -m bench.report --results $run_dir --output $summary --no-plots"
else
    "$python" -m bench.report --results "$run_dir" --output "$summary" --no-plots >>"$log" 2>&1 ||
        echo "(the report could not be built from $run_dir: see suite.log)" >"$summary"
fi
{
    echo
    echo "## Suite stages ($device, budget ${budget}s, total $((SECONDS - started))s)"
    echo
    echo "| stage | outcome | time |"
    echo "|---|---|---|"
    printf '%s\n' "${statuses[@]}"
} | tee -a "$summary"
say "results in $run_dir"
for status in "${statuses[@]}"; do
    [[ $status == *"| ok"* || $status == *"dry run"* ]] || exit 1
done
