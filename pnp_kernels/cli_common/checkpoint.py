"""Which Wan model a checkpoint folder holds, which published defaults it takes, and whether the download is whole.

Everything here reads small JSON files and file headers only: no weight is loaded and torch is not
imported, so a wrong or incomplete folder is reported in one line before anything slow starts.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from ..cli_common.errors import UsageError
from ..published import WAN21_I2V, WAN21_T2V, WAN22_I2V, WAN22_T2V, Defaults


@dataclass(frozen=True)
class ModelKind:
    """One Wan variant: how it is recognised, whether it takes an image, and its published defaults."""

    name: str
    description: str
    image: str  # "none", "optional" (TI2V-5B: text- or image-to-video) or "required"
    two_experts: bool
    defaults: Defaults
    image_defaults: Defaults | None = None  # where they differ when an image is given (TI2V-5B)

    def defaults_for(self, with_image: bool) -> Defaults:
        return self.image_defaults if with_image and self.image_defaults is not None else self.defaults


MODEL_KINDS = {
    kind.name: kind
    for kind in (
        ModelKind("t2v", "Wan 2.1 text-to-video", "none", False, WAN21_T2V),
        ModelKind("t2v-a14b", "Wan 2.2 A14B text-to-video (two experts)", "none", True, WAN22_T2V),
        # No published P&P script for TI2V-5B: the Wan 2.1 defaults apply, image-to-video's with an image.
        ModelKind("ti2v-5b", "Wan 2.2 TI2V-5B text/image-to-video", "optional", False, WAN21_T2V, WAN21_I2V),
        ModelKind("i2v", "Wan 2.1 image-to-video", "required", False, WAN21_I2V),
        ModelKind("i2v-a14b", "Wan 2.2 A14B image-to-video (two experts)", "required", True, WAN22_I2V),
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
    latent_channels: int = 16  # 16 for Wan 2.1 and A14B, 48 for TI2V-5B
    scheduler_class: str = "UniPCMultistepScheduler"  # the diffusers class named in model_index.json
    boundary_ratio: float | None = None  # two experts: the high-noise one runs while sigma >= this
    heads: int = 40  # attention heads: Ulysses context parallelism splits them over the ranks


# Components that are networks: a folder of theirs without a weight file is an incomplete download.
WEIGHTED_COMPONENTS = ("transformer", "transformer_2", "vae", "text_encoder", "image_encoder")
WEIGHT_FILES = ("*.safetensors", "*.bin")
# Libraries whose classes a component may name; anything else is code shipped with the checkpoint.
COMPONENT_LIBRARIES = ("diffusers", "transformers")
MAX_SAFETENSORS_HEADER = 100 * 2**20  # the safetensors format's own limit


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


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole safetensors file, or None. The file starts with the byte length of
    a JSON header that declares each tensor's byte range; a cut-off download ends before the last."""
    size = path.stat().st_size
    with path.open("rb") as file:
        head = file.read(8)
        if len(head) < 8:
            return f"it has {size} bytes, fewer than a safetensors header"
        (header_size,) = struct.unpack("<Q", head)
        if header_size > min(MAX_SAFETENSORS_HEADER, size - 8):
            return f"its header claims {header_size} bytes but the file has {size}"
        try:
            header = json.loads(file.read(header_size))
            ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
            data_size = max(ends, default=0)
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, TypeError, IndexError):
            return "its header is not a safetensors tensor table"
    needed = 8 + header_size + data_size
    if needed > size:
        return f"its tensors need {needed} bytes but the file has {size}"
    return None


def _check_weights(part: Path, what: str) -> None:
    """A component folder holds weights, every shard its index lists, and no truncated safetensors."""
    if not any(any(part.glob(pattern)) for pattern in WEIGHT_FILES):
        raise UsageError(f"{what}: {part} holds no weights ({' / '.join(WEIGHT_FILES)}); an incomplete download?")
    for index in part.glob("*.index.json"):
        shards = set(_read_json(index, what).get("weight_map", {}).values())
        missing = sorted(shard for shard in shards if not (part / shard).is_file())
        if missing:
            raise UsageError(f"{what}: {index.name} lists {', '.join(missing)}, missing from {part}; an incomplete download?")
    for weights in sorted(part.glob("*.safetensors")):
        problem = safetensors_problem(weights)
        if problem:
            raise UsageError(f"{what}: {weights} is cut short ({problem}); an incomplete download?")


def _check_no_custom_code(folder: Path, component: str, entry: list, what: str) -> None:
    """Refuse a component that would need trust_remote_code: pnp-sample never runs a checkpoint's code."""
    library, class_name = entry
    refusal = f"{what}: component {component!r} is custom code"
    if library not in COMPONENT_LIBRARIES:
        raise UsageError(f"{refusal} ({library}.{class_name}); pnp-sample loads only {' and '.join(COMPONENT_LIBRARIES)} "
                         "classes and never runs code shipped with a checkpoint (trust_remote_code)")
    for name in ("config.json", "tokenizer_config.json"):
        config = folder / component / name
        if config.is_file() and "auto_map" in _read_json(config, what):
            raise UsageError(f"{refusal} ({config} has an auto_map); pnp-sample never runs code shipped with a "
                             "checkpoint (trust_remote_code)")


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
    components = {key: entry for key, entry in index.items() if not key.startswith("_") and _present(entry)}
    for component, entry in components.items():
        if not (folder / component).is_dir():
            raise UsageError(f"{what}: model_index.json lists {component!r} but the folder {folder / component} is missing")
        _check_no_custom_code(folder, component, entry, what)
    for component in WEIGHTED_COMPONENTS:
        if component in components:
            _check_weights(folder / component, what)
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
        channels = int(transformer.get("out_channels") or 16)
        heads = int(transformer.get("num_attention_heads", 40))
    except (TypeError, ValueError, IndexError):
        raise UsageError(f"{what}: vae or transformer config.json holds unexpected scale factors or patch size") from None
    return ModelInfo(folder, MODEL_KINDS[name], multiple, temporal, head_dim, channels, index["scheduler"][1],
                     index.get("boundary_ratio") if two_experts else None, heads)
