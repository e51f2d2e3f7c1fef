#!/usr/bin/env bash
# The GPU run in one device call (docs/PERFORMANCE.md, "The GPU run"): bench/suite.py under the
# machine's python3, from the repository root. Options are the suite's: --dry-run, --stages, --out.
#
#   on a GPU machine: timeout 480 bash bench/gpu_suite.sh --out /tmp/suite
#   on a CPU:         bash bench/gpu_suite.sh --dry-run --out /tmp/suite   (every stage, tiny shapes)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec "${PYTHON:-python3}" -m bench.suite "$@"
