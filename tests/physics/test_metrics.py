"""Physics metrics on hand-made clips with known answers."""
import math

import numpy as np
import pytest

from pnp_kernels.physics import metrics
from pnp_kernels.physics.data import Trajectories, render_clips, sample_clips

FRAMES, SIZE = 12, 24


def clip_of(centres, radii, size=SIZE, brightness=None):
    """One grey clip (F, size, size) of a single ball at the given (y, x) centres and radii."""
    centres = np.asarray(centres, dtype=np.float64)
    radii = np.broadcast_to(np.asarray(radii, dtype=np.float64), (len(centres),))
    frames = np.stack([
        render_clips(Trajectories(c[None, None, None], np.array([[r]]), np.ones((1, 1, 3))), size)[0, 0, ..., 0]
        for c, r in zip(centres, radii)
    ])
    if brightness is not None:
        frames *= np.asarray(brightness)[:, None, None]
    return frames


def parabola(y0=5.0, x0=4.0, vy=-1.0, vx=1.1, g=0.4, frames=FRAMES):
    t = np.arange(frames)
    return np.stack([y0 + vy * t + 0.5 * g * t * t, x0 + vx * t], axis=1)


def test_perfect_ballistic_clip_scores_zero():
    m = metrics.clip_metrics(clip_of(parabola(), 2.6))
    assert m.tracked == 1.0 and m.permanence == 0.0 and m.background == 0.0
    assert m.ballistic < 0.15 and m.shape < 0.03 and m.size < 0.01 and m.flicker < 0.02


def test_real_clips_score_near_zero():
    scores = metrics.batch_metrics(sample_clips(32, seed=11))
    assert scores["tracked"].mean() == 1.0 and scores["permanence"].max() == 0.0
    assert np.nanmedian(scores["ballistic"]) < 0.2
    assert scores["shape"].max() < 0.05 and scores["size"].max() < 0.02


def test_centroid_and_radius_match_the_drawn_disc():
    rng = np.random.default_rng()
    for _ in range(20):
        radius = rng.uniform(1.8, 4.0)
        y, x = rng.uniform(radius + 1, 19 - radius, 2)
        frame = metrics.disc(19, 23, y, x, radius)
        (ball,), _ = metrics.find_balls(frame)
        assert abs(ball.y - y) < 0.05 and abs(ball.x - x) < 0.05 and abs(ball.radius - radius) < 0.05


def test_teleporting_ball_counts_a_death_and_a_birth():
    centres = parabola()
    centres[6:, 1] += 9.0  # the ball jumps sideways mid-flight
    m = metrics.clip_metrics(clip_of(centres, 2.5))
    assert m.permanence == pytest.approx(2 / (FRAMES - 1))
    assert m.tracked == 0.0


def test_vanishing_ball_is_not_tracked():
    frames = clip_of(parabola(), 2.5)
    frames[5:7] = 0.0
    m = metrics.clip_metrics(frames)
    # one death, one birth and two frames without a ball
    assert m.tracked == 0.0 and m.partly_blank == 1.0 and m.permanence == pytest.approx(4 / (FRAMES - 1))


@pytest.mark.parametrize("level", [0.0, 0.3])  # nothing, or a haze too dim to be a ball
def test_blank_clip_is_a_failure_on_every_count(level):
    m = metrics.clip_metrics(np.full((FRAMES, SIZE, SIZE), level))
    assert m.tracked == 0.0 and m.blank == 1.0 and m.partly_blank == 0.0
    assert m.permanence == pytest.approx(FRAMES / (FRAMES - 1))  # the worst a ball-less clip can score
    assert all(math.isnan(getattr(m, name)) for name in metrics.TRACKED_ONLY)


def test_half_blank_clip_counts_its_empty_frames():
    frames = clip_of(parabola(), 2.5)
    frames[FRAMES // 2:] = 0.0
    m = metrics.clip_metrics(frames)
    assert m.tracked == 0.0 and m.blank == 0.0 and m.partly_blank == 1.0
    assert m.permanence == pytest.approx((1 + FRAMES // 2) / (FRAMES - 1))  # a death, then empty frames
    assert all(math.isnan(getattr(m, name)) for name in metrics.TRACKED_ONLY)


def test_split_ball_is_not_tracked_and_leaves_the_ball_metrics_undefined():
    centres = parabola()
    frames = clip_of(centres, 2.5)
    for t in range(6, FRAMES):  # the ball goes on, and a second one appears beside it
        y, x = centres[t]
        frames[t] = np.maximum(metrics.disc(SIZE, SIZE, y, x, 2.5), metrics.disc(SIZE, SIZE, y + 8, x, 2.0))
    m = metrics.clip_metrics(frames)
    assert m.tracked == 0.0 and m.blank == 0.0 and m.partly_blank == 0.0 and m.permanence >= 2 / (FRAMES - 1)
    assert all(math.isnan(getattr(m, name)) for name in metrics.TRACKED_ONLY)


def test_batches_give_every_clip_every_metric():
    clips = np.stack([clip_of(parabola(), 2.5), np.zeros((FRAMES, SIZE, SIZE))])
    scores = metrics.batch_metrics(clips)
    assert set(scores) == set(metrics.METRIC_NAMES) and all(len(v) == 2 for v in scores.values())
    assert scores["tracked"].tolist() == [1.0, 0.0] and scores["blank"].tolist() == [0.0, 1.0]


def test_splitting_ball_counts_births():
    frames = clip_of(parabola(), 2.5)
    frames[6] = np.maximum(metrics.disc(SIZE, SIZE, 5, 5, 2.0), metrics.disc(SIZE, SIZE, 18, 18, 2.0))
    assert metrics.clip_metrics(frames).permanence >= 2 / (FRAMES - 1)


def test_jerky_motion_has_a_large_ballistic_residual():
    centres = parabola()
    centres[::2, 1] += 1.5  # zig-zag in mid-air: reversals away from the walls are not bounces
    assert metrics.clip_metrics(clip_of(centres, 2.5)).ballistic > 1.0


def test_ballistic_residual_matches_a_naive_third_difference():
    rng = np.random.default_rng()
    track = parabola(y0=8.0, x0=8.0, vx=1.0) + rng.normal(0, 0.1, (FRAMES, 2))
    naive = [np.hypot(*(track[t + 3] - 3 * track[t + 2] + 3 * track[t + 1] - track[t])) for t in range(FRAMES - 3)]
    # A 40-px frame: no wall near the track, so no window counts as a bounce.
    assert metrics.ballistic_residual(track, 2.0, 40, 40) == pytest.approx(np.median(naive))
    assert math.isnan(metrics.ballistic_residual(track[:3], 2.0, 40, 40))


def test_bounce_windows_are_left_out():
    t = np.arange(FRAMES, dtype=np.float64)
    x = 3.0 + 1.5 * t
    x = np.where(x > 14.0, 28.0 - x, x)  # reflected off the right wall of a 16-px frame (radius 2)
    track = np.stack([np.full(FRAMES, 8.0), x], axis=1)
    assert metrics.ballistic_residual(track, 2.0, 16, 16) < 1e-9


def test_square_is_not_a_disc():
    frames = np.zeros((FRAMES, SIZE, SIZE))
    frames[:, 8:14, 8:14] = 1.0
    assert metrics.clip_metrics(frames).shape > 0.15
    assert metrics.clip_metrics(clip_of(parabola(), 3.0)).shape < 0.03


def test_changing_size_is_measured():
    radii = np.where(np.arange(FRAMES) % 2 == 0, 2.0, 3.5)
    assert metrics.clip_metrics(clip_of(parabola(), radii)).size > 0.2


def test_flicker_and_background_are_measured():
    brightness = np.where(np.arange(FRAMES) % 2 == 0, 1.0, 0.6)
    assert metrics.clip_metrics(clip_of(parabola(), 2.5, brightness=brightness)).flicker > 0.2
    hazy = clip_of(parabola(), 2.5) * 0.7 + 0.2
    assert metrics.clip_metrics(hazy).background == pytest.approx(0.2, abs=0.01)


def test_uint8_rgb_and_grey_float_agree():
    frames = clip_of(parabola(), 2.5)
    rgb = np.repeat(np.round(frames * 255).astype(np.uint8)[..., None], 3, axis=-1)
    a, b = metrics.clip_metrics(frames), metrics.clip_metrics(rgb)
    assert a.permanence == b.permanence and abs(a.ballistic - b.ballistic) < 0.02


def test_bad_frames_are_refused():
    with pytest.raises(TypeError, match="frames"):
        metrics.to_grey([[0.0]])
    with pytest.raises(ValueError, match="shape"):
        metrics.to_grey(np.zeros((3, 4, 4, 2)))
    with pytest.raises(ValueError, match="finite"):
        metrics.to_grey(np.full((3, 4, 4), np.nan))
    with pytest.raises(ValueError, match="clips"):
        metrics.batch_metrics(np.zeros((4, 4)))
