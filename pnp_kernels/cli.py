"""``pnp-sample``: a prompt (and for I2V an image) in, an mp4 sampled with P&P refinement out.

Loads a Wan 2.1 / 2.2 checkpoint stored locally in diffusers format, detects which model it is from its
``model_index.json``, samples with ``pnp_kernels.wan`` and writes, next to ``--out``:

- ``NAME.mp4``                the refined video
- ``NAME.json``               every setting, the seed, versions, NFEs, per-step iterations, early
                              exits, certain fractions and timings
- ``NAME_baseline.mp4``       with --baseline: the unrefined video from the same seed,
  ``NAME_side_by_side.mp4``   and ``baseline | P&P`` with labels
- ``NAME_uncertainty.mp4``    with --save-uncertainty: each refined step's uncertainty over the video,
  ``NAME_uncertainty.png``    and a grid that summarises it

Every argument is checked before a model is loaded; a bad one gives a one-line error and exit status 2.
Files are written under temporary names and renamed at the very end, so a failed run leaves nothing
half-written. ``pnp-sample --demo`` runs the embedded toy demo, which needs no weights.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import secrets
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

from .config import PnPConfig, RefinePlan

PROG = "pnp-sample"
MAX_SEED = 2**63 - 1
DTYPES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16",
          "float32": "float32", "fp32": "float32"}


class UsageError(Exception):
    """A bad argument, model folder, image or output path: reported in one line, exit status 2."""


@dataclass(frozen=True)
class ModelKind:
    """One Wan variant: how it is recognised, whether it takes an image, and its published defaults."""

    name: str
    description: str
    image: str  # "none", "optional" (TI2V-5B: text- or image-to-video) or "required"
    two_experts: bool
    defaults: dict = field(default_factory=dict)


# Published defaults (SPEC §3): the Wan 2.1 scripts use 50 steps, plan 2-5:3,6-14:1, tau 0.25, guidance
# 5, 480x832, 81 frames at 16 fps; the Wan 2.2 A14B script 40 steps, plan 2-5:3,6-13:1, tau 0.2,
# guidance 4 / 3; the I2V script tau 0. TI2V-5B has no published P&P script: the T2V defaults apply.
_T2V = dict(steps=50, plan="2-5:3,6-14:1", tau=0.25, guidance=5.0, guidance_2=None,
            height=480, width=832, frames=81, fps=16)
_A14B = dict(_T2V, steps=40, plan="2-5:3,6-13:1", tau=0.2, guidance=4.0, guidance_2=3.0)
MODEL_KINDS = {
    kind.name: kind
    for kind in (
        ModelKind("t2v", "Wan 2.1 text-to-video", "none", False, _T2V),
        ModelKind("t2v-a14b", "Wan 2.2 A14B text-to-video (two experts)", "none", True, _A14B),
        ModelKind("ti2v-5b", "Wan 2.2 TI2V-5B text/image-to-video", "optional", False, _T2V),
        ModelKind("i2v", "Wan 2.1 image-to-video", "required", False, dict(_T2V, tau=0.0)),
        ModelKind("i2v-a14b", "Wan 2.2 A14B image-to-video (two experts)", "required", True, dict(_A14B, tau=0.0)),
    )
}


@dataclass(frozen=True)
class ModelInfo:
    """What the checkpoint folder says about itself (read before any weight is loaded)."""

    folder: Path
    kind: ModelKind
    size_multiple: int  # height and width must be multiples: VAE spatial factor x transformer patch
    temporal_factor: int  # frames must be temporal_factor * k + 1
    head_dim: int  # attention head size: some attention kernels have limits


# Components that are networks: a folder of theirs without a weight file is an incomplete download.
WEIGHTED_COMPONENTS = ("transformer", "transformer_2", "vae", "text_encoder", "image_encoder")
WEIGHT_FILES = ("*.safetensors", "*.bin")


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{what}: {path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"{what}: cannot read {path}: {error}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{what}: {path} does not hold a JSON object")
    return data


def _present(entry) -> bool:
    # model_index.json writes an absent component as [null, null].
    return isinstance(entry, list) and len(entry) == 2 and all(isinstance(part, str) for part in entry)


def detect_model(folder: str | Path) -> ModelInfo:
    """Recognise a diffusers-format Wan checkpoint from its model_index.json and component configs."""
    folder = Path(folder)
    what = f"--model {folder}"
    if not folder.is_dir():
        raise UsageError(f"{what}: not a directory" if folder.exists() else f"{what}: no such directory")
    index = _read_json(folder / "model_index.json", what)
    class_name = index.get("_class_name")
    if class_name not in ("WanPipeline", "WanImageToVideoPipeline"):
        raise UsageError(
            f"{what}: model_index.json names pipeline {class_name!r}; expected WanPipeline or WanImageToVideoPipeline"
        )
    two_experts = _present(index.get("transformer_2"))
    if index.get("expand_timesteps") is True:
        name = "ti2v-5b"
    elif class_name == "WanPipeline":
        name = "t2v-a14b" if two_experts else "t2v"
    else:
        name = "i2v-a14b" if two_experts else "i2v"
    required = ["transformer", "vae", "text_encoder", "tokenizer", "scheduler"]
    if name == "i2v":
        required += ["image_encoder", "image_processor"]
    for component in required:
        if not _present(index.get(component)):
            raise UsageError(f"{what}: model_index.json lists no {component!r} (a {MODEL_KINDS[name].description} needs one)")
    for component, entry in index.items():
        if not component.startswith("_") and _present(entry) and not (folder / component).is_dir():
            raise UsageError(f"{what}: model_index.json lists {component!r} but the folder {folder / component} is missing")
    for component in WEIGHTED_COMPONENTS:
        part = folder / component
        if _present(index.get(component)) and not any(any(part.glob(pattern)) for pattern in WEIGHT_FILES):
            raise UsageError(f"{what}: {part} holds no weights ({' / '.join(WEIGHT_FILES)}); an incomplete download?")
    if two_experts and not isinstance(index.get("boundary_ratio"), (int, float)):
        raise UsageError(f"{what}: a two-expert model needs a numeric boundary_ratio in model_index.json")
    vae = _read_json(folder / "vae" / "config.json", what)
    transformer = _read_json(folder / "transformer" / "config.json", what)
    try:
        spatial = int(vae.get("scale_factor_spatial") or 8)
        temporal = int(vae.get("scale_factor_temporal") or 4)
        patch = transformer.get("patch_size", [1, 2, 2])
        multiple = spatial * int(max(patch[1:]))
        head_dim = int(transformer.get("attention_head_dim", 128))
    except (TypeError, ValueError, IndexError):
        raise UsageError(f"{what}: vae or transformer config.json holds unexpected scale factors or patch size") from None
    return ModelInfo(folder, MODEL_KINDS[name], multiple, temporal, head_dim)


# ---------------------------------------------------------------------------------------------------
# Arguments


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument raises UsageError (one line) instead of printing the usage."""

    def error(self, message):
        raise UsageError(message)


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _real(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _epilog() -> str:
    lines = ["defaults per detected model:"]
    for kind in MODEL_KINDS.values():
        d = kind.defaults
        guidance = f"{d['guidance']:g}" + (f" / guidance-2 {d['guidance_2']:g}" if d["guidance_2"] is not None else "")
        lines.append(f"  {kind.description:<44} {d['steps']} steps, plan {d['plan']}, tau {d['tau']:g}, guidance {guidance}")
    lines += [
        "  every model: 480x832, 81 frames, 16 fps, seed 0, p-norm 1, certain-stop 0.999",
        "",
        "files written for --out NAME.mp4: NAME.mp4, NAME.json (settings, seed, versions, NFEs, iterations,",
        "early exits, certain fractions, timings); with --baseline NAME_baseline.mp4 and NAME_side_by_side.mp4;",
        "with --save-uncertainty NAME_uncertainty.mp4 and NAME_uncertainty.png.",
        "",
        "example:",
        '  pnp-sample --model ./Wan2.1-T2V-1.3B-Diffusers --prompt "A cat walks on the grass" \\',
        "      --baseline --save-uncertainty --out outputs/cat.mp4",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Sample a video from a local Wan checkpoint (diffusers format) with Predict-and-Perturb "
        "self-refinement (arXiv 2601.18577). Defaults left unset follow the published scripts for the "
        "detected model (Wan 2.1: 50 steps, plan 2-5:3,6-14:1, tau 0.25, guidance 5, 480x832, 81 frames, 16 fps).",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    model = parser.add_argument_group("model and prompt")
    model.add_argument("--model", type=Path, help="checkpoint folder in diffusers format (T2V, A14B, TI2V-5B or I2V)")
    model.add_argument("--prompt", help="text prompt")
    model.add_argument("--negative-prompt", default="", help="negative prompt (default: empty)")
    model.add_argument("--image", type=Path, help="conditioning image (I2V; optional for TI2V-5B)")
    model.add_argument("--demo", action="store_true", help="run the embedded toy demo (no weights); --out is a folder")

    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--steps", type=_integer, help="denoising steps")
    sampling.add_argument("--guidance", type=_real, help="classifier-free guidance scale (<= 1: no guidance)")
    sampling.add_argument("--guidance-2", type=_real, help="guidance of the low-noise expert (A14B only)")
    sampling.add_argument("--height", type=_integer, help="frame height in pixels")
    sampling.add_argument("--width", type=_integer, help="frame width in pixels")
    sampling.add_argument("--frames", type=_integer, help="number of frames (4k + 1)")
    sampling.add_argument("--fps", type=_integer, help="frames per second of the written video")
    sampling.add_argument("--seed", type=_integer, default=0, help="seed of the initial noise and of P&P (default 0)")

    refine = parser.add_argument_group("P&P refinement")
    refine.add_argument("--plan", help="refined steps and iterations, e.g. '2-5:3,6-14:1' ('none': no refinement)")
    refine.add_argument("--tau", type=_real, help="uncertainty threshold below which a region is certain")
    refine.add_argument("--p-norm", type=_integer, default=1, help="channel norm of the uncertainty: 1 or 2")
    refine.add_argument("--certain-stop", type=_real, default=0.999,
                        help="leave a step's iterations once this fraction is certain")
    refine.add_argument("--noise", choices=("generator", "philox"), default="generator",
                        help="perturbation noise: the seeded generator (published order) or counter-based philox")
    refine.add_argument("--backend", choices=("auto", "triton", "cuda", "torch"), default="auto",
                        help="implementation of the fused P&P update")

    runtime = parser.add_argument_group("runtime")
    runtime.add_argument("--attention", default="auto", help="attention backend: auto or a diffusers backend name")
    runtime.add_argument("--compile", action="store_true", help="torch.compile the transformer")
    runtime.add_argument("--no-cfg-batch", action="store_true",
                         help="run the conditional and unconditional passes one after the other (less memory)")
    runtime.add_argument("--dtype", choices=sorted(DTYPES), help="model dtype (default: bfloat16 on CUDA, float32 on CPU)")
    runtime.add_argument("--offload", action="store_true", help="diffusers model CPU offload (small GPUs)")
    runtime.add_argument("--device", help="torch device (default: cuda when available, else cpu)")

    output = parser.add_argument_group("output")
    output.add_argument("--out", type=Path, help="output mp4 (default pnp-sample.mp4; with --demo a folder, default pnp-demo)")
    output.add_argument("--baseline", action="store_true",
                        help="also sample without refinement (same seed) and write a side-by-side video")
    output.add_argument("--save-uncertainty", action="store_true",
                        help="write heat maps of each refined step's uncertainty (video and PNG grid)")
    return parser


@dataclass
class Settings:
    """Everything a run needs, validated."""

    model: ModelInfo
    prompt: str
    negative_prompt: str
    image_path: Path | None
    steps: int
    guidance: float
    guidance_2: float | None
    height: int
    width: int
    frames: int
    fps: int
    seed: int
    pnp: PnPConfig
    attention: str
    compile: bool
    cfg_batch: bool
    dtype: str
    offload: bool
    device: str
    outputs: dict[str, Path]
    baseline: bool
    save_uncertainty: bool

    def to_dict(self) -> dict:
        return {
            "model": str(self.model.folder), "model_kind": self.model.kind.name, "prompt": self.prompt,
            "negative_prompt": self.negative_prompt, "image": str(self.image_path) if self.image_path else None,
            "steps": self.steps, "guidance": self.guidance, "guidance_2": self.guidance_2,
            "height": self.height, "width": self.width, "frames": self.frames, "fps": self.fps, "seed": self.seed,
            "plan": str(self.pnp.plan), "tau": self.pnp.tau, "p_norm": self.pnp.p_norm,
            "certain_stop": self.pnp.certain_stop, "noise": self.pnp.noise, "backend": self.pnp.backend,
            "attention": self.attention, "compile": self.compile, "cfg_batch": self.cfg_batch, "dtype": self.dtype,
            "offload": self.offload, "device": self.device, "baseline": self.baseline,
            "save_uncertainty": self.save_uncertainty,
        }


def _check_range(flag: str, value, low, high=None) -> None:
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise UsageError(f"{flag} must be {bounds}, got {value}")


def _check_modules(names: Sequence[str], extra: str) -> None:
    missing = [name for name in names if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"missing package(s) {', '.join(missing)}: pip install 'pnp-kernels[{extra}]'")


def output_paths(out: Path) -> dict[str, Path]:
    """Every file a run can write, named after --out."""
    stem = out.with_suffix("")
    return {
        "video": out,
        "sidecar": out.with_suffix(".json"),
        "baseline": Path(f"{stem}_baseline.mp4"),
        "side_by_side": Path(f"{stem}_side_by_side.mp4"),
        "uncertainty_video": Path(f"{stem}_uncertainty.mp4"),
        "uncertainty_grid": Path(f"{stem}_uncertainty.png"),
    }


def check_output_folder(path: Path, flag: str = "--out") -> None:
    """Raise unless ``path`` can be created: its nearest existing ancestor is a directory in which a
    file can really be made (a probe file, removed at once; permission bits alone miss read-only
    mounts and pseudo file systems)."""
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a directory; give a file name such as {path / 'video.mp4'}")
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"{flag} {path}: {ancestor} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as error:
        raise UsageError(f"{flag} {path}: cannot write in {ancestor} ({error.strerror or error})") from None


def _check_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")  # forces a full decode: a truncated file fails here, not later
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise UsageError(f"--image {path}: cannot read it as an image ({error})") from None


def _resolve_device(requested: str | None, offload: bool) -> str:
    import torch

    if requested is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise UsageError(f"--device {requested!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {requested}: CUDA is not available")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"--device {requested}: only {torch.cuda.device_count()} CUDA device(s)")
    if offload and device.type != "cuda":
        raise UsageError(f"--offload moves models between the CPU and a CUDA device; --device is {requested}")
    return str(device)


def _check_attention(requested: str, device: str, dtype: str, head_dim: int) -> str:
    """A backend asked for by name must exist and be able to run here (checked without loading the model)."""
    import torch

    from .wan.attention import AttentionInputs, choose_attention_backend, known_backend_names

    name = requested.strip().lower()
    if name == "auto":
        return name
    if name not in known_backend_names():
        raise UsageError(
            f"--attention {requested!r} is not 'auto' or a diffusers attention backend "
            "(e.g. native, flash, _flash_3, _native_cudnn, xformers)"
        )
    try:
        choose_attention_backend(name, AttentionInputs(torch.device(device), getattr(torch, dtype), head_dim))
    except ValueError as error:
        raise UsageError(f"--attention: {error}") from None
    return name


def resolve_settings(args: argparse.Namespace) -> tuple[Settings, object]:
    """Check every argument and fill in the model's defaults; returns the settings and the loaded
    conditioning image (or None). Nothing is loaded or written here except the image."""
    if args.model is None:
        raise UsageError("--model is required (a Wan checkpoint folder in diffusers format), or use --demo")
    if not args.prompt or not args.prompt.strip():
        raise UsageError("--prompt is required and must not be empty")
    info = detect_model(args.model)
    kind = info.kind
    defaults = kind.defaults

    def pick(name):
        value = getattr(args, name)
        return defaults[name] if value is None else value

    steps, guidance, height, width = pick("steps"), pick("guidance"), pick("height"), pick("width")
    frames, fps = pick("frames"), pick("fps")
    _check_range("--steps", steps, 1)
    _check_range("--guidance", guidance, 0.0)
    guidance_2 = args.guidance_2
    if kind.two_experts:
        guidance_2 = defaults["guidance_2"] if guidance_2 is None else guidance_2
        _check_range("--guidance-2", guidance_2, 0.0)
    elif guidance_2 is not None:
        raise UsageError(f"--guidance-2 is for two-expert (A14B) models; {info.folder} is a {kind.description}")
    for flag, value in (("--height", height), ("--width", width)):
        if value < 1 or value % info.size_multiple:
            raise UsageError(f"{flag} must be a positive multiple of {info.size_multiple} for this model, got {value}")
    if frames < 1 or (frames - 1) % info.temporal_factor:
        raise UsageError(f"--frames must be {info.temporal_factor}k + 1 (e.g. 5, 81), got {frames}")
    _check_range("--fps", fps, 1)
    _check_range("--seed", args.seed, 0, MAX_SEED)
    plan_text = pick("plan")
    try:
        plan = RefinePlan.parse(plan_text)
        plan.validate(steps)
        pnp = PnPConfig(plan=plan, tau=pick("tau"), p_norm=args.p_norm, certain_stop=args.certain_stop,
                        noise=args.noise, backend=args.backend)
    except (ValueError, TypeError) as error:
        hint = "" if args.plan is not None else f" (the default plan of a {defaults['steps']}-step run: set --plan)"
        raise UsageError(f"invalid P&P setting: {error}{hint}") from None
    if args.save_uncertainty and not pnp.plan:
        raise UsageError("--save-uncertainty needs refined steps, but the plan is empty")

    if kind.image == "required" and args.image is None:
        raise UsageError(f"--image is required: {info.folder} is a {kind.description} model")
    if kind.image == "none" and args.image is not None:
        raise UsageError(f"--image is for image-to-video models; {info.folder} is a {kind.description} model")

    out = Path("pnp-sample.mp4") if args.out is None else args.out
    if out.suffix.lower() != ".mp4":
        raise UsageError(f"--out {out}: the video is written as mp4; give a name ending in .mp4")
    check_output_folder(out)  # every other output goes into the same folder

    _check_modules(["diffusers", "transformers", "accelerate"], "wan")
    _check_modules(["imageio", "imageio_ffmpeg"] + (["matplotlib"] if args.save_uncertainty else []), "video")
    device = _resolve_device(args.device, args.offload)
    dtype = DTYPES[args.dtype] if args.dtype else ("bfloat16" if device.startswith("cuda") else "float32")
    attention = _check_attention(args.attention, device, dtype, info.head_dim)
    image = _check_image(args.image) if args.image is not None else None
    settings = Settings(
        model=info, prompt=args.prompt, negative_prompt=args.negative_prompt, image_path=args.image,
        steps=steps, guidance=guidance, guidance_2=guidance_2, height=height, width=width, frames=frames, fps=fps,
        seed=args.seed, pnp=pnp, attention=attention, compile=args.compile, cfg_batch=not args.no_cfg_batch,
        dtype=dtype, offload=args.offload, device=device, outputs=output_paths(out), baseline=args.baseline,
        save_uncertainty=args.save_uncertainty,
    )
    return settings, image


# ---------------------------------------------------------------------------------------------------
# Running


class StagedFiles:
    """Files written under temporary names in their target folders and renamed into place together
    by ``commit``; ``discard`` removes whatever was written, so a failed run leaves nothing behind."""

    def __init__(self):
        self.staged: list[tuple[Path, Path]] = []
        self.created_folders: list[Path] = []

    def path_for(self, final: Path) -> Path:
        folder = final.absolute().parent
        missing = []
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for new in reversed(missing):
            new.mkdir()
            self.created_folders.append(new)
        # Not created here (mkstemp would make it private, 0600): the writer creates it with the
        # usual permissions. The real suffix stays last: imageio and matplotlib pick the format by it.
        temporary = final.absolute().parent / f".{final.stem}.{secrets.token_hex(6)}.partial{final.suffix}"
        self.staged.append((temporary, final))
        return temporary

    def commit(self) -> None:
        for temporary, final in self.staged:
            os.replace(temporary, final)
        self.staged.clear()
        self.created_folders.clear()

    def discard(self) -> None:
        for temporary, _ in self.staged:
            temporary.unlink(missing_ok=True)
        for folder in reversed(self.created_folders):
            try:
                folder.rmdir()
            except OSError:  # someone else put something there meanwhile: leave it
                pass
        self.staged.clear()
        self.created_folders.clear()


def versions() -> dict:
    from importlib import metadata

    import torch

    found = {"python": platform.python_version(), "platform": platform.platform()}
    for package in ("pnp-kernels", "torch", "diffusers", "transformers", "accelerate", "triton"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    found["cuda"] = torch.version.cuda
    found["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return found


def load_pipeline(settings: Settings, with_image: bool):
    import torch

    from .wan import WanImageToVideoPnPPipeline, WanPnPPipeline

    pipeline_class = WanImageToVideoPnPPipeline if with_image else WanPnPPipeline
    with warnings.catch_warnings():
        # Newer diffusers renamed torch_dtype to dtype; the old name works on every supported version.
        warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
        pipe = pipeline_class.from_pretrained(settings.model.folder, torch_dtype=getattr(torch, settings.dtype))
    if settings.offload:
        pipe.enable_model_cpu_offload(device=settings.device)
    else:
        pipe.to(settings.device)
    return pipe


def generate(pipe, settings: Settings, image, pnp: PnPConfig, capture_uncertainty: bool):
    """One pipeline call; returns (output, seconds). The seed fixes the initial noise and P&P's noise."""
    import torch

    generator = torch.Generator(device=settings.device).manual_seed(settings.seed)
    call = dict(
        prompt=settings.prompt, negative_prompt=settings.negative_prompt, height=settings.height,
        width=settings.width, num_frames=settings.frames, num_inference_steps=settings.steps,
        guidance_scale=settings.guidance, generator=generator, output_type="np", pnp=pnp,
        pnp_seed=settings.seed if pnp.noise == "philox" else None, cfg_batch=settings.cfg_batch,
        attention=settings.attention, compile=settings.compile, capture_uncertainty=capture_uncertainty,
    )
    if settings.guidance_2 is not None:
        call["guidance_scale_2"] = settings.guidance_2
    if image is not None:
        call["image"] = image
    started = time.perf_counter()
    output = pipe(**call)
    return output, time.perf_counter() - started


def _run_record(output, seconds: float) -> dict:
    stats = output.pnp_stats
    return {
        "time_s": seconds, "attention_backend": output.attention_backend,
        "iterations_per_step": stats.iterations_per_step, **stats.to_dict(),
    }


def run(settings: Settings, image, argv: Sequence[str]) -> dict:
    """Sample, write every output file, and return the sidecar record."""
    from . import video

    timings = {}
    started = time.perf_counter()
    pipe = load_pipeline(settings, with_image=image is not None)
    timings["load_s"] = time.perf_counter() - started
    refined, timings["refined_s"] = generate(pipe, settings, image, settings.pnp, settings.save_uncertainty)
    frames = refined.frames[0]
    record = {
        "command": [PROG, *argv], "model": {"folder": str(settings.model.folder), "kind": settings.model.kind.name,
                                            "description": settings.model.kind.description},
        "settings": settings.to_dict(), "seed": settings.seed, "versions": versions(),
        "refined": _run_record(refined, timings["refined_s"]),
    }
    baseline_frames = None
    if settings.baseline:
        unrefined = replace(settings.pnp, plan=RefinePlan(()))
        baseline, timings["baseline_s"] = generate(pipe, settings, image, unrefined, capture_uncertainty=False)
        baseline_frames = baseline.frames[0]
        record["baseline"] = _run_record(baseline, timings["baseline_s"])

    written = {}
    staged = StagedFiles()
    write_started = time.perf_counter()
    try:
        paths = settings.outputs
        video.export_video(frames, staged.path_for(paths["video"]), settings.fps)
        written["video"] = paths["video"]
        if baseline_frames is not None:
            labels = (f"baseline {record['baseline']['nfe']} NFE", f"P&P {record['refined']['nfe']} NFE")
            video.export_video(baseline_frames, staged.path_for(paths["baseline"]), settings.fps)
            chunks = (video.side_by_side(baseline_frames[i : i + 16], frames[i : i + 16], labels)
                      for i in range(0, len(frames), 16))
            video.stream_video(chunks, staged.path_for(paths["side_by_side"]), settings.fps)
            written.update(baseline=paths["baseline"], side_by_side=paths["side_by_side"])
        if settings.save_uncertainty:
            maps = refined.pnp_stats.uncertainty_maps
            video.stream_video(video.uncertainty_segments(frames, maps, settings.pnp.tau),
                               staged.path_for(paths["uncertainty_video"]), settings.fps)
            video.uncertainty_grid(frames, maps, settings.pnp.tau, staged.path_for(paths["uncertainty_grid"]))
            written.update(uncertainty_video=paths["uncertainty_video"], uncertainty_grid=paths["uncertainty_grid"])
        timings["write_s"] = time.perf_counter() - write_started
        timings["total_s"] = time.perf_counter() - started
        written["sidecar"] = paths["sidecar"]
        record["outputs"] = {name: str(path) for name, path in written.items()}
        record["timings"] = timings
        staged.path_for(paths["sidecar"]).write_text(json.dumps(record, indent=2) + "\n")
        staged.commit()
    finally:
        staged.discard()  # no-op after commit
    return record


def summary(record: dict) -> str:
    settings, refined = record["settings"], record["refined"]
    lines = [
        f"{record['model']['description']}: {settings['frames']} frames {settings['height']}x{settings['width']}, "
        f"{settings['steps']} steps, plan {settings['plan']}, seed {settings['seed']}, attention {refined['attention_backend']}",
        f"refined: {refined['nfe']} NFE ({refined['baseline_nfe']} without refinement), "
        f"{refined['early_exits']} early exits, {refined['time_s']:.1f}s",
    ]
    final_fractions = [f"{step['step']}:{step['certain_fractions'][-1][0]:.2f}"
                       for step in refined["steps"] if step["certain_fractions"]]
    if final_fractions:
        lines.append(f"certain fraction at the end of each refined step: {' '.join(final_fractions)}")
    if "baseline" in record:
        lines.append(f"baseline: {record['baseline']['nfe']} NFE, {record['baseline']['time_s']:.1f}s")
    lines += [f"wrote {name}: {path}" for name, path in record["outputs"].items()]
    return "\n".join(lines)


def run_demo(out: Path | None, seed: int) -> int:
    out = Path("pnp-demo") if out is None else out
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: with --demo, --out is a folder")
    check_output_folder(out / "demo.png")
    _check_range("--seed", seed, 0, MAX_SEED)
    try:
        from .toy.demo import run_demo as toy_demo
    except ImportError as error:
        raise UsageError(f"the embedded demo is not available: {error}") from None
    table, png = toy_demo(out, seed=seed)
    print(table)
    print(f"wrote {png}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pnp-sample``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        if args.demo:
            return run_demo(args.out, args.seed)
        settings, image = resolve_settings(args)
    except UsageError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    try:
        record = run(settings, image, argv)
    except KeyboardInterrupt:  # run() has already removed its partial files
        print(f"{PROG}: interrupted; nothing was written", file=sys.stderr)
        return 130
    print(summary(record))
    return 0
