"""pnp-sample end to end on tiny checkpoints saved to disk: run as a subprocess, read every output back."""
import json
import subprocess
import sys
from importlib.metadata import entry_points

import numpy as np
import pytest
import torch

from pnp_kernels import PnPConfig, cli

iio = pytest.importorskip("imageio.v3")

SMALL = ["--height", "32", "--width", "48", "--frames", "5", "--steps", "3", "--dtype", "fp32"]


def pnp_sample_command(*args, cwd):
    result = subprocess.run([sys.executable, "-m", "pnp_kernels", *map(str, args)], cwd=cwd, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def decode(path):
    return iio.imread(path).astype(np.float32) / 255.0


def luma(frames):
    return frames @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def assert_closest(decoded, expected, others):
    error = np.abs(luma(decoded) - luma(expected)).mean()
    distances = [np.abs(luma(decoded) - luma(other)).mean() for other in others]
    assert error < 0.03 and error < 0.6 * min(distances), (error, distances)


def test_console_script_is_cli_main():
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "pnp-sample"]
    assert script.load() is cli.main


def test_module_help(tmp_path):
    result = pnp_sample_command("--help", cwd=tmp_path)
    for flag in ("--model", "--plan", "--tau", "--certain-stop", "--baseline", "--save-uncertainty", "--offload"):
        assert flag in result.stdout


def test_bad_input_exit_status_as_a_command(tiny_t2v, tmp_path):
    out = tmp_path / "out" / "v.mp4"
    result = subprocess.run([sys.executable, "-m", "pnp_kernels", "--model", str(tiny_t2v), "--prompt", "a cat",
                             "--frames", "6", "--out", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("pnp-sample: error:")]
    assert errors == ["pnp-sample: error: --frames must be 4k + 1 (e.g. 5, 81), got 6"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.filterwarnings("ignore:.*torch_dtype.*:FutureWarning")
def test_t2v_video_sidecar_baseline_and_heat_maps(tiny_t2v, tmp_path):
    out = tmp_path / "run" / "cat.mp4"  # the folder does not exist yet
    result = pnp_sample_command(
        "--model", tiny_t2v, "--prompt", "a cat runs on the beach", "--negative-prompt", "blurry", *SMALL,
        "--plan", "1:2", "--tau", "0", "--seed", "11", "--baseline", "--save-uncertainty", "--out", out, cwd=tmp_path,
    )
    names = {"cat.mp4", "cat.json", "cat_baseline.mp4", "cat_side_by_side.mp4", "cat_uncertainty.mp4", "cat_uncertainty.png"}
    assert {p.name for p in out.parent.iterdir()} == names  # and no temporary leftovers
    assert "wrote video" in result.stdout and "NFE" in result.stdout

    refined, baseline = decode(out), decode(out.parent / "cat_baseline.mp4")
    assert refined.shape == baseline.shape == (5, 32, 48, 3)

    # The same run in-process, straight through the pipeline, is the reference for the written videos.
    # Lossy coding (4:2:0 chroma at 32x48) moves colours, so compare brightness, and ask each video to
    # be much closer to its own reference than to the other run or to another seed's.
    from pnp_kernels.wan import WanPnPPipeline

    pipe = WanPnPPipeline.from_pretrained(tiny_t2v, torch_dtype=torch.float32)
    call = dict(prompt="a cat runs on the beach", negative_prompt="blurry", height=32, width=48, num_frames=5,
                num_inference_steps=3, guidance_scale=5.0, output_type="np")

    def reference(seed, plan):
        return pipe(**call, generator=torch.Generator().manual_seed(seed), pnp=PnPConfig(plan=plan, tau=0.0)).frames[0]

    expected, expected_baseline, other_seed = reference(11, "1:2"), reference(11, "none"), reference(12, "1:2")
    assert_closest(refined, expected, [expected_baseline, other_seed])
    assert_closest(baseline, expected_baseline, [expected, reference(12, "none")])

    side = decode(out.parent / "cat_side_by_side.mp4")
    assert side.shape == (5, 48, 112, 3)  # label strip 16 + 32 rows; 48 + 2 + 48 columns padded to 112
    assert_closest(side[:, 16:, :48], expected_baseline, [expected, other_seed])
    assert_closest(side[:, 16:, 50:98], expected, [expected_baseline, other_seed])

    heat = decode(out.parent / "cat_uncertainty.mp4")
    assert heat.shape == (5, 48, 48, 3)  # one refined step: one segment of 5 frames
    assert np.abs(luma(heat[:, 16:]) - luma(expected)).mean() > 0.05  # the heat map is visible over the frames
    import matplotlib.image

    assert matplotlib.image.imread(out.parent / "cat_uncertainty.png").shape[-1] in (3, 4)

    record = json.loads((out.parent / "cat.json").read_text())
    assert record["seed"] == 11 and record["model"]["kind"] == "t2v"
    settings = record["settings"]
    assert (settings["steps"], settings["plan"], settings["tau"], settings["guidance"]) == (3, "1:2", 0.0, 5.0)
    assert (settings["height"], settings["width"], settings["frames"], settings["fps"]) == (32, 48, 5, 16)
    assert settings["prompt"] == "a cat runs on the beach" and settings["negative_prompt"] == "blurry"
    assert record["environment"]["torch"] == torch.__version__ and record["environment"]["gpu"] == torch.cuda.is_available()
    # tau = 0: nothing is ever certain, so step 1 runs all its 2 iterations: 3 + 2 model calls.
    assert record["refined"]["nfe"] == 5 and record["baseline"]["nfe"] == 3
    assert record["refined"]["iterations_per_step"] == [0, 2, 0]
    assert record["refined"]["early_exits"] == 0
    (step,) = record["refined"]["steps"]
    assert step["step"] == 1 and step["certain_fractions"] == [[0.0], [0.0]]
    assert {"load_s", "refined_s", "baseline_s", "write_s", "total_s"} <= set(record["timings"])
    assert set(record["outputs"]) == {"video", "sidecar", "baseline", "side_by_side", "uncertainty_video", "uncertainty_grid"}


def test_i2v_from_an_image(tiny_i2v, image_file, tmp_path):
    out = tmp_path / "i2v.mp4"
    pnp_sample_command("--model", tiny_i2v, "--prompt", "a dog", "--image", image_file, *SMALL, "--plan", "0:1",
                       "--fps", "8", "--out", out, cwd=tmp_path)
    assert decode(out).shape == (5, 32, 48, 3)
    record = json.loads((tmp_path / "i2v.json").read_text())
    assert record["model"]["kind"] == "i2v" and record["settings"]["image"] == str(image_file)
    assert record["settings"]["tau"] == 0.0  # the published I2V setting
    assert record["refined"]["nfe"] == 4 and record["refined"]["iterations_per_step"] == [1, 0, 0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i2v.json", "i2v.mp4"]


@pytest.mark.filterwarnings("ignore:.*torch_dtype.*:FutureWarning")
def test_ti2v_image_to_video_matches_the_pipeline(tiny_ti2v, image_file, tmp_path):
    out = tmp_path / "ti2v.mp4"
    pnp_sample_command("--model", tiny_ti2v, "--prompt", "a cat", "--image", image_file, "--height", "32", "--width",
                       "64", "--frames", "5", "--steps", "3", "--plan", "1:1", "--dtype", "fp32", "--seed", "5",
                       "--out", out, cwd=tmp_path)
    written = decode(out)
    assert written.shape == (5, 32, 64, 3)
    record = json.loads((tmp_path / "ti2v.json").read_text())
    assert record["model"]["kind"] == "ti2v-5b" and record["refined"]["nfe"] == 4
    assert record["settings"]["tau"] == 0.0  # with an image: the image-to-video default

    from PIL import Image

    from pnp_kernels.wan import WanImageToVideoPnPPipeline, WanPnPPipeline

    call = dict(prompt="a cat", height=32, width=64, num_frames=5, num_inference_steps=3, output_type="np",
                pnp=PnPConfig(plan="1:1", tau=0.0))
    image_pipe = WanImageToVideoPnPPipeline.from_pretrained(tiny_ti2v, torch_dtype=torch.float32)
    expected = image_pipe(image=Image.open(image_file).convert("RGB"), generator=torch.Generator().manual_seed(5),
                          **call).frames[0]
    text_only = WanPnPPipeline.from_pipe(image_pipe)(generator=torch.Generator().manual_seed(5), **call).frames[0]
    assert_closest(written, expected, [text_only])


def test_a14b_with_philox_noise(tiny_a14b, tmp_path):
    out = tmp_path / "a14b.mp4"
    pnp_sample_command("--model", tiny_a14b, "--prompt", "a dog", *SMALL, "--plan", "1:1", "--guidance-2", "2.5",
                       "--noise", "philox", "--tau", "0.5", "--out", out, cwd=tmp_path)
    assert decode(out).shape == (5, 32, 48, 3)
    record = json.loads((tmp_path / "a14b.json").read_text())
    settings = record["settings"]
    assert (record["model"]["kind"], settings["guidance"], settings["guidance_2"]) == ("t2v-a14b", 4.0, 2.5)
    assert settings["noise"] == "philox"
    assert record["refined"]["nfe"] == 4


@pytest.mark.gpu
@pytest.mark.parametrize("extra", [["--offload"], ["--compile", "--attention", "auto"]], ids=["offload", "compile"])
def test_cuda_bfloat16(tiny_t2v, tmp_path, extra):
    out = tmp_path / "gpu.mp4"
    pnp_sample_command("--model", tiny_t2v, "--prompt", "a cat", "--height", "32", "--width", "48", "--frames", "5",
                       "--steps", "3", "--plan", "1:1", "--device", "cuda", "--dtype", "bf16", *extra,
                       "--out", out, cwd=tmp_path)
    assert decode(out).shape == (5, 32, 48, 3)
    record = json.loads((tmp_path / "gpu.json").read_text())
    assert record["settings"]["dtype"] == "bfloat16" and record["environment"]["gpu"]
    assert record["refined"]["nfe"] == 4
