"""pnp_kernels.video: mp4 export, side-by-side composition, heat-map overlays and the PNG grid."""
import numpy as np
import pytest
import torch

from pnp_kernels import video

iio = pytest.importorskip("imageio.v3")


def _frames(num_frames, height, width, seed):
    return np.random.default_rng(seed).random((num_frames, height, width, 3), dtype=np.float32)


def _maps(steps, iterations, shape, seed):
    g = torch.Generator().manual_seed(seed)
    return [
        {"step": s, "iteration": i, "sigma": 1.0 - 0.1 * s,
         "uncertainty": torch.rand(shape, generator=g), "certain": torch.rand(shape, generator=g) > 0.5}
        for s in steps for i in range(1, iterations + 1)
    ]


@pytest.mark.parametrize("num_frames, height, width", [(7, 48, 80), (5, 30, 50)])
def test_export_video_round_trip(tmp_path, num_frames, height, width):
    # Flat colours survive lossy coding: each frame's mean colour must come back.
    colours = np.random.default_rng(num_frames).random((num_frames, 3), dtype=np.float32) * 0.8 + 0.1
    frames = np.broadcast_to(colours[:, None, None, :], (num_frames, height, width, 3)).copy()
    path = video.export_video(frames, tmp_path / "v.mp4", fps=8)
    decoded = iio.imread(path).astype(np.float32) / 255.0
    padded = (height + 15) // 16 * 16, (width + 15) // 16 * 16
    assert decoded.shape == (num_frames, *padded, 3)
    inside = decoded[:, 2 : height - 2, 2 : width - 2].mean(axis=(1, 2))
    np.testing.assert_allclose(inside, colours, atol=0.04)
    if padded[1] - width > 8:  # the padding is black, not a stretched picture
        assert decoded[:, : height - 2, width + 4 :].mean() < 0.05


def test_export_video_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        video.export_video(np.zeros((4, 16, 16), np.float32), tmp_path / "a.mp4", fps=8)
    with pytest.raises(TypeError, match="dtype"):
        video.export_video(np.zeros((4, 16, 16, 3), np.uint8), tmp_path / "a.mp4", fps=8)
    bad = np.zeros((2, 16, 16, 3), np.float32)
    bad[1, 3, 4, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        video.export_video(bad, tmp_path / "a.mp4", fps=8)
    with pytest.raises(ValueError, match="fps"):
        video.export_video(np.zeros((2, 16, 16, 3), np.float32), tmp_path / "a.mp4", fps=0)
    assert not (tmp_path / "a.mp4").exists()


def test_side_by_side_places_both_videos_under_labels():
    baseline, refined = _frames(5, 24, 40, 1), _frames(5, 24, 40, 2)
    combined = video.side_by_side([baseline, refined], ("baseline 3 NFE", "P&P 7 NFE"))
    top = video.LABEL_HEIGHT
    assert combined.shape == (5, 24 + top, 2 * 40 + 2, 3)
    np.testing.assert_array_equal(combined[:, top:, :40], baseline)
    np.testing.assert_array_equal(combined[:, top:, 42:], refined)
    assert combined[:, :top, :40].max() > 0.5  # light text on the dark label strips
    assert combined[:, :top, 42:].max() > 0.5
    assert not np.array_equal(combined[0, :top, :40], combined[0, :top, 42:])  # different labels
    with pytest.raises(ValueError, match="differ in shape"):
        video.side_by_side([baseline, refined[:4]], ("a", "b"))


def test_side_by_side_takes_three_columns_in_order():
    clips = [_frames(3, 20, 30, seed) for seed in (1, 2, 3)]
    combined = video.side_by_side(clips, ("Euler", "P&P paper", "P&P selected"))
    top = video.LABEL_HEIGHT
    assert combined.shape == (3, 20 + top, 3 * 30 + 2 * 2, 3)
    for index, clip in enumerate(clips):
        np.testing.assert_array_equal(combined[:, top:, index * 32 : index * 32 + 30], clip)
    with pytest.raises(ValueError, match="one label each"):
        video.side_by_side(clips, ("a", "b"))


@pytest.mark.parametrize("num_frames, num_latent", [(81, 21), (5, 2), (1, 1), (13, 4)])
def test_latent_frame_index_follows_the_causal_vae(num_frames, num_latent):
    # Frame 0 is encoded alone, then groups of 4 frames share a latent frame.
    expected = [0] + [1 + (t - 1) // 4 for t in range(1, num_frames)]
    np.testing.assert_array_equal(video.latent_frame_index(num_frames, num_latent), expected)


def test_to_pixels_maps_latent_frames_and_upsamples_space():
    latent = torch.arange(3, dtype=torch.float32)[:, None, None].expand(3, 2, 3).clone()
    pixels = video.to_pixels(latent, num_frames=9, height=16, width=24)
    assert pixels.shape == (9, 16, 24)
    np.testing.assert_allclose(pixels[:, 0, 0], [0, 1, 1, 1, 1, 2, 2, 2, 2])
    # Bilinear upsampling of a left/right split keeps each half's value away from the seam.
    split = torch.zeros(1, 4, 4)
    split[..., 2:] = 1.0
    wide = video.to_pixels(split, 1, 32, 32)[0]
    assert wide[:, :12].max() == 0.0 and wide[:, 20:].min() == 1.0


def test_heat_scale_keeps_tau_at_or_below_mid_scale():
    maps = _maps([2], 1, (1, 2, 3, 4), seed=0)  # uniform values in [0, 1)
    top = float(torch.quantile(maps[0]["uncertainty"].flatten(), 0.99))
    assert video.heat_scale(maps, 0.25) == pytest.approx(top)
    assert video.heat_scale(maps, 0.0) == pytest.approx(top)
    assert video.heat_scale(maps, 0.75) == 1.5
    zero = [dict(maps[0], uncertainty=torch.zeros(1, 2, 3, 4))]
    assert video.heat_scale(zero, 0.0) == 1.0


def test_refined_steps_use_first_uncertainty_and_last_mask():
    maps = _maps([4, 2], 3, (2, 2, 3, 4), seed=3)
    steps = video.refined_steps(maps, sample=1)
    assert [s["step"] for s in steps] == [2, 4]
    first = next(m for m in maps if m["step"] == 2 and m["iteration"] == 1)
    last = next(m for m in maps if m["step"] == 2 and m["iteration"] == 3)
    assert torch.equal(steps[0]["uncertainty"], first["uncertainty"][1])
    assert torch.equal(steps[0]["certain"], last["certain"][1])
    assert steps[0]["iterations"] == 3
    assert steps[0]["certain_fraction"] == pytest.approx(float(last["certain"][1].float().mean()))


def test_uncertainty_segments_one_labelled_segment_per_step():
    frames = _frames(5, 32, 48, 4)
    maps = _maps([2, 3, 5], 2, (1, 2, 4, 6), seed=5)
    chunks = list(video.uncertainty_segments(frames, maps, tau=0.25, chunk_frames=2))
    assert [len(c) for c in chunks] == [2, 2, 1] * 3
    heat = np.concatenate(chunks)
    assert heat.shape == (3 * 5, 32 + video.LABEL_HEIGHT, 48, 3)
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    # Each segment is the video under its own step's map: recompute step 3's overlay directly.
    step3 = next(m for m in maps if m["step"] == 3 and m["iteration"] == 1)["uncertainty"][0]
    expected = video.overlay_heat(frames, video.to_pixels(step3, 5, 32, 48) / video.heat_scale(maps, 0.25))
    np.testing.assert_allclose(heat[5:10, video.LABEL_HEIGHT :], expected, atol=1e-6)
    assert not np.allclose(heat[:5], heat[5:10])
    with pytest.raises(ValueError, match="no uncertainty maps"):
        next(video.uncertainty_segments(frames, [], tau=0.25))


def test_stream_video_writes_chunks_in_order(tmp_path):
    chunks = [np.full((n, 24, 40, 3), value, np.float32) for n, value in ((3, 0.2), (1, 0.8), (2, 0.5))]
    decoded = iio.imread(video.stream_video(iter(chunks), tmp_path / "s.mp4", fps=8)).astype(np.float32) / 255.0
    assert decoded.shape == (6, 32, 48, 3)  # padded to whole macroblocks
    np.testing.assert_allclose(decoded[:, 4:20, 4:36].mean(axis=(1, 2, 3)), [0.2, 0.2, 0.2, 0.8, 0.5, 0.5], atol=0.03)


@pytest.mark.parametrize("tau", [0.25, 0.0])
def test_uncertainty_grid_writes_a_png(tmp_path, tau):
    import matplotlib.image

    frames = _frames(9, 24, 40, 6)
    path = video.uncertainty_grid(frames, _maps([1, 2, 6], 2, (1, 3, 3, 5), seed=7), tau, tmp_path / "grid.png")
    picture = matplotlib.image.imread(path)
    assert picture.ndim == 3 and picture.shape[0] > 100 and picture.shape[1] > 100
    assert picture[..., :3].std() > 0.05  # not a blank canvas
