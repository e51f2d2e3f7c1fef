"""run_demo(): the six files, all or none, the record, and argument checks."""
import json

import pytest

from pnp_kernels import RefinePlan, video
from pnp_kernels.physics import demo
from pnp_kernels.physics.generate import sigma_grid
from pnp_kernels.physics.seeds import HELD_OUT_START, demo_seeds


@pytest.mark.parametrize("plan", ["1-2:1", "f0.25-0.75:1", "s0.8-0.45:1"])  # steps, fractions, sigmas
def test_demo_writes_every_file_and_returns_the_record(tmp_path, capsys, plan):
    record = demo.run_demo(tmp_path / "out", seed=1, steps=4, plan=plan, progress=False)
    euler, paper, selected = record["columns"]
    assert selected["plan"] == "1-2:1" and euler["plan"] == "none" and paper["plan"] == "1:1"  # published at 4 steps
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(demo.FILES)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging left behind
    assert euler["calls_per_clip"] == selected["calls_per_clip"] == 6 and paper["calls_per_clip"] == 5
    assert record["seeds"] == demo_seeds(8, 8) and min(record["seeds"]) >= HELD_OUT_START
    assert json.loads((tmp_path / "out" / "demo.json").read_text()) == json.loads(json.dumps(record))
    printed = capsys.readouterr().out
    assert "tracked" in printed and "your plan" in printed and "paper" in printed


def test_default_columns_are_the_registered_ones():
    euler, paper, selected = demo.columns(20, None)
    assert str(paper.plan) == "1-2:3,3-5:1" and paper.tau == 0.25
    assert selected.plan == RefinePlan.parse(demo.SELECTED_PLAN).resolve(sigma_grid(20))
    assert euler.num_steps == 20 + selected.plan.extra_nfe(20) and not euler.plan


def test_nothing_is_written_when_a_writer_fails(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(video, "uncertainty_grid", broken)  # the last picture: the others are written
    with pytest.raises(OSError, match="disk full"):
        demo.run_demo(tmp_path / "out", steps=4, plan="1:1", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_existing_folder_keeps_its_other_files(tmp_path, monkeypatch):
    def quick_files(staged, folder, *args):  # the moving is under test here, not the writers
        for name in demo.FILES:
            staged.path_for(folder / name).write_text("new")

    monkeypatch.setattr(demo, "_write_files", quick_files)
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "demo.mp4").write_text("old")
    demo.run_demo(tmp_path, steps=4, plan="2:1", progress=False)
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "demo.mp4").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*demo.FILES, "notes.txt"])


def test_tile_places_clips_in_rows_and_upscales():
    import numpy as np

    clips = np.arange(demo.GRID_ROWS * demo.GRID_COLUMNS * 2 * 3).reshape(-1, 1, 2, 3).astype(float)
    grid = demo.tile(clips, upscale=2)
    assert grid.shape == (1, demo.GRID_ROWS * 4, demo.GRID_COLUMNS * 6)
    # clip 5 sits in row 1, column 1; each pixel becomes a 2x2 block
    np.testing.assert_array_equal(grid[0, 4:8:2, 6:12:2], clips[demo.GRID_COLUMNS + 1, 0])


@pytest.mark.parametrize("kwargs, error, match", [
    ({"seed": -1}, ValueError, "seed"),
    ({"steps": 2}, ValueError, "steps"),
    ({"plan": 5}, TypeError, "plan"),
    ({"plan": "none"}, ValueError, "refines no step"),
    ({"plan": "1-20:1"}, ValueError, "step"),
    ({"progress": "yes"}, TypeError, "progress"),
])
def test_bad_arguments_are_refused(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        demo.run_demo(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_out_dir_must_be_a_path():
    with pytest.raises(TypeError, match="out_dir"):
        demo.run_demo(3)
