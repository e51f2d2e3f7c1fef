"""tests/cli: tiny Wan checkpoints on disk, built once per session (seconds on a CPU)."""
import numpy as np
import pytest

from tests.wan.tiny import build_tiny_wan


def _tiny_checkpoint(kind: str):
    @pytest.fixture(scope="session")
    def checkpoint(tmp_path_factory):
        # Without diffusers (a GPU machine without the carried wheel) the tests that load a checkpoint skip.
        pytest.importorskip("diffusers", reason="the tiny Wan checkpoints are diffusers models")
        return build_tiny_wan(tmp_path_factory.mktemp("wan") / kind, kind)

    return checkpoint


tiny_t2v, tiny_a14b, tiny_ti2v, tiny_i2v = (_tiny_checkpoint(kind) for kind in ("t2v", "a14b", "ti2v", "i2v"))


@pytest.fixture(scope="session")
def image_file(tmp_path_factory):
    """A 40x24 RGB PNG (not the video's size: the pipeline resizes it)."""
    from PIL import Image

    pixels = np.random.default_rng(7).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("image") / "start.png"
    Image.fromarray(pixels).save(path)
    return path
