"""Weight-free metrics on hand-made clips with known answers, against test-local naive versions."""
import cv2
import numpy as np
import pytest

from pnp_kernels.eval import metrics


def texture(rng, height, width):
    """A smooth random RGB texture: optical flow can follow it."""
    return cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 2.0)


def panning_clip(rng, frames, height, width, speed):
    """A window sliding right over a texture by ``speed`` pixels per frame."""
    canvas = texture(rng, height, width + speed * frames)
    return np.stack([canvas[:, speed * t : speed * t + width] for t in range(frames)])


@pytest.fixture
def rng():
    return np.random.default_rng()


def test_static_clip_has_no_motion_warp_error_or_flicker(rng):
    clip = np.repeat(texture(rng, 37, 53)[None], 7, axis=0)
    assert metrics.motion_magnitude(clip) < 1e-2
    assert metrics.warp_error(clip) < 1e-3
    assert metrics.flicker(clip) == 0.0


def test_panning_clip_moves_at_its_speed_and_warps_back(rng):
    clip = panning_clip(rng, 6, 41, 67, speed=2)
    assert metrics.motion_magnitude(clip) == pytest.approx(2.0, rel=0.25)
    # The flow explains consecutive frames: far smaller error than frames of independent noise.
    noise = rng.integers(0, 256, clip.shape, dtype=np.uint8)
    assert metrics.warp_error(clip) < 0.02 < 0.1 < metrics.warp_error(noise)


def test_colour_shift_gives_the_expected_saturation_delta(rng):
    clip = rng.integers(0, 256, (5, 19, 23, 3), dtype=np.uint8)
    shifted = clip.copy()
    shifted[..., 2] //= 2  # less blue: most pixels change saturation

    def naive(c):  # HSV saturation (max - min) / max, 0 for black, rounded to 8 bits as OpenCV stores it
        c = c.astype(np.float64)
        top, bottom = c.max(axis=-1), c.min(axis=-1)
        s = np.where(top > 0, (top - bottom) / np.maximum(top, 1), 0.0)
        return np.round(s * 255).mean() / 255

    delta = metrics.saturation(shifted) - metrics.saturation(clip)
    assert delta == pytest.approx(naive(shifted) - naive(clip), abs=2e-3)
    grey = np.full((3, 8, 8, 3), 128, dtype=np.uint8)
    tinted = grey.copy()
    tinted[..., 2] = 64
    assert metrics.saturation(grey) == 0.0
    assert metrics.saturation(tinted) == pytest.approx(0.5, abs=1 / 255)


def test_contrast_doubles_when_brightness_spreads_twice_as_far(rng):
    grey = rng.integers(96, 160, (4, 16, 20), dtype=np.int32)
    clip = np.repeat(grey[..., None], 3, axis=-1).astype(np.uint8)
    spread = np.repeat((128 + 2 * (grey - 128))[..., None], 3, axis=-1).astype(np.uint8)
    assert metrics.contrast(spread) == pytest.approx(2 * metrics.contrast(clip), rel=0.02)
    assert metrics.contrast(clip) == pytest.approx((grey / 255).reshape(4, -1).std(axis=1).mean(), rel=1e-3)


def test_flickering_clip_is_flagged_and_a_fade_is_not(rng):
    base = texture(rng, 24, 30).astype(np.int32)
    fade = np.stack([np.clip(base + 6 * t, 0, 255) for t in range(9)]).astype(np.uint8)
    flickering = np.stack([np.clip(base + (12 if t % 2 else -12), 0, 255) for t in range(9)]).astype(np.uint8)
    assert metrics.flicker(fade) < 0.005 < metrics.FLICKER_FLAG < metrics.flicker(flickering)
    brightness = np.array([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).mean() / 255 for f in flickering])
    second_difference = brightness[2:] - 2 * brightness[1:-1] + brightness[:-2]
    assert metrics.flicker(flickering) == pytest.approx(np.abs(second_difference).mean())
    assert np.isnan(metrics.flicker(fade[:2]))


def test_sharp_clip_is_sharper_than_its_blurred_copy(rng):
    clip = rng.integers(0, 256, (3, 29, 31, 3), dtype=np.uint8)
    blurred = np.stack([cv2.GaussianBlur(frame, (0, 0), 1.5) for frame in clip])
    more_blurred = np.stack([cv2.GaussianBlur(frame, (0, 0), 3.0) for frame in clip])
    assert metrics.sharpness(clip) > metrics.sharpness(blurred) > metrics.sharpness(more_blurred)

    def naive(frames):  # 4-neighbour Laplacian of the brightness, mirrored borders (OpenCV's default)
        grey = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]).astype(np.float64)
        padded = np.pad(grey, ((0, 0), (1, 1), (1, 1)), mode="reflect")
        laplacian = (padded[:, :-2, 1:-1] + padded[:, 2:, 1:-1] + padded[:, 1:-1, :-2] + padded[:, 1:-1, 2:]
                     - 4 * grey)
        return laplacian.reshape(len(frames), -1).var(axis=1).mean()

    assert metrics.sharpness(blurred) == pytest.approx(naive(blurred), rel=1e-9)


def test_frame_change_and_refined_share():
    a = np.zeros((2, 4, 5, 3), dtype=np.uint8)
    b = a.copy()
    b[0] = 255  # half the frames fully changed
    assert metrics.frame_change(a, a) == 0.0
    assert metrics.frame_change(b, a) == pytest.approx(0.5)
    assert metrics.refined_share([]) == 0.0
    assert metrics.refined_share([[0.2, 0.6], [1.0]]) == pytest.approx(1 - 0.6)


@pytest.mark.parametrize("bad, error", [
    (np.zeros((2, 4, 5, 3), dtype=np.float32), TypeError),
    (np.zeros((4, 5, 3), dtype=np.uint8), ValueError),
    (np.zeros((2, 4, 5, 4), dtype=np.uint8), ValueError),
    ([[0]], TypeError),
])
def test_bad_clips_are_refused(bad, error):
    with pytest.raises(error, match="clip"):
        metrics.clip_metrics(bad)
    with pytest.raises(ValueError, match="same shape"):
        metrics.frame_change(np.zeros((2, 4, 5, 3), np.uint8), np.zeros((2, 4, 6, 3), np.uint8))


def test_float_frames_become_uint8():
    frames = np.array([0.0, 0.5, 1.2, -0.1], dtype=np.float32).reshape(1, 1, 4, 1).repeat(3, axis=-1)
    assert metrics.to_uint8(frames)[0, 0, :, 0].tolist() == [0, 128, 255, 0]
