"""pnp-sample --demo end to end: the real physics video demo through the command, every file read back."""
import json

import numpy as np
import pytest

from pnp_kernels import cli
from pnp_kernels.config import RefinePlan

physics_demo = pytest.importorskip("pnp_kernels.physics.demo")
iio = pytest.importorskip("imageio.v3")

VIDEOS = ("demo.mp4", "demo_baseline.mp4", "demo_side_by_side.mp4", "demo_uncertainty.mp4")
LABEL_HEIGHT = 16  # pnp_kernels.video.LABEL_HEIGHT


def decode(path):
    return iio.imread(path).astype(np.float32) / 255.0


def test_video_demo_writes_videos_that_decode(tmp_path, capsys):
    from pnp_kernels.physics.data import NUM_FRAMES, SIZE

    out = tmp_path / "demo"
    assert cli.main(["--demo", "--seed", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(VIDEOS + ("demo_uncertainty.png", "demo.json"))
    assert {f"wrote {out / f}" for f in files} <= set(printed.splitlines())
    assert list(tmp_path.iterdir()) == [out]  # no scratch folder left

    record = json.loads((out / "demo.json").read_text())
    euler, paper, selected = record["columns"]
    assert set(euler["metrics_mean"]) == set(selected["metrics_mean"]) == set(paper["metrics_mean"])
    rows, columns = record["grid"]
    upscale, steps = record["upscale"], record["num_steps"]
    plan = RefinePlan.parse(selected["plan"])
    assert euler["calls_per_clip"] == steps + plan.extra_nfe(steps)  # Euler gets column 3's planned calls
    assert steps < selected["calls_per_clip"] <= steps + plan.extra_nfe(steps)
    assert "paper" in printed and "selected" in printed and "--plan" in printed  # the columns explain themselves

    height, width = rows * SIZE * upscale, columns * SIZE * upscale
    videos = {name: decode(out / name) for name in VIDEOS}
    refined, baseline = videos["demo.mp4"], videos["demo_baseline.mp4"]
    assert refined.shape == baseline.shape == (NUM_FRAMES, height, width, 3)
    assert np.abs(refined - baseline).mean() > 1e-3  # same noise, different sampler: different videos
    side = videos["demo_side_by_side.mp4"]
    assert side.shape == (NUM_FRAMES, LABEL_HEIGHT + height, -(-(3 * width + 4) // 16) * 16, 3)
    left, right = side[:, LABEL_HEIGHT:, :width], side[:, LABEL_HEIGHT:, 2 * width + 4 : 3 * width + 4]
    assert np.abs(left - baseline).mean() < 0.5 * np.abs(left - refined).mean()
    assert np.abs(right - refined).mean() < 0.5 * np.abs(right - baseline).mean()
    refined_steps = sum(last - first + 1 for first, last, k in plan.ranges if k > 0)
    assert videos["demo_uncertainty.mp4"].shape == (refined_steps * NUM_FRAMES, LABEL_HEIGHT + height, width, 3)
