"""pnp-eval on the embedded demo model (its generate wrapped to count calls): the report, resuming,
argument errors."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from pnp_kernels import PnPConfig
from pnp_kernels.eval import cli, metrics, runner
from pnp_kernels.staging import StagedFiles
from pnp_kernels.statistics import bootstrap_mean
from pnp_kernels.physics import generate as demo
from pnp_kernels.physics.demo import paper_plan
from pnp_kernels.physics.seeds import eval_seed

FAST = ["--no-progress", "--steps", "6"]


def evaluate(out, *args):
    return cli.main(["--model", "demo", "--out", str(out), *FAST, *args])


def test_report_pairs_every_setting_with_the_baseline_from_the_same_noise(demo_calls, tmp_path, capsys):
    out = tmp_path / "eval"
    assert evaluate(out, "--seed-list", "4,1,9", "--plan", "1-2:2", "--plan", "2-4:1", "--tau", "0") == 0
    assert {p.name for p in out.iterdir()} == {"eval.json", "samples", "report.json", "report.md",
                                              "differences.png", "contact_sheet.png"}
    assert demo_calls == [((eval_seed(seed),), plan) for seed in (4, 1, 9) for plan in (None, "1-2:2", "2-4:1")]

    report = json.loads((out / "report.json").read_text(), parse_constant=pytest.fail)  # strict JSON: no NaN
    labels = ["plan 1-2:2 tau 0", "plan 2-4:1 tau 0"]
    assert list(report["comparisons"]) == labels and report["num_samples"] == 3
    names = [metric["name"] for metric in report["metrics"]]
    assert [s["seed"] for s in report["samples"]] == [4, 1, 9]
    assert {"motion", "warp_error", "flicker", "saturation", "sharpness", "physics_ballistic"} <= set(names)
    for label in labels:
        for name, row in report["comparisons"][label]["metrics"].items():
            pairs = [(s["runs"][label]["metrics"][name], s["runs"]["baseline"]["metrics"][name],
                      s["differences"][label][name]) for s in report["samples"]]
            differences = [np.nan if None in pair[:2] else pair[0] - pair[1] for pair in pairs]
            assert [np.nan if d is None else d for _, _, d in pairs] == pytest.approx(differences, nan_ok=True)
            assert row["difference"] == pytest.approx(bootstrap_mean(differences).to_dict(), nan_ok=True)
        assert report["comparisons"][label]["nfe_mean"] > report["baseline"]["nfe_mean"] == 6
    runs = report["samples"][0]["runs"]
    assert runs["baseline"]["metrics"]["refined_share"] == runs["baseline"]["metrics"]["frame_change"] == 0.0
    assert runs[labels[0]]["metrics"]["refined_share"] == 1.0  # tau 0: nothing is ever certain
    assert runs[labels[0]]["metrics"]["frame_change"] > 0.0

    # The stored baseline frames are the plain run of that seed (the same noise for every setting), and
    # each setting's frame change is measured against them.
    stored = runner.ResultStore(out).thumbnails(runner.Sample("", 4))
    baseline = demo.generate([eval_seed(4)], None, num_steps=6).frames[0]
    assert np.array_equal(stored[0], runner.thumbnails(baseline)) and stored.shape[0] == 3
    refined = demo.generate([eval_seed(4)], PnPConfig(plan="2-4:1", tau=0.0, noise="philox"), num_steps=6).frames[0]
    seed_4 = report["samples"][0]["runs"][labels[1]]["metrics"]
    assert seed_4["frame_change"] == pytest.approx(metrics.frame_change(refined, baseline))
    markdown = (out / "report.md").read_text()
    assert "## plan 1-2:2 tau 0" in markdown and "| warp_error | lower |" in markdown
    assert markdown in capsys.readouterr().out


def test_sigterm_ends_the_run_like_sigint(demo_calls, tmp_path, monkeypatch, capsys):
    out = tmp_path / "eval"
    counted = demo.generate

    def terminated_on_fourth_call(*args, **kwargs):
        if len(demo_calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # as from `kill`; handled in this (the main) thread
        return counted(*args, **kwargs)

    monkeypatch.setattr(demo, "generate", terminated_on_fourth_call)
    assert evaluate(out, "--seeds", "3", "--plan", "1:2") == 143
    assert "1 of 3 samples are saved" in capsys.readouterr().err
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["seed0-da39a3ee5e.json", "seed0-da39a3ee5e.npz"]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is gone after the run


def test_interrupted_run_resumes_without_recomputing_finished_samples(demo_calls, tmp_path, monkeypatch, capsys):
    out = tmp_path / "eval"
    counted = demo.generate

    def interrupted_on_fourth_call(*args, **kwargs):
        if len(demo_calls) == 3:  # sample 0 (2 runs) is done, sample 1 has its baseline
            raise KeyboardInterrupt
        return counted(*args, **kwargs)

    monkeypatch.setattr(demo, "generate", interrupted_on_fourth_call)
    assert evaluate(out, "--seeds", "3", "--plan", "1:2") == 130
    assert "1 of 3 samples are saved" in capsys.readouterr().err
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["seed0-da39a3ee5e.json", "seed0-da39a3ee5e.npz"]

    monkeypatch.setattr(demo, "generate", counted)
    demo_calls.clear()
    assert evaluate(out, "--seeds", "3", "--plan", "1:2") == 0
    assert demo_calls == [((eval_seed(s),), plan) for s in (1, 2) for plan in (None, "1:2")]
    assert "resuming: 1 of 3" in capsys.readouterr().err
    assert json.loads((out / "report.json").read_text())["num_samples"] == 3

    demo_calls.clear()  # more seeds later: only the new ones run
    assert evaluate(out, "--seeds", "4", "--plan", "1:2") == 0
    assert demo_calls == [((eval_seed(3),), None), ((eval_seed(3),), "1:2")]

    assert evaluate(out, "--seeds", "4", "--plan", "1:3") == 2
    assert "holds an evaluation with other settings" in capsys.readouterr().err


def test_an_output_folder_another_evaluation_holds_is_refused(demo_calls, tmp_path, capsys):
    out = tmp_path / "eval"
    with StagedFiles() as other_run:
        other_run.claim(out)
        assert evaluate(out, "--seeds", "1") == 2
        assert capsys.readouterr().err == (f"pnp-eval: error: --out {out} is being written by another run (process "
                                           f"{os.getpid()}); wait for it to end or choose another output\n")
        assert demo_calls == [] and [p.name for p in tmp_path.iterdir()] == [".eval.lock"]
    assert evaluate(out, "--seeds", "1") == 0 and len(demo_calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval"]  # the claim is released with the run


@pytest.mark.parametrize("args, message", [
    (["--seeds", "0"], "--seeds must be >= 1, got 0"),
    (["--seed-list", "1,x"], "--seed-list '1,x': give comma-separated integers"),
    (["--seed-list", "1,1"], "repeats a seed"),
    (["--seed-list", f"0,{2**24}"], f"seed {2**24}: the demo model takes seeds below {2**24}"),
    (["--seeds", "2", "--seed-list", "1"], "not allowed with argument"),
    (["--tau", "-1"], "invalid P&P setting: tau must be >= 0"),
    (["--tau", "nan"], "invalid P&P setting: tau must be finite"),
    (["--plan", "5-9:1"], "refers to step 9 but the run has 6 steps"),
    (["--plan", "1:1", "--plan", "1:1"], "the settings repeat one another"),
    (["--height", "64"], "--height does not apply to --model demo"),
    (["--certain-stop", "0"], "invalid P&P setting: certain_stop must be"),
    (["--extra", "vbench"], "argument --extra: invalid choice"),
])
def test_bad_arguments_give_one_line_and_status_2_before_any_model_runs(demo_calls, tmp_path, capsys, args, message):
    assert evaluate(tmp_path / "eval", *args) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1
    assert captured.err.startswith("pnp-eval: error: ") and message in captured.err
    assert demo_calls == [] and list(tmp_path.iterdir()) == []


def test_bad_prompts_and_output(demo_calls, tmp_path, capsys):
    empty = tmp_path / "prompts.txt"
    empty.write_text("\n  \n")
    (tmp_path / "file").write_text("")
    for args, message in [(["--prompts", str(empty)], "holds no prompt"),
                          (["--prompts", str(tmp_path / "missing.txt")], "cannot read it"),
                          (["--prompt", " "], "--prompt must not be empty"),
                          (["--out", str(tmp_path / "file")], "not a folder")]:
        assert cli.main(["--model", "demo", "--out", str(tmp_path / "eval"), *args]) == 2
        assert message in capsys.readouterr().err
    assert demo_calls == []


def test_demo_ignores_prompts_and_says_so(demo_calls, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a ball\na bouncing ball\n")
    assert evaluate(tmp_path / "eval", "--prompts", str(prompts), "--seeds", "1", "--extra", "clip") == 0
    err = capsys.readouterr().err
    assert "unconditional: the prompts are ignored" in err and "skipping the clip metric" in err
    assert demo_calls == [((eval_seed(0),), None), ((eval_seed(0),), str(paper_plan(6)))]  # one sample per seed; the demo's plan
    assert "prompts are ignored" in (tmp_path / "eval" / "report.md").read_text()


def test_command_line_error_as_a_process(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pnp_kernels.eval", "--model", "demo", "--seeds", "-3"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == ["pnp-eval: error: --seeds must be >= 1, got -3"]


def test_argument_errors_come_before_importing_torch(tmp_path):
    code = ("import sys\nfrom pnp_kernels.eval.cli import main\nstatus = main(sys.argv[1:])\n"
            "print('torch' in sys.modules)\nsys.exit(status)")
    result = subprocess.run([sys.executable, "-c", code, "--model", "demo", "--seed-list", "3,x"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout) == (2, "False\n")
    assert "--seed-list '3,x'" in result.stderr
