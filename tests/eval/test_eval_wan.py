"""pnp-eval on a tiny Wan checkpoint saved to disk (tests/cli's factory): the whole path through the
loading and generation code pnp-sample runs too, seconds on a CPU."""
import json

import pytest

from pnp_kernels.cli_common import pipeline
from pnp_kernels.eval import cli

SMALL = ["--height", "32", "--width", "48", "--frames", "5", "--steps", "2", "--dtype", "fp32", "--no-progress"]


@pytest.fixture
def loads(monkeypatch):
    """Counts pipeline loads (the load_pipeline pnp-eval and pnp-sample share)."""
    calls = []
    real = pipeline.load_pipeline

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "load_pipeline", counted)
    return calls


@pytest.mark.filterwarnings("ignore:.*torch_dtype.*:FutureWarning")
def test_tiny_checkpoint_end_to_end_and_resume(tiny_t2v, tmp_path, loads, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat runs on the beach\n\na dog\n")
    command = ["--model", str(tiny_t2v), "--prompts", str(prompts), "--seeds", "1", "--plan", "1:1", "--tau", "0",
               *SMALL, "--out", str(tmp_path / "eval")]
    assert cli.main(command) == 0
    assert len(loads) == 1
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["num_samples"] == 2 and report["model"] == "Wan 2.1 text-to-video"
    assert [(s["prompt"], s["seed"]) for s in report["samples"]] == [("a cat runs on the beach", 0), ("a dog", 0)]
    comparison = report["comparisons"]["plan 1:1 tau 0"]
    assert (report["baseline"]["nfe_mean"], comparison["nfe_mean"]) == (2, 3)
    assert comparison["metrics"]["refined_share"]["setting_mean"] == 1.0  # tau 0: nothing is ever certain
    assert comparison["metrics"]["frame_change"]["setting_mean"] > 0.0
    assert "Wan 2.1 text-to-video" in capsys.readouterr().out

    assert cli.main(command) == 0  # everything is done: no model is loaded again
    assert len(loads) == 1


@pytest.mark.parametrize("args, message", [
    (["--prompt", "a cat", "--frames", "6"], "--frames must be 4k + 1 (e.g. 5, 81), got 6"),
    (["--prompt", "a cat", "--plan", "1:2", "--steps", "1"], "refers to step 1 but the run has 1 steps"),
    (["--seeds", "2"], "--prompt or --prompts is required for a Wan checkpoint"),
])
def test_bad_wan_arguments_before_loading(tiny_t2v, tmp_path, loads, capsys, args, message):
    assert cli.main(["--model", str(tiny_t2v), "--out", str(tmp_path / "eval"), *args]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and message in err
    assert loads == [] and list(tmp_path.iterdir()) == []


def test_missing_model_folder(tmp_path, capsys):
    assert cli.main(["--model", str(tmp_path / "nowhere"), "--prompt", "a cat"]) == 2
    assert "no such directory" in capsys.readouterr().err
