"""StagedFiles: files renamed into place together or not at all, and outputs one run at a time."""
import errno
import os
import signal
import subprocess
import sys

import pytest

from pnp_kernels import staging
from pnp_kernels.staging import OutputBusy, StagedFiles


def test_staged_files_commit_and_discard(tmp_path):
    staged = StagedFiles()
    first = staged.path_for(tmp_path / "new" / "deeper" / "a.mp4")
    first.write_text("a")
    assert first.suffix == ".mp4" and first.parent == tmp_path / "new" / "deeper"
    staged.discard()
    assert list(tmp_path.iterdir()) == []  # temporary file and the folders made for it are gone
    staged.path_for(tmp_path / "b.json").write_text("b")
    staged.path_for(tmp_path / "c.png").write_text("c")
    staged.commit()
    staged.discard()  # after commit: nothing to undo
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json", "c.png"]
    assert (tmp_path / "b.json").read_text() == "b"
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o666 & ~umask  # not private like a mkstemp file


@pytest.mark.parametrize("failing_rename", [1, 2, 3, 4])
def test_failed_commit_over_existing_files_keeps_the_old_ones(tmp_path, monkeypatch, failing_rename):
    # --overwrite: a.json and b.png exist; c.txt is new. Whichever rename fails, every old file is back
    # with its old content, no new file is in place and nothing staged or moved aside is left.
    for name in ("a.json", "b.png"):
        (tmp_path / name).write_text(f"old {name}")
    staged = StagedFiles()
    for name in ("a.json", "b.png", "c.txt"):
        staged.path_for(tmp_path / name).write_text(f"new {name}")
    renames, real_replace = [], os.replace

    def one_rename_fails(source, target):
        renames.append(target)
        if len(renames) == failing_rename:
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
        real_replace(source, target)

    monkeypatch.setattr(staging.os, "replace", one_rename_fails)
    with pytest.raises(OSError):
        staged.commit()
    staged.discard()
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"a.json": "old a.json", "b.png": "old b.png"}


def test_committed_files_replace_the_old_ones(tmp_path):
    (tmp_path / "a.json").write_text("old")
    staged = StagedFiles()
    staged.path_for(tmp_path / "a.json").write_text("new")
    staged.commit()
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"a.json": "new"}  # nothing left aside


def test_a_claimed_output_is_refused_to_a_second_claim_until_released(tmp_path):
    target = tmp_path / "new" / "out"
    with StagedFiles() as first:
        first.claim(target)
        with pytest.raises(OutputBusy, match=f"{target} is being written by another run \\(process {os.getpid()}\\)"):
            StagedFiles().claim(target)
        with StagedFiles() as other:
            other.claim(tmp_path / "new" / "other")  # another output of the same folder is free
    assert list(tmp_path.iterdir()) == []  # the lock files and the folder made for them are gone
    with StagedFiles() as second:
        second.claim(target)
        second.path_for(target / "a.txt").write_text("a")
        second.commit()
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["out"]


HOLD = "import sys; from pathlib import Path; from pnp_kernels.staging import StagedFiles; " \
       "StagedFiles().claim(Path(sys.argv[1])); print('held', flush=True); sys.stdin.read()"


def test_a_claim_dies_with_its_process(tmp_path):
    target = tmp_path / "out.mp4"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(target)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(OutputBusy, match=f"process {holder.pid}"):
            StagedFiles().claim(target)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with StagedFiles() as staged:  # its lock file is still there, but no longer locked
        staged.claim(target)
    assert list(tmp_path.iterdir()) == []
