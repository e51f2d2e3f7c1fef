"""Every argument of a sampling run checked and completed with the model's defaults, before any weight
loads. The cheap checks (numbers, plan, model folder, output paths) come first and need no torch."""
from __future__ import annotations

import argparse
import importlib.util
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from ..config import MAX_STEPS, P_NORMS, PnPConfig, RefinePlan
from ..validators import check_choice, check_int, check_real, quoted
from ..cli_common.errors import UsageError, usage_errors
from ..cli_common.options import DTYPES, MAX_SEED, check_backend
from .models import ModelInfo, detect_model
from .outputs import check_not_overwriting, check_output_folder, output_paths

DEVICE_TYPES = ("cpu", "cuda")


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
    dtype: str
    offload: bool
    device: str
    outputs: dict[str, Path]
    baseline: bool
    save_uncertainty: bool
    overwrite: bool  # replace files of an earlier run (checked again when the run claims its outputs)

    def to_dict(self) -> dict:
        return {
            "model": str(self.model.folder), "model_kind": self.model.kind.name, "prompt": self.prompt,
            "negative_prompt": self.negative_prompt, "image": str(self.image_path) if self.image_path else None,
            "steps": self.steps, "guidance": self.guidance, "guidance_2": self.guidance_2,
            "height": self.height, "width": self.width, "frames": self.frames, "fps": self.fps, "seed": self.seed,
            "plan": str(self.pnp.plan), "tau": self.pnp.tau, "p_norm": self.pnp.p_norm,
            "certain_stop": self.pnp.certain_stop, "noise": self.pnp.noise, "backend": self.pnp.backend,
            "attention": self.attention, "compile": self.compile, "dtype": self.dtype,
            "offload": self.offload, "device": self.device, "baseline": self.baseline,
            "save_uncertainty": self.save_uncertainty,
        }


def run_files(outputs: dict[str, Path], baseline: bool, save_uncertainty: bool) -> list[Path]:
    """Which of ``output_paths`` a run writes."""
    names = ["video", "sidecar"]
    names += ["baseline", "side_by_side"] if baseline else []
    names += ["uncertainty_video", "uncertainty_grid"] if save_uncertainty else []
    return [outputs[name] for name in names]


def parse_plan(typed: str | None, default: RefinePlan, steps: int, default_steps: int) -> RefinePlan:
    """The plan the user typed (quoted back in any error), or the model's default plan. A plan of step
    indices is checked against the run's step count here; one that depends on the sigma grid
    (fractions, sigma ranges, one expert, a preset) is resolved by ``resolve_plan`` later."""
    try:
        plan = default if typed is None else RefinePlan.parse(typed)
        if plan.is_resolved:
            plan.validate(steps)
    except (TypeError, ValueError) as error:
        if typed is not None:
            raise UsageError(f"--plan {quoted(typed)}: {error}") from None
        raise UsageError(f"the default plan {str(default)!r} (of a {default_steps}-step run) does not fit "
                         f"--steps {steps}: {error}; set --plan (--help lists plans that fit any step count)") from None
    return plan


def resolve_plan(plan: RefinePlan, typed: str, info: ModelInfo, steps: int) -> RefinePlan:
    """The step ranges a sigma-grid plan means for this run: the grid is the one the pipeline will use,
    from the checkpoint's scheduler configuration (no weights are read)."""
    import diffusers

    scheduler_class = getattr(diffusers, info.scheduler_class, None)
    if scheduler_class is None or not hasattr(scheduler_class, "set_timesteps"):
        raise UsageError(f"--model {info.folder}: unknown scheduler {info.scheduler_class!r} in model_index.json")
    try:
        scheduler = scheduler_class.from_pretrained(info.folder, subfolder="scheduler")
    except (OSError, ValueError) as error:
        raise UsageError(f"--model {info.folder}: cannot read the scheduler configuration ({error})") from None
    scheduler.set_timesteps(steps)
    try:
        return plan.resolve(scheduler.sigmas, boundary_sigma=info.boundary_ratio)
    except ValueError as error:
        raise UsageError(f"--plan {quoted(typed)}: {error}") from None


def _check_modules(names: Sequence[str], extra: str) -> None:
    missing = [name for name in names if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"missing package(s) {', '.join(missing)}: pip install 'pnp-kernels[{extra}]'")


def _check_image(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")  # forces a full decode: a truncated file fails here, not later
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise UsageError(f"--image {path}: cannot read it as an image ({error})") from None


def _resolve_device(requested: str | None, offload: bool) -> str:
    import torch

    try:
        device = torch.device(requested or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        raise UsageError(f"--device {quoted(requested)} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type not in DEVICE_TYPES:
        raise UsageError(f"--device {requested}: pnp-sample runs on {' or '.join(DEVICE_TYPES)}, not {device.type}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {requested}: CUDA is not available")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UsageError(f"--device {requested}: only {torch.cuda.device_count()} CUDA device(s)")
    if offload and device.type != "cuda":
        where = f"--device is {requested}" if requested else "no CUDA device is available"
        raise UsageError(f"--offload moves models between the CPU and a CUDA device; {where}")
    return str(device)


def _check_attention(requested: str, device: str, dtype: str, head_dim: int) -> str:
    """A backend asked for by name must exist and be able to run here (checked without loading the model)."""
    name = requested.strip().lower()
    if name == "auto":
        return name
    import torch

    from ..wan.attention import AttentionInputs, choose_attention_backend, known_backend_names

    if name not in known_backend_names():
        raise UsageError(
            f"--attention {quoted(requested)} is not 'auto' or a diffusers attention backend "
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
    defaults = kind.defaults_for(with_image=args.image is not None)

    def pick(name):
        value = getattr(args, name)
        return getattr(defaults, name) if value is None else value

    with usage_errors():
        steps = check_int("--steps", pick("steps"), low=1, high=MAX_STEPS)
        guidance = check_real("--guidance", pick("guidance"), low=0.0)
        height, width = pick("height"), pick("width")
        frames = pick("frames")
        fps = check_int("--fps", pick("fps"), low=1)
        seed = check_int("--seed", args.seed, low=0, high=MAX_SEED)
        tau = check_real("--tau", pick("tau"), low=0.0)
        p_norm = check_choice("--p-norm", args.p_norm, P_NORMS)
        certain_stop = check_real("--certain-stop", args.certain_stop, low=0.0, high=1.0, low_open=True)
        guidance_2 = args.guidance_2
        if kind.two_experts:
            guidance_2 = check_real("--guidance-2", pick("guidance_2"), low=0.0)
    if guidance_2 is not None and not kind.two_experts:
        raise UsageError(f"--guidance-2 is for two-expert (A14B) models; {info.folder} is a {kind.description}")
    for flag, value in (("--height", height), ("--width", width)):
        if value < 1 or value % info.size_multiple:
            raise UsageError(f"{flag} must be a positive multiple of {info.size_multiple} for this model, got {value}")
    if frames < 1 or (frames - 1) % info.temporal_factor:
        raise UsageError(f"--frames must be {info.temporal_factor}k + 1 (e.g. 5, 81), got {frames}")
    plan = parse_plan(args.plan, defaults.plan, steps, defaults.steps)
    pnp = PnPConfig(plan=plan, tau=tau, p_norm=p_norm, certain_stop=certain_stop, noise=args.noise, backend=args.backend)

    if kind.image == "required" and args.image is None:
        raise UsageError(f"--image is required: {info.folder} is a {kind.description} model")
    if kind.image == "none" and args.image is not None:
        raise UsageError(f"--image is for image-to-video models; {info.folder} is a {kind.description} model")

    out = Path("pnp-sample.mp4") if args.out is None else args.out
    if out.suffix.lower() != ".mp4":
        raise UsageError(f"--out {out}: the video is written as mp4; give a name ending in .mp4")
    check_output_folder(out)  # every other output goes into the same folder
    outputs = output_paths(out)
    if not args.overwrite:
        check_not_overwriting(run_files(outputs, args.baseline, args.save_uncertainty))

    _check_modules(["diffusers", "transformers", "accelerate"], "wan")
    if not plan.is_resolved:
        pnp = replace(pnp, plan=resolve_plan(plan, args.plan or str(plan), info, steps))
    if args.save_uncertainty and not pnp.plan:
        raise UsageError("--save-uncertainty needs refined steps, but the plan refines none")
    _check_modules(["imageio", "imageio_ffmpeg"] + (["matplotlib"] if args.save_uncertainty else []), "video")
    device = _resolve_device(args.device, args.offload)
    dtype = DTYPES[args.dtype] if args.dtype else ("bfloat16" if device.startswith("cuda") else "float32")
    attention = _check_attention(args.attention, device, dtype, info.head_dim)
    check_backend(args.backend, device, dtype, info.latent_channels)
    image = _check_image(args.image) if args.image is not None else None
    settings = Settings(
        model=info, prompt=args.prompt, negative_prompt=pick("negative_prompt"), image_path=args.image,
        steps=steps, guidance=guidance, guidance_2=guidance_2, height=height, width=width, frames=frames, fps=fps,
        seed=seed, pnp=pnp, attention=attention, compile=args.compile,
        dtype=dtype, offload=args.offload, device=device, outputs=outputs, baseline=args.baseline,
        save_uncertainty=args.save_uncertainty, overwrite=args.overwrite,
    )
    return settings, image
