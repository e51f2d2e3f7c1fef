"""pnp-eval's limits and early refusals: every count a user gives is bounded, a wrong model or backend is
named before anything runs, SIGTERM while the arguments are checked gives the documented status, and
README's example report shows only rows report.md has."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pnp_kernels.eval import cli

README = Path(__file__).resolve().parents[2] / "README.md"


def _one_error(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("pnp-eval: error: ")
    return line


@pytest.mark.parametrize("args, message", [
    (["--seeds", "100000000"], f"--seeds must be <= {cli.MAX_SAMPLES}, got 100000000"),
    (["--seed-list", ",".join(map(str, range(cli.MAX_SAMPLES + 1)))], f"at most {cli.MAX_SAMPLES}"),
    (["--steps", "100000000"], f"--steps must be <= {cli.MAX_STEPS}, got 100000000"),
    (["--backend", "cuda"], "--backend cuda cannot run here"),
])
def test_counts_and_backend_are_refused_before_any_model_call(demo_calls, tmp_path, capsys, args, message):
    if args[0] == "--backend" and torch.cuda.is_available():
        pytest.skip("the demo model runs on the CPU, where the CUDA backend never runs; this tests its refusal")
    assert cli.main(["--model", "demo", "--no-progress", "--out", str(tmp_path / "eval"), *args]) == 2
    assert message in _one_error(capsys)
    assert demo_calls == [] and list(tmp_path.iterdir()) == []


def test_prompts_times_seeds_is_bounded(tiny_t2v, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"prompt {i}\n" for i in range(100)))
    assert cli.main(["--model", str(tiny_t2v), "--prompts", str(prompts), "--seeds", "41",
                     "--out", str(tmp_path / "eval")]) == 2
    assert f"100 prompts x 41 seeds = 4100 samples; at most {cli.MAX_SAMPLES}" in _one_error(capsys)


@pytest.mark.parametrize("kind, problem", [("missing", "no such directory"), ("file", "not a directory")])
def test_a_wrong_model_is_named_before_the_missing_prompt(tmp_path, capsys, kind, problem):
    model = tmp_path / "model"
    if kind == "file":
        model.write_text("")
    assert cli.main(["--model", str(model), "--out", str(tmp_path / "eval")]) == 2
    assert f"--model {model}: {problem}" in _one_error(capsys)


def test_sigterm_while_checking_the_arguments_exits_143(tmp_path):
    code = ("import os, signal, sys\nfrom pnp_kernels.eval import cli\nchecked = cli.prepare\n"
            "def terminated(*args, **kwargs):\n    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    return checked(*args, **kwargs)\n"
            "cli.prepare = terminated\nsys.exit(cli.main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", code, "--model", "demo", "--out", str(tmp_path / "eval")],
                            capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout) == (143, "")
    assert result.stderr.splitlines() == ["pnp-eval: interrupted by SIGTERM; nothing was written"]
    assert not (tmp_path / "eval").exists()


def test_readme_example_report_shows_only_rows_the_report_has(demo_calls, tmp_path, capsys):
    section = README.read_text().split("## Evaluate P&P on your checkpoint")[1].split("\n## ")[0]
    rows = re.findall(r"^\| (\S[^|]*?) \|", section, flags=re.M)
    shown = [row for row in rows if row not in ("metric",) and not row.startswith("---")]
    assert shown, "README's pnp-eval section shows no report table"
    out = tmp_path / "eval"
    assert cli.main(["--model", "demo", "--seeds", "1", "--steps", "4", "--no-progress", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    for row in shown:
        assert f"| {row} |" in report, f"README shows a row {row!r} that report.md does not have"
