"""pnp-sample after the checks: failures while sampling or writing, SIGINT / SIGTERM, and half-done commits.
Each ends in one line and an exit status, with nothing left behind. The pipeline is a fast stand-in
(fake_pipeline.py) so that only the command's own handling runs."""
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pnp_kernels import cli, staging, video
from pnp_kernels.cli import run, settings
from pnp_kernels.staging import StagedFiles

from tests.cli.fake_pipeline import fake_generate, fake_load_pipeline, nan_load_pipeline

HERE = Path(__file__).parent
SMALL = ["--height", "32", "--width", "48", "--frames", "5", "--steps", "4", "--plan", "1-2:2", "--dtype", "fp32"]
ALL_FILES = ["--baseline", "--save-uncertainty"]


@pytest.fixture
def fake_pipeline(monkeypatch):
    monkeypatch.setattr(run, "load_pipeline", fake_load_pipeline)
    monkeypatch.setattr(run, "generate", fake_generate)


def _main(tiny_t2v, out, capsys, *extra):
    status = cli.main(["--model", str(tiny_t2v), "--prompt", "a cat", *SMALL, *extra, "--out", str(out)])
    return status, capsys.readouterr()


def _error_line(err: str) -> str:
    (line,) = [line for line in err.splitlines() if line.startswith("pnp-sample:")]
    return line


def test_fake_pipeline_run_writes_every_file(tiny_t2v, tmp_path, capsys, fake_pipeline):
    out = tmp_path / "new" / "cat.mp4"
    status, printed = _main(tiny_t2v, out, capsys, *ALL_FILES, "--tau", "0")  # tau 0: no early exit
    assert status == 0, printed.err
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        ["cat.mp4", "cat.json", "cat_baseline.mp4", "cat_side_by_side.mp4", "cat_uncertainty.mp4", "cat_uncertainty.png"])
    record = json.loads((out.parent / "cat.json").read_text())
    assert record["refined"]["nfe"] == 4 + 2 * 2 and record["baseline"]["nfe"] == 4


@pytest.mark.parametrize("broken", ["export_video", "stream_video", "uncertainty_grid"])
def test_full_disk_while_writing(tiny_t2v, tmp_path, capsys, monkeypatch, fake_pipeline, broken):
    real = getattr(video, broken)

    def no_space(*args):
        real(*args)  # a partial file exists when the disk fills up
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(video, broken, no_space)
    status, printed = _main(tiny_t2v, tmp_path / "new" / "cat.mp4", capsys, *ALL_FILES)
    assert status == 1 and printed.out == ""
    assert _error_line(printed.err) == (f"pnp-sample: error: cannot write the outputs for --out {tmp_path}/new/cat.mp4: "
                                        "No space left on device; nothing was written")
    assert list(tmp_path.iterdir()) == []  # the staged files and the folder made for them are gone


def test_out_another_run_writes_is_refused_before_the_model_loads(tiny_t2v, tmp_path, capsys, monkeypatch):
    loads = []
    monkeypatch.setattr(run, "load_pipeline", lambda *args: loads.append(args))
    out = tmp_path / "cat.mp4"
    with StagedFiles() as other_run:
        other_run.claim(out)
        status, printed = _main(tiny_t2v, out, capsys, "--overwrite")
    assert status == 2 and loads == []
    assert _error_line(printed.err) == (f"pnp-sample: error: --out {out} is being written by another run "
                                        f"(process {os.getpid()}); wait for it to end or choose another output")
    assert list(tmp_path.iterdir()) == []


def test_files_a_run_committed_after_the_checks_are_not_replaced(tiny_t2v, tmp_path, capsys, monkeypatch, fake_pipeline):
    out = tmp_path / "cat.mp4"
    checked = settings.resolve_settings

    def another_run_commits_meanwhile(args):
        resolved = checked(args)  # out does not exist yet: the checks pass
        out.write_text("the other run's video")
        return resolved

    monkeypatch.setattr(settings, "resolve_settings", another_run_commits_meanwhile)
    status, printed = _main(tiny_t2v, out, capsys)
    assert status == 2 and "already exist(s); pass --overwrite to replace" in _error_line(printed.err)
    assert [p.name for p in tmp_path.iterdir()] == ["cat.mp4"] and out.read_text() == "the other run's video"


def test_model_returning_nan(tiny_t2v, tmp_path, capsys, monkeypatch, fake_pipeline):
    monkeypatch.setattr(run, "load_pipeline", nan_load_pipeline)
    status, printed = _main(tiny_t2v, tmp_path / "cat.mp4", capsys)
    assert status == 1
    line = _error_line(printed.err)
    assert line.startswith("pnp-sample: error: the model returned NaN/Inf at step 0, iteration 0"), line
    assert list(tmp_path.iterdir()) == []


def test_interrupted_commit_puts_all_files_in_place(tiny_t2v, tmp_path, capsys, monkeypatch, fake_pipeline):
    renames, real_replace = [], os.replace

    def replace_then_signal(source, target):
        real_replace(source, target)
        renames.append(target)
        if len(renames) == 1:  # SIGINT arrives after the first of six renames
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(staging.os, "replace", replace_then_signal)
    out = tmp_path / "cat.mp4"
    status, printed = _main(tiny_t2v, out, capsys, *ALL_FILES)
    assert status == 130 and len(renames) == 6
    assert _error_line(printed.err) == "pnp-sample: SIGINT arrived after the outputs were complete; all 6 files are in place"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in renames)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored after main


def test_failed_rename_takes_back_the_files_already_in_place(tiny_t2v, tmp_path, capsys, monkeypatch, fake_pipeline):
    renames, real_replace = [], os.replace

    def third_rename_fails(source, target):
        renames.append(target)
        if len(renames) == 3:
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
        real_replace(source, target)

    monkeypatch.setattr(staging.os, "replace", third_rename_fails)
    status, printed = _main(tiny_t2v, tmp_path / "new" / "cat.mp4", capsys, *ALL_FILES)
    assert status == 1 and "nothing was written" in _error_line(printed.err)
    assert list(tmp_path.iterdir()) == []


def test_interrupt_while_sampling_writes_nothing(tiny_t2v, tmp_path, capsys, monkeypatch, fake_pipeline):
    # In-process tests send SIGINT only: a SIGTERM that the command failed to handle would end pytest.
    def interrupted(*args):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler raises long before

    monkeypatch.setattr(run, "generate", interrupted)
    status, printed = _main(tiny_t2v, tmp_path / "cat.mp4", capsys)
    assert status == 130
    assert _error_line(printed.err) == "pnp-sample: interrupted by SIGINT; nothing was written"
    assert list(tmp_path.iterdir()) == []


SLOW_WRITER = textwrap.dedent("""
    import sys, time
    from pnp_kernels import cli, video
    from pnp_kernels.cli import run
    from tests.cli.fake_pipeline import fake_generate, fake_load_pipeline

    real_export = video.export_video

    def slow_export(frames, path, fps):
        real_export(frames, path, fps)
        print("writing", flush=True)
        time.sleep(60)

    video.export_video, run.load_pipeline, run.generate = slow_export, fake_load_pipeline, fake_generate
    sys.exit(cli.main(sys.argv[1:]))
""")


def test_sigterm_while_writing_leaves_nothing(tiny_t2v, tmp_path):
    out = tmp_path / "new" / "cat.mp4"
    repository = HERE.parents[1]  # the writer imports the test helpers as the package ``tests``
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repository), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, "--model", str(tiny_t2v), "--prompt", "a cat", *SMALL, *ALL_FILES,
         "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        assert process.stdout.readline() == "writing\n"  # the first video is staged; the run sleeps
        assert any(p.name.endswith(".partial.mp4") for p in out.parent.iterdir())
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 143, err
    assert err.strip().splitlines()[-1] == "pnp-sample: interrupted by SIGTERM; nothing was written"
    assert list(tmp_path.iterdir()) == []
