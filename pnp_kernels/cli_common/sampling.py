"""The sampling options of a Wan checkpoint checked and completed with the detected model's published
defaults, before any weight loads: what ``pnp-sample`` runs and what ``pnp-eval`` compares. The cheap
checks (numbers, plan, model folder) come first and need no torch; then the packages, a plan on the
sigma grid, the device, dtype, attention and backend, and the conditioning image."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

from ..config import MAX_STEPS, P_NORMS, PnPConfig, RefinePlan
from ..validators import check_choice, check_int, check_real, quoted
from .checkpoint import ModelInfo, detect_model
from .errors import UsageError, usage_errors
from .options import DTYPES, MAX_SEED, check_backend

DEVICE_TYPES = ("cpu", "cuda")
WAN_PACKAGES = ("diffusers", "transformers", "accelerate")
VIDEO_PACKAGES = ("imageio", "imageio_ffmpeg")


@dataclass(frozen=True)
class SamplingOptions:
    """The sampling options as given on a command line, named as its flags (None: the detected model's
    published default; for ``p_norm``, ``certain_stop``, ``noise`` and ``backend``: ``PnPConfig``'s)."""

    model: Path
    prompt: str
    negative_prompt: str | None = None
    image: Path | None = None
    steps: int | None = None
    guidance: float | None = None
    guidance_2: float | None = None
    height: int | None = None
    width: int | None = None
    frames: int | None = None
    fps: int | None = None
    seed: int = 0
    plan: str | None = None
    tau: float | None = None
    p_norm: int | None = None
    certain_stop: float | None = None
    noise: str | None = None
    backend: str | None = None
    attention: str = "auto"
    compile: bool = False
    dtype: str | None = None
    offload: bool = False
    device: str | None = None


@dataclass(frozen=True)
class SamplingSettings:
    """Everything one sample of a Wan checkpoint needs, validated."""

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

    def to_dict(self) -> dict:
        return {
            "model": str(self.model.folder), "model_kind": self.model.kind.name, "prompt": self.prompt,
            "negative_prompt": self.negative_prompt, "image": str(self.image_path) if self.image_path else None,
            "steps": self.steps, "guidance": self.guidance, "guidance_2": self.guidance_2,
            "height": self.height, "width": self.width, "frames": self.frames, "fps": self.fps, "seed": self.seed,
            "plan": str(self.pnp.plan), "tau": self.pnp.tau, "p_norm": self.pnp.p_norm,
            "certain_stop": self.pnp.certain_stop, "noise": self.pnp.noise, "backend": self.pnp.backend,
            "attention": self.attention, "compile": self.compile, "dtype": self.dtype,
            "offload": self.offload, "device": self.device,
        }


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


def check_packages(names: Sequence[str], extra: str) -> None:
    """The packages of the install extra ``extra`` are installed (found without importing them)."""
    missing = [name for name in names if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"missing package(s) {', '.join(missing)}: pip install 'pnp-kernels[{extra}]'")


def _read_image(path: Path):
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


def _checked_numbers(options: SamplingOptions, info: ModelInfo) -> dict:
    """The numeric options, the plan and the image's presence checked against the model and completed
    with its defaults, without torch: ``SamplingSettings``' fields from ``negative_prompt`` to ``pnp``."""
    kind = info.kind
    defaults = kind.defaults_for(with_image=options.image is not None)

    def pick(name):
        value = getattr(options, name)
        return getattr(defaults, name) if value is None else value

    with usage_errors():
        steps = check_int("--steps", pick("steps"), low=1, high=MAX_STEPS)
        numbers = dict(steps=steps, guidance=check_real("--guidance", pick("guidance"), low=0.0),
                       height=pick("height"), width=pick("width"), frames=pick("frames"),
                       fps=check_int("--fps", pick("fps"), low=1),
                       seed=check_int("--seed", options.seed, low=0, high=MAX_SEED))
        refine = {"tau": check_real("--tau", pick("tau"), low=0.0)}
        if options.p_norm is not None:
            refine["p_norm"] = check_choice("--p-norm", options.p_norm, P_NORMS)
        if options.certain_stop is not None:
            refine["certain_stop"] = check_real("--certain-stop", options.certain_stop, low=0.0, high=1.0,
                                                low_open=True)
        guidance_2 = check_real("--guidance-2", pick("guidance_2"), low=0.0) if kind.two_experts else options.guidance_2
    if guidance_2 is not None and not kind.two_experts:
        raise UsageError(f"--guidance-2 is for two-expert (A14B) models; {info.folder} is a {kind.description}")
    for flag in ("--height", "--width"):
        value = numbers[flag[2:]]
        if value < 1 or value % info.size_multiple:
            raise UsageError(f"{flag} must be a positive multiple of {info.size_multiple} for this model, got {value}")
    if numbers["frames"] < 1 or (numbers["frames"] - 1) % info.temporal_factor:
        raise UsageError(f"--frames must be {info.temporal_factor}k + 1 (e.g. 5, 81), got {numbers['frames']}")
    plan = parse_plan(options.plan, defaults.plan, steps, defaults.steps)
    given = {name: getattr(options, name) for name in ("noise", "backend") if getattr(options, name) is not None}
    pnp = PnPConfig(plan=plan, **refine, **given)
    if kind.image == "required" and options.image is None:
        raise UsageError(f"--image is required: {info.folder} is a {kind.description} model")
    if kind.image == "none" and options.image is not None:
        raise UsageError(f"--image is for image-to-video models; {info.folder} is a {kind.description} model")
    return dict(negative_prompt=pick("negative_prompt"), **numbers, guidance_2=guidance_2, pnp=pnp)


def resolve_sampling(options: SamplingOptions, before_loading: Callable[[], None] | None = None,
                     extra_packages: Sequence[str] = ()) -> tuple[SamplingSettings, object]:
    """Check every sampling option and fill in the model's defaults; returns the settings and the loaded
    conditioning image (or None). Nothing is loaded or written here except the image.

    before_loading: a caller's own cheap checks (pnp-sample's output paths), run once the options are
        checked and before any package is looked for or torch imported.
    extra_packages: packages of the ``video`` extra the caller needs besides imageio."""
    info = detect_model(options.model)
    checked = _checked_numbers(options, info)
    if before_loading is not None:
        before_loading()
    check_packages(WAN_PACKAGES, "wan")
    pnp = checked.pop("pnp")
    if not pnp.plan.is_resolved:
        pnp = replace(pnp, plan=resolve_plan(pnp.plan, options.plan or str(pnp.plan), info, checked["steps"]))
    check_packages([*VIDEO_PACKAGES, *extra_packages], "video")
    device = _resolve_device(options.device, options.offload)
    dtype = DTYPES[options.dtype] if options.dtype else ("bfloat16" if device.startswith("cuda") else "float32")
    attention = _check_attention(options.attention, device, dtype, info.head_dim)
    check_backend(pnp.backend, device, dtype, info.latent_channels)
    image = _read_image(options.image) if options.image is not None else None
    settings = SamplingSettings(model=info, prompt=options.prompt, image_path=options.image, **checked, pnp=pnp,
                                attention=attention, compile=options.compile, dtype=dtype, offload=options.offload,
                                device=device)
    return settings, image
