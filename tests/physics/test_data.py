"""Procedural bouncing-ball clips: deterministic, inside the box, ballistic between bounces, fast."""
import time

import numpy as np
import pytest

from pnp_kernels.physics import data


def test_same_seed_same_clips_and_shapes():
    a = data.sample_clips(5, seed=3, num_frames=7, size=19)
    b = data.sample_clips(5, seed=3, num_frames=7, size=19)
    assert a.shape == (5, 7, 19, 19, 3) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, data.sample_clips(5, seed=4, num_frames=7, size=19))
    assert a.min() >= 0.0 and a.max() <= 1.0 and a.max() > 0.99


def test_balls_stay_inside_and_bounce():
    rng = np.random.default_rng()
    t = data.simulate(64, rng, num_balls=3, num_frames=40, size=21)
    r = t.radii[:, None, :, None]
    assert (t.centres >= r - 1e-9).all() and (t.centres <= 21 - r + 1e-9).all()
    vy = np.diff(t.centres[..., 0], axis=1)
    assert ((vy[:, :-1] > 0) & (vy[:, 1:] < 0)).any()  # some ball turned back from the floor


def test_free_flight_is_exactly_ballistic():
    """Between bounces a centre follows y0 + vy t + g t^2 / 2 (naive closed form)."""
    rng = np.random.default_rng()
    t = data.simulate(256, rng, num_frames=5)
    y = t.centres[:, :, 0, 0]
    accel = y[:, 2:] - 2 * y[:, 1:-1] + y[:, :-2]
    flat = (np.abs(accel - data.GRAVITY) < 1e-9).all(axis=1)
    assert flat.mean() > 0.3  # many clips have no vertical bounce in 5 frames ...
    third = y[flat, 3:] - 3 * y[flat, 2:-1] + 3 * y[flat, 1:-2] - y[flat, :-3]
    assert np.abs(third).max() < 1e-9  # ... and those are exact parabolas


def test_render_matches_a_naive_loop():
    rng = np.random.default_rng()
    t = data.simulate(2, rng, num_balls=2, num_frames=3, size=11, colour=True)
    frames = data.render_clips(t, 11)
    naive = np.zeros((2, 3, 11, 11, 3))
    for b in range(2):
        for f in range(3):
            for i in range(11):
                for j in range(11):
                    for n in range(2):
                        y, x = t.centres[b, f, n]
                        cover = min(max(t.radii[b, n] + 0.5 - np.hypot(i + 0.5 - y, j + 0.5 - x), 0.0), 1.0)
                        naive[b, f, i, j] = np.maximum(naive[b, f, i, j], cover * t.colours[b, n])
    np.testing.assert_allclose(frames, naive, atol=1e-6)


def test_a_batch_renders_in_milliseconds():
    data.sample_clips(64, seed=0)
    started = time.perf_counter()
    data.sample_clips(64, seed=1)
    assert time.perf_counter() - started < 0.25


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="batch"):
        data.sample_clips(0, seed=1)
    with pytest.raises(TypeError, match="seed"):
        data.sample_clips(2, seed=1.5)
    with pytest.raises(TypeError, match="rng"):
        data.simulate(2, 3)
    with pytest.raises(ValueError, match="num_frames"):
        data.sample_clips(2, seed=1, num_frames=1)
