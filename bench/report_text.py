"""The fixed parts of docs/PERFORMANCE.md: how the GPU figures are taken, the byte accounting, and the
markdown table every section uses (``bench/report.py`` assembles the document)."""
from __future__ import annotations

from bench.suite import LIMIT_S, MARGIN_S, STAGES
from bench.update_cases import SHAPES
from pnp_kernels.ops.accounting import byte_table

RUN_COMMAND = f"timeout {LIMIT_S} bash bench/gpu_suite.sh --out /tmp/suite"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]



def suite_section() -> list[str]:
    """How the GPU figures are taken: the one device call, its stages and budgets."""
    lines = [
        "## The GPU run", "",
        f"All GPU figures come from one run of the suite of at most {LIMIT_S} s on a machine with a CUDA GPU, from",
        "the repository root:", "",
        "```bash", RUN_COMMAND, "```", "",
        "`bench/wheels/` (git-ignored) holds the diffusers wheel the GPU machine lacks: fill it first with",
        "`bench/fetch_wheels.sh` on a machine with a package index. Without it the run still works: the",
        "GPU tests and benchmarks that need diffusers (the Wan pipelines, the transformer, end to end) skip",
        "with that reason. The run writes `<time>-<device>/` under `--out` (default `bench/results/`): `summary.md`",
        "(stages, how each ended, the tables), `suite.log`, `results.jsonl`, `environment.json` and",
        "`report.md`. Copy that folder into `bench/results/` and run `python -m bench.report`.",
        "`bash bench/gpu_suite.sh --stages end_to_end,transformer` runs only the stages named: in a second",
        "call, made at once while the machine is still warm, they get the time the first call could not give",
        "them. `python -m bench.suite --dry-run` runs every stage on a CPU with tiny shapes (CI does, in",
        "`bench/test_suite.py`).", "",
        "Stages run in this order, each in its own process under a time limit: its budget plus what earlier",
        "stages left unused, never the budgets of later stages. The budgets add to "
        f"{sum(s.budget_s for s in STAGES)} s, {MARGIN_S} s under",
        "the limit. Every finished benchmark case is written to `results.jsonl` at once, and `summary.md`",
        "after every stage, so a stage cut at its limit loses only the case it was in. A case that this",
        "run's own measurements say would outlast its stage (the compiled end-to-end runs, 720p) skips,",
        "saying so. If the smoke stage finds a kernel disagreeing with the reference, the run stops there.", "",
    ]
    lines += table(["stage", "budget", "what"], [[s.name, f"{s.budget_s} s", s.purpose] for s in STAGES]) + [""]
    lines += [
        "Update timing: each provider (eager reference, `torch.compile` of the reference, Triton, CUDA) is",
        "called the same way, `provider(inputs)` on one checked `PnPUpdateInputs` bundle, allocating its",
        "outputs, and timed the same way: one CUDA graph calls it once per input set, cycling through sets",
        "that together hold 4x the L2 cache, and each replay is timed with CUDA events. No host work is in",
        "that figure; the host time of one public `pnp_update` call is a figure of its own. The CUDA",
        "extension is compiled for the device's own architecture only (`TORCH_CUDA_ARCH_LIST` from",
        "`torch.cuda.get_device_capability`), in its own stage, so no tested or timed stage waits for it.", "",
        "End to end: 15 steps (the fewest the published plan fits), unguided, one forward per model call.",
        "With classifier-free guidance a model call costs two forwards, so the sampler's share of a run",
        "is about half of what is measured here: both end-to-end targets are tested where they are hardest to meet.", "",
    ]
    return lines


def accounting_section() -> list[str]:
    """Bytes one update must move per sampler situation, as the op counts them (``pnp_kernels/ops/accounting.py``)."""
    return ["## Byte accounting", "",
            "Bytes one update reads and writes (each latent once: a position's channels stay in registers;",
            "bf16 velocities, guided, philox noise), as the op's accounting counts them, for the Wan shapes the",
            "suite times: as the op moves them (x0 and the certain mask written only where a later iteration reads",
            "them), and with both always written, for what that saves. GB/s figures divide the first by the time.",
            "", byte_table({f"{name} {'x'.join(map(str, shape))}": shape for name, shape in SHAPES["full"].items()}), ""]


def cuda_kernel_section() -> list[str]:
    return ["## The CUDA kernel: registers, spills, occupancy", "",
            "Static figures from `ptxas -v` (no GPU needed) for every instance of the CUDA C++ kernel, beside the",
            "Triton kernel's: [`CUDA_KERNEL.md`](CUDA_KERNEL.md).", ""]


def compile_section() -> list[str]:
    return [
        "## Regional compilation", "",
        "The suite times the transformer with its repeated blocks compiled (diffusers",
        "`compile_repeated_blocks`, what `compile=True` of the Wan pipelines does) and without, per forward",
        "and end to end. No measurement exists yet; once one does, the Wan pipelines' and the command line's",
        "default for compilation will follow it.", "",
    ]
