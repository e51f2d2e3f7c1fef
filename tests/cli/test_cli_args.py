"""pnp-sample before any model is loaded: checkpoint detection, defaults, and one-line errors for bad input."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pnp_kernels import cli
from pnp_kernels.cli.outputs import output_paths
from pnp_kernels.cli.settings import resolve_settings
from pnp_kernels.cli_common.checkpoint import detect_model

TINY = ["--height", "32", "--width", "32", "--frames", "5", "--steps", "3", "--plan", "1:2", "--dtype", "fp32"]
COMPONENTS = {"tokenizer": "PreTrainedTokenizerFast", "text_encoder": "UMT5EncoderModel",
              "transformer": "WanTransformer3DModel", "vae": "AutoencoderKLWan", "scheduler": "UniPCMultistepScheduler"}


EMPTY_SAFETENSORS = len(b"{}").to_bytes(8, "little") + b"{}"  # a whole safetensors file holding no tensor


def write_checkpoint_index(folder, class_name="WanPipeline", vae_spatial=8, **entries):
    """A checkpoint folder with a model_index.json, component folders with placeholder weight files, and
    the two configs that are read."""
    index = {"_class_name": class_name, "boundary_ratio": None, "expand_timesteps": False,
             "transformer_2": [None, None], **{k: ["diffusers", v] for k, v in COMPONENTS.items()}}
    index.update(entries)
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps(index))
    for name, entry in index.items():
        if isinstance(entry, list) and entry[0] is not None:
            (folder / name).mkdir()
            (folder / name / "model.safetensors").write_bytes(EMPTY_SAFETENSORS)
    (folder / "vae" / "config.json").write_text(json.dumps({"scale_factor_spatial": vae_spatial, "scale_factor_temporal": 4}))
    (folder / "transformer" / "config.json").write_text(json.dumps({"patch_size": [1, 2, 2]}))
    return folder


@pytest.mark.parametrize(
    "class_name, entries, vae_spatial, kind, multiple",
    [
        ("WanPipeline", {}, 8, "t2v", 16),
        ("WanPipeline", {"transformer_2": ["diffusers", "WanTransformer3DModel"], "boundary_ratio": 0.875}, 8, "t2v-a14b", 16),
        ("WanPipeline", {"expand_timesteps": True}, 16, "ti2v-5b", 32),
        ("WanImageToVideoPipeline", {"image_encoder": ["transformers", "CLIPVisionModel"],
                                     "image_processor": ["transformers", "CLIPImageProcessor"]}, 8, "i2v", 16),
        ("WanImageToVideoPipeline", {"transformer_2": ["diffusers", "WanTransformer3DModel"], "boundary_ratio": 0.9,
                                     "image_encoder": [None, None]}, 8, "i2v-a14b", 16),
    ],
)
def test_detect_model_from_model_index(tmp_path, class_name, entries, vae_spatial, kind, multiple):
    folder = write_checkpoint_index(tmp_path / "ckpt", class_name, vae_spatial, **entries)
    info = detect_model(folder)
    assert (info.kind.name, info.size_multiple, info.temporal_factor) == (kind, multiple, 4)


def test_detect_model_on_saved_tiny_checkpoints(tiny_t2v, tiny_a14b, tiny_ti2v, tiny_i2v):
    assert detect_model(tiny_t2v).kind.name == "t2v"
    assert detect_model(tiny_a14b).kind.name == "t2v-a14b"
    assert (detect_model(tiny_ti2v).kind.name, detect_model(tiny_ti2v).size_multiple) == ("ti2v-5b", 32)
    assert detect_model(tiny_i2v).kind.name == "i2v"


def _parse(argv):
    return resolve_settings(cli.build_parser().parse_args(argv))


def test_published_defaults(tiny_t2v, tiny_a14b, tmp_path):
    settings, image = _parse(["--model", str(tiny_t2v), "--prompt", "a cat", "--out", str(tmp_path / "v.mp4")])
    assert image is None
    assert (settings.steps, str(settings.pnp.plan), settings.pnp.tau, settings.pnp.p_norm) == (50, "2-5:3,6-14:1", 0.25, 1)
    assert (settings.pnp.certain_stop, settings.guidance, settings.guidance_2) == (0.999, 5.0, None)
    assert (settings.height, settings.width, settings.frames, settings.fps, settings.seed) == (480, 832, 81, 16, 0)
    assert settings.dtype == "float32" and settings.device == "cpu"
    settings, _ = _parse(["--model", str(tiny_a14b), "--prompt", "a cat", "--out", str(tmp_path / "v.mp4")])
    assert (settings.steps, str(settings.pnp.plan), settings.pnp.tau) == (40, "2-5:3,6-13:1", 0.2)
    assert (settings.guidance, settings.guidance_2) == (4.0, 3.0)
    assert settings.negative_prompt == "low quality"
    assert list(tmp_path.iterdir()) == []  # checking writes nothing


def test_published_image_to_video_defaults(tiny_i2v, tiny_ti2v, image_file, tmp_path):
    argv = ["--prompt", "a cat", "--image", str(image_file), "--out", str(tmp_path / "out" / "v.mp4")]
    # TI2V-5B takes the image-to-video threshold only when it is given an image.
    assert _parse(["--model", str(tiny_ti2v), *argv])[0].pnp.tau == 0.0
    assert _parse(["--model", str(tiny_ti2v), *argv[:2], *argv[4:]])[0].pnp.tau == 0.25
    settings, image = _parse(["--model", str(tiny_i2v), *argv])
    assert image.size == (40, 24)
    assert (settings.steps, str(settings.pnp.plan), settings.pnp.tau, settings.guidance) == (50, "2-5:3,6-14:1", 0.0, 5.0)
    assert settings.negative_prompt == "low quality"
    a14b = write_checkpoint_index(tmp_path / "i2v-a14b", "WanImageToVideoPipeline", boundary_ratio=0.9,
                                  transformer_2=["diffusers", "WanTransformer3DModel"], image_encoder=[None, None])
    settings, _ = _parse(["--model", str(a14b), *argv])
    assert (settings.steps, str(settings.pnp.plan), settings.pnp.tau) == (40, "1-5:3,6-13:1", 0.0)
    assert (settings.guidance, settings.guidance_2, settings.negative_prompt) == (3.5, 3.5, "low quality")
    settings, _ = _parse(["--model", str(a14b), *argv, "--negative-prompt", "", "--guidance-2", "2"])
    assert (settings.negative_prompt, settings.guidance_2) == ("", 2.0)


def test_output_names_follow_out(tmp_path):
    paths = output_paths(tmp_path / "runs" / "cat.mp4")
    assert {k: p.name for k, p in paths.items()} == {
        "video": "cat.mp4", "sidecar": "cat.json", "baseline": "cat_baseline.mp4",
        "side_by_side": "cat_side_by_side.mp4", "uncertainty_video": "cat_uncertainty.mp4",
        "uncertainty_grid": "cat_uncertainty.png",
    }
    assert {p.parent for p in paths.values()} == {tmp_path / "runs"}


def _run_main(argv, capsys):
    status = cli.main(argv)
    captured = capsys.readouterr()
    return status, captured.err.strip()


def _assert_one_line_error(status, err, *needles):
    assert status == 2
    lines = [line for line in err.splitlines() if line.startswith("pnp-sample: error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]


BAD_NUMBERS = [
    (["--steps", "0"], "--steps"),
    (["--steps", "three"], "--steps"),
    (["--steps", "100000000"], "--steps must be <= 10000, got 100000000"),
    (["--guidance", "-1"], "--guidance"),
    (["--guidance", "inf"], "--guidance"),
    (["--height", "30"], "--height"),
    (["--width", "0"], "--width"),
    (["--frames", "6"], "--frames"),
    (["--fps", "0"], "--fps"),
    (["--seed", "-3"], "--seed"),
    (["--tau", "-0.1"], "--tau must be >= 0"),
    (["--tau", "nan"], "--tau"),
    (["--p-norm", "3"], "--p-norm must be one of (1, 2), got 3"),
    (["--certain-stop", "0"], "--certain-stop must be > 0"),
    (["--certain-stop", "1.5"], "--certain-stop must be <= 1"),
    (["--plan", "2-1:3"], ("--plan '2-1:3': ", "2-1")),
    (["--plan", "1:2,1:3"], ("--plan '1:2,1:3': ", "overlap")),
    (["--plan", "x"], ("--plan 'x': ", "'x'")),
    (["--plan", "7:1"], ("--plan '7:1': ", "step 7")),  # beyond the 3 steps of TINY
    (["--plan", "f0.5-0.2:1"], ("--plan 'f0.5-0.2:1': ",)),  # a fraction range must go up
    (["--noise", "uniform"], "--noise"),
    (["--dtype", "int8"], "--dtype"),
    (["--guidance-2", "3"], "--guidance-2"),  # T2V has one expert
    (["--attention", "warp"], "--attention"),
    (["--device", "gpu0"], "--device"),
    (["--offload", "--device", "cpu"], "--offload"),
    (["--offload"], "--offload moves models between the CPU and a CUDA device; no CUDA device"),
    (["--device", "meta"], "--device meta: pnp-sample runs on cpu or cuda, not meta"),
    (["--device", "mps"], "--device mps: pnp-sample runs on cpu or cuda"),
    (["--backend", "cuda", "--device", "cpu"], "--backend cuda cannot run here"),
    (["--image", "IMAGE"], "--image"),  # T2V takes no image
]


@pytest.mark.parametrize("extra, needles", BAD_NUMBERS, ids=[" ".join(a) for a, _ in BAD_NUMBERS])
def test_bad_arguments_fail_in_one_line_before_loading(tiny_t2v, image_file, tmp_path, capsys, extra, needles):
    out = tmp_path / "out" / "v.mp4"
    extra = [str(image_file) if a == "IMAGE" else a for a in extra]
    status, err = _run_main(["--model", str(tiny_t2v), "--prompt", "a cat", *TINY, *extra, "--out", str(out)], capsys)
    _assert_one_line_error(status, err, *([needles] if isinstance(needles, str) else needles))
    assert "default plan" not in err  # the hint about the default plan belongs to plan errors only
    assert list(tmp_path.iterdir()) == []


def test_default_plan_that_does_not_fit_the_steps(tiny_t2v, tmp_path, capsys):
    status, err = _run_main(["--model", str(tiny_t2v), "--prompt", "a cat", "--steps", "10",
                             "--out", str(tmp_path / "v.mp4")], capsys)
    _assert_one_line_error(status, err, "the default plan '2-5:3,6-14:1' (of a 50-step run)", "--steps 10",
                           "step 14", "set --plan")


def test_triton_backend_that_cannot_run_here(tiny_t2v, tmp_path, capsys, monkeypatch):
    from pnp_kernels.ops import backends

    monkeypatch.setitem(backends.BACKENDS, "triton", backends.UnavailableBackend("triton", "no triton here"))
    status, err = _run_main(["--model", str(tiny_t2v), "--prompt", "a cat", *TINY, "--backend", "triton",
                             "--out", str(tmp_path / "v.mp4")], capsys)
    _assert_one_line_error(status, err, "--backend triton cannot run here: no triton here")
    assert list(tmp_path.iterdir()) == []


def test_existing_outputs_are_kept_unless_overwrite(tiny_t2v, tmp_path, capsys):
    (tmp_path / "v.json").write_text("an earlier run")
    argv = ["--model", str(tiny_t2v), "--prompt", "a cat", *TINY, "--out", str(tmp_path / "v.mp4")]
    _assert_one_line_error(*_run_main(argv, capsys), str(tmp_path / "v.json"), "--overwrite")
    settings, _ = _parse(argv + ["--overwrite"])
    assert settings.outputs["sidecar"] == tmp_path / "v.json"
    _parse(argv[:-2] + ["--out", str(tmp_path / "w.mp4")])  # other names are free
    assert (tmp_path / "v.json").read_text() == "an earlier run"


def test_attention_backend_that_cannot_run_here(tiny_t2v, tmp_path, capsys):
    # FlashAttention needs a CUDA device and a half dtype: on the CPU in float32 it is refused up front.
    status, err = _run_main(["--model", str(tiny_t2v), "--prompt", "a cat", *TINY, "--device", "cpu",
                             "--attention", "flash", "--out", str(tmp_path / "v.mp4")], capsys)
    _assert_one_line_error(status, err, "--attention", "flash", "float16 or bfloat16")
    assert list(tmp_path.iterdir()) == []


def _break_checkpoint(tiny_t2v, tmp_path, how):
    folder = tmp_path / "ckpt"
    if how == "missing":
        return folder
    if how == "file":
        folder.write_text("not a folder")
        return folder
    shutil.copytree(tiny_t2v, folder)
    index = folder / "model_index.json"
    if how == "no index":
        index.unlink()
    elif how == "bad json":
        index.write_text("{ not json")
    elif how == "not an object":
        index.write_text("[1, 2]")
    elif how == "other pipeline":
        index.write_text(json.dumps({**json.loads(index.read_text()), "_class_name": "StableDiffusionPipeline"}))
    elif how == "component folder missing":
        shutil.rmtree(folder / "vae")
    elif how == "component not listed":
        index.write_text(json.dumps({**json.loads(index.read_text()), "text_encoder": [None, None]}))
    elif how == "no weights":
        for weights in (folder / "transformer").glob("*.safetensors"):
            weights.unlink()
    elif how == "bad vae config":
        (folder / "vae" / "config.json").write_text("nope")
    return folder


@pytest.mark.parametrize(
    "how, needle",
    [("missing", "no such directory"), ("file", "not a directory"), ("no index", "model_index.json is missing"),
     ("bad json", "cannot read"), ("not an object", "JSON object"), ("other pipeline", "StableDiffusionPipeline"),
     ("component folder missing", "'vae'"), ("component not listed", "'text_encoder'"),
     ("no weights", "holds no weights"), ("bad vae config", "config.json")],
)
def test_malformed_model_folder(tiny_t2v, tmp_path, capsys, how, needle):
    folder = _break_checkpoint(tiny_t2v, tmp_path, how)
    out = tmp_path / "out" / "v.mp4"
    status, err = _run_main(["--model", str(folder), "--prompt", "a cat", *TINY, "--out", str(out)], capsys)
    _assert_one_line_error(status, err, "--model", needle)
    assert not (tmp_path / "out").exists()


def test_missing_model_or_prompt(tiny_t2v, capsys):
    _assert_one_line_error(*_run_main(["--prompt", "a cat"], capsys), "--model")
    _assert_one_line_error(*_run_main(["--model", str(tiny_t2v)], capsys), "--prompt")
    _assert_one_line_error(*_run_main(["--model", str(tiny_t2v), "--prompt", "  "], capsys), "--prompt")


@pytest.mark.parametrize("content", [b"hello, not an image", "truncated"])
def test_unreadable_image(tiny_i2v, image_file, tmp_path, capsys, content):
    bad = tmp_path / "bad.png"
    bad.write_bytes(image_file.read_bytes()[:200] if content == "truncated" else content)
    out = tmp_path / "out" / "v.mp4"
    status, err = _run_main(["--model", str(tiny_i2v), "--prompt", "a cat", *TINY, "--image", str(bad),
                             "--out", str(out)], capsys)
    _assert_one_line_error(status, err, "--image", "cannot read")
    assert not (tmp_path / "out").exists()


def test_i2v_needs_an_image(tiny_i2v, tmp_path, capsys):
    status, err = _run_main(["--model", str(tiny_i2v), "--prompt", "a cat", *TINY,
                             "--out", str(tmp_path / "v.mp4")], capsys)
    _assert_one_line_error(status, err, "--image is required")
    status, err = _run_main(["--model", str(tiny_i2v), "--prompt", "a cat", *TINY, "--image", str(tmp_path / "none.png"),
                             "--out", str(tmp_path / "v.mp4")], capsys)
    _assert_one_line_error(status, err, "--image", "none.png")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output(tiny_t2v, tmp_path, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    cases = [(a_file / "v.mp4", "not a directory"), (tmp_path / "v.avi", ".mp4"), (tmp_path / "dir.mp4", "directory")]
    (tmp_path / "dir.mp4").mkdir()
    if os.geteuid() != 0:  # root may write into read-only folders
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        cases.append((locked / "v.mp4", "cannot write"))
    for out, needle in cases:
        status, err = _run_main(["--model", str(tiny_t2v), "--prompt", "a cat", *TINY, "--out", str(out)], capsys)
        _assert_one_line_error(status, err, "--out", needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["file.txt", "dir.mp4"] + (["locked"] if os.geteuid() else []))


def test_unwritable_pseudo_filesystem(tiny_t2v, capsys):
    if not os.path.isdir("/proc/self"):
        pytest.skip("no /proc")
    status, err = _run_main(["--model", str(tiny_t2v), "--prompt", "a cat", *TINY, "--out", "/proc/self/v.mp4"], capsys)
    _assert_one_line_error(status, err, "--out", "cannot write")


def test_plans_that_fit_any_step_count_are_resolved_on_the_schedulers_grid(tiny_t2v, tiny_a14b, tmp_path):
    out = ["--out", str(tmp_path / "v.mp4")]
    settings, _ = _parse(["--model", str(tiny_t2v), "--prompt", "a cat", "--steps", "25", "--plan", "f0.2-0.4:2", *out])
    assert settings.pnp.plan.ranges == ((5, 9, 2),)  # 0.2 <= i / 25 < 0.4
    # The tiny A14B switches experts at boundary_ratio 0.875: '@high' refines only the steps above it.
    from diffusers import UniPCMultistepScheduler

    scheduler = UniPCMultistepScheduler.from_pretrained(tiny_a14b, subfolder="scheduler")
    scheduler.set_timesteps(12)
    high = [i for i, sigma in enumerate(scheduler.sigmas[:-1].tolist()) if sigma >= 0.875]
    settings, _ = _parse(["--model", str(tiny_a14b), "--prompt", "a cat", "--steps", "12", "--plan", "all:1@high", *out])
    assert settings.pnp.plan.ranges == ((high[0], high[-1], 1),) and 0 < len(high) < 12
    assert settings.to_dict()["plan"] == f"{high[0]}-{high[-1]}:1"


def test_expert_plan_on_a_one_expert_model(tiny_t2v, tmp_path, capsys):
    status, err = _run_main(["--model", str(tiny_t2v), "--prompt", "a cat", *TINY[:-4], "--plan", "all:1@low",
                             "--out", str(tmp_path / "v.mp4")], capsys)
    _assert_one_line_error(status, err, "--plan 'all:1@low': ", "boundary")


def _truncate(path, keep_bytes):
    path.write_bytes(path.read_bytes()[:keep_bytes])


@pytest.mark.parametrize("keep", [-1, -5000, 100, 4], ids=["last byte", "tail", "inside header", "length only"])
def test_truncated_safetensors_are_found_before_loading(tiny_t2v, tmp_path, capsys, keep):
    folder = shutil.copytree(tiny_t2v, tmp_path / "ckpt")
    (weights,) = (folder / "transformer").glob("*.safetensors")
    _truncate(weights, keep)
    status, err = _run_main(["--model", str(folder), "--prompt", "a cat", *TINY, "--out", str(tmp_path / "o" / "v.mp4")],
                            capsys)
    _assert_one_line_error(status, err, str(weights), "cut short", "incomplete download")
    assert not (tmp_path / "o").exists()


def test_safetensors_problem_reads_only_the_header(tmp_path):
    from safetensors.numpy import save_file

    from pnp_kernels.cli_common.checkpoint import safetensors_problem

    rng = np.random.default_rng()
    path = tmp_path / "w.safetensors"
    save_file({"a": rng.random((3, 5), dtype=np.float32), "b": rng.random(7).astype(np.float16)}, path)
    assert safetensors_problem(path) is None
    size = path.stat().st_size
    _truncate(path, size - 1)
    assert f"need {size} bytes but the file has {size - 1}" in safetensors_problem(path)
    path.write_bytes((10**12).to_bytes(8, "little") + b"{}")
    assert "header claims" in safetensors_problem(path)
    path.write_bytes((5).to_bytes(8, "little") + b"[1,2]")
    assert "not a safetensors tensor table" in safetensors_problem(path)


def test_missing_shard_of_a_sharded_component(tiny_t2v, tmp_path, capsys):
    folder = shutil.copytree(tiny_t2v, tmp_path / "ckpt")
    index = {"metadata": {}, "weight_map": {"a": "diffusion_pytorch_model-00001-of-00002.safetensors",
                                            "b": "diffusion_pytorch_model-00002-of-00002.safetensors"}}
    (folder / "transformer" / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    status, err = _run_main(["--model", str(folder), "--prompt", "a cat", *TINY, "--out", str(tmp_path / "v.mp4")], capsys)
    _assert_one_line_error(status, err, "00002-of-00002", "incomplete download")


@pytest.mark.parametrize("how", ["library", "auto_map"])
def test_custom_code_is_refused_before_loading(tiny_t2v, tmp_path, capsys, how):
    folder = shutil.copytree(tiny_t2v, tmp_path / "ckpt")
    if how == "library":
        index = json.loads((folder / "model_index.json").read_text())
        index["transformer"] = ["my_transformer", "MyTransformer"]
        (folder / "model_index.json").write_text(json.dumps(index))
        (folder / "transformer" / "my_transformer.py").write_text("raise SystemExit('custom code ran')\n")
    else:
        config = folder / "text_encoder" / "config.json"
        config.write_text(json.dumps({**json.loads(config.read_text()), "auto_map": {"AutoModel": "x.Y"}}))
    status, err = _run_main(["--model", str(folder), "--prompt", "a cat", *TINY, "--out", str(tmp_path / "v.mp4")], capsys)
    _assert_one_line_error(status, err, "is custom code", "trust_remote_code")


def test_command_line_answers_without_importing_torch(tiny_t2v, tmp_path):
    code = (
        "import sys, pnp_kernels, pnp_kernels.cli as cli\n"
        "cli.build_parser()\n"
        "assert cli.main(['--steps', 'x']) == 2\n"
        f"assert cli.main(['--model', {str(tmp_path / 'none')!r}, '--prompt', 'a']) == 2\n"
        f"assert cli.main(['--model', {str(tiny_t2v)!r}, '--prompt', 'a', '--frames', '6']) == 2\n"
        "heavy = sorted(m for m in ('torch', 'numpy', 'diffusers', 'PIL') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "from pnp_kernels.cli.settings import Settings, resolve_settings\n"
        "from pnp_kernels.cli_common.checkpoint import detect_model\n"
        "assert callable(detect_model) and callable(resolve_settings) and Settings\n"
        "assert 'torch' not in sys.modules\n"
        "from pnp_kernels.cli_common.pipeline import generate, load_pipeline\n"
        "assert callable(load_pipeline) and callable(generate)\n"
        "assert 'torch' not in sys.modules\n"
        "assert pnp_kernels.PnPConfig().tau == 0.25 and 'torch' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("pnp-sample: error:") == 3


def test_package_names_load_on_first_use():
    import pnp_kernels
    from pnp_kernels import published, sampler

    assert set(pnp_kernels.__all__) <= set(dir(pnp_kernels))
    assert pnp_kernels.DEFAULT_PLAN is published.DEFAULT_PLAN and pnp_kernels.pnp_sample is sampler.pnp_sample
    with pytest.raises(AttributeError, match="no_such_name"):
        pnp_kernels.no_such_name


def test_sigma_grid_plan_needs_a_readable_scheduler(tiny_t2v, tmp_path, capsys):
    folder = shutil.copytree(tiny_t2v, tmp_path / "ckpt")
    (folder / "scheduler" / "scheduler_config.json").unlink()
    status, err = _run_main(["--model", str(folder), "--prompt", "a cat", *TINY[:-4], "--plan", "all:1",
                             "--out", str(tmp_path / "v.mp4")], capsys)
    _assert_one_line_error(status, err, "--model", "cannot read the scheduler configuration")


@pytest.mark.parametrize("module, prog", [("pnp_kernels.cli", "pnp-sample"), ("pnp_kernels.eval.cli", "pnp-eval"),
                                          ("pnp_kernels.info", "pnp-info")])
def test_every_command_answers_version(module, prog, capsys):
    import importlib

    import pnp_kernels

    with pytest.raises(SystemExit) as done:
        importlib.import_module(module).main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"{prog} {pnp_kernels.__version__}\n"
