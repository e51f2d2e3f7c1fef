"""pnp-sample --demo: which options each demo takes, where it writes, and what a failure leaves behind.
The video demo's own module is replaced by a recorder here; test_cli_demo_video.py runs the real one."""
import errno
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

from pnp_kernels import cli
from pnp_kernels.staging import StagedFiles

FILES = ("demo.mp4", "demo_baseline.mp4", "demo.json")


@pytest.fixture
def video_demo(monkeypatch):
    """A stand-in ``pnp_kernels.physics.demo`` whose run_demo records its arguments and writes FILES."""
    calls = []

    def run_demo(out_dir: Path, *, seed=0, steps=None, plan=None, progress=True):
        calls.append(dict(out_dir=out_dir, seed=seed, steps=steps, plan=plan))
        for name in FILES:
            (out_dir / name).write_text(f"{name} seed {seed}")
        return {"files": list(FILES)}

    module = ModuleType("pnp_kernels.physics.demo")
    module.run_demo = run_demo
    monkeypatch.setitem(sys.modules, "pnp_kernels.physics.demo", module)
    return calls


def _main(argv, capsys):
    status = cli.main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err.strip()


def test_video_demo_is_the_default_and_writes_into_pnp_demo(video_demo, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, out, err = _main(["--demo"], capsys)
    assert status == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pnp-demo"]  # the scratch folder is gone
    assert sorted(p.name for p in (tmp_path / "pnp-demo").iterdir()) == sorted(FILES)
    assert [line for line in out.splitlines() if line.startswith("wrote ")] == [
        f"wrote pnp-demo/{name}" for name in sorted(FILES)]
    (call,) = video_demo
    assert (call["seed"], call["steps"], call["plan"]) == (0, None, None)
    assert call["out_dir"].parent == tmp_path and call["out_dir"].name.startswith(".pnp-demo.")


@pytest.fixture
def toy_demo(monkeypatch):
    """A stand-in ``pnp_kernels.toy.demo`` that writes one picture."""
    def run_demo(out_dir: Path, *, seed=0):
        (out_dir / "pnp_toy_demo.png").write_text(f"toy seed {seed}")
        return f"toy table, seed {seed}", {}

    module = ModuleType("pnp_kernels.toy.demo")
    module.run_demo = run_demo
    monkeypatch.setitem(sys.modules, "pnp_kernels.toy.demo", module)


def test_each_demo_has_its_own_default_folder(video_demo, toy_demo, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # README's order: the video demo, then the toy
    assert _main(["--demo"], capsys)[0] == 0
    status, out, err = _main(["--demo", "toy"], capsys)
    assert status == 0, err
    assert "wrote pnp-demo-toy/pnp_toy_demo.png" in out.splitlines()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pnp-demo", "pnp-demo-toy"]


def test_a_demo_folder_another_run_writes_is_refused(video_demo, tmp_path, capsys):
    out = tmp_path / "d"
    with StagedFiles() as other_run:
        other_run.claim(out)
        status, _, err = _main(["--demo", "--out", str(out)], capsys)
        assert status == 2 and err == (f"pnp-sample: error: --out {out} is being written by another run "
                                       f"(process {os.getpid()}); wait for it to end or choose another output")
        assert video_demo == [] and [p.name for p in tmp_path.iterdir()] == [".d.lock"]
    assert _main(["--demo", "--out", str(out)], capsys)[0] == 0


def test_video_demo_honours_steps_plan_and_seed(video_demo, tmp_path, capsys):
    status, _, err = _main(["--demo", "video", "--steps", "12", "--plan", "f0.1-0.3:2", "--seed", "7",
                            "--out", str(tmp_path / "d")], capsys)
    assert status == 0, err
    assert [(c["seed"], c["steps"], c["plan"]) for c in video_demo] == [(7, 12, "f0.1-0.3:2")]
    assert (tmp_path / "d" / "demo.json").read_text() == "demo.json seed 7"


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["--demo", "--model", "m"], ["--demo video does not use --model", "--steps, --plan, --seed, --out, --overwrite"]),
        (["--demo", "--tau", "0.1", "--baseline"], ["does not use --baseline, --tau"]),
        (["--demo", "toy", "--steps", "4"], ["--demo toy does not use --steps", "it takes --seed, --out"]),
        (["--demo", "toy", "--plan", "1:1"], ["--demo toy does not use --plan"]),
        (["--demo", "--steps", "0"], ["--steps must be >= 1, got 0"]),
        (["--demo", "--steps", "100000000"], ["--steps must be <= 10000, got 100000000"]),
        (["--demo", "--seed", "-1"], ["--seed must be >= 0"]),
        (["--demo", "--plan", "2-x"], ["--plan '2-x': "]),
        (["--demo", "--plan", "5:1", "--steps", "4"], ["--plan '5:1': ", "step 5"]),
        (["--demo", "cinema"], ["--demo", "'cinema'"]),
    ],
)
def test_options_a_demo_does_not_use_are_refused(video_demo, tmp_path, capsys, argv, needles):
    status, _, err = _main([*argv, "--out", str(tmp_path / "d")], capsys)
    assert status == 2 and len(err.splitlines()) == 1 and err.startswith("pnp-sample: error: "), err
    for needle in needles:
        assert needle in err, err
    assert video_demo == [] and list(tmp_path.iterdir()) == []


def test_existing_demo_folder_is_kept_unless_overwrite(video_demo, tmp_path, capsys):
    out = tmp_path / "d"
    out.mkdir()
    (out / "demo.json").write_text("earlier")
    (out / "notes.txt").write_text("mine")
    status, _, err = _main(["--demo", "--out", str(out)], capsys)
    assert status == 2 and "is not empty; pass --overwrite" in err
    assert (out / "demo.json").read_text() == "earlier"
    assert _main(["--demo", "--out", str(out), "--overwrite"], capsys)[0] == 0
    assert (out / "demo.json").read_text() == "demo.json seed 0" and (out / "notes.txt").read_text() == "mine"


def test_demo_out_that_is_a_file(video_demo, tmp_path, capsys):
    (tmp_path / "d").write_text("x")
    status, _, err = _main(["--demo", "--out", str(tmp_path / "d")], capsys)
    assert status == 2 and "with --demo, --out is a folder" in err


def test_demo_on_a_full_disk_leaves_nothing(video_demo, tmp_path, capsys, monkeypatch):
    def no_space(out_dir, **kwargs):
        (out_dir / "demo.mp4").write_bytes(b"half a video")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out_dir / "demo.mp4"))

    monkeypatch.setattr(sys.modules["pnp_kernels.physics.demo"], "run_demo", no_space)
    status, _, err = _main(["--demo", "--out", str(tmp_path / "new" / "d")], capsys)
    assert status == 1
    assert err == (f"pnp-sample: error: --demo video: cannot write its files for --out {tmp_path}/new/d: "
                   "No space left on device; nothing was written")
    assert list(tmp_path.iterdir()) == []


def test_toy_demo_runs_without_weights(tmp_path, capsys):
    status, out, err = _main(["--demo", "toy", "--seed", "3", "--out", str(tmp_path / "toy")], capsys)
    assert status == 0, err
    assert "P&P on a 2-D flow-matching toy" in out and "seed 3" in out
    (png,) = [line.split("wrote ", 1)[1] for line in out.splitlines() if line.startswith("wrote ")]
    assert png == str(tmp_path / "toy" / "pnp_toy_demo.png")
    assert [p.name for p in (tmp_path / "toy").iterdir()] == ["pnp_toy_demo.png"]
    assert [p.name for p in tmp_path.iterdir()] == ["toy"]
