"""Optional metrics that need a model: each runs only when its weights are already on disk, and is skipped
with a message otherwise. Nothing is ever downloaded.

- ``clip``: CLIP text-video similarity, the mean cosine similarity between the prompt's CLIP text
  embedding and the image embeddings of up to CLIP_FRAMES evenly spaced frames (higher: the video
  matches the prompt better). Weights: a CLIP model saved by transformers (``save_pretrained``) in the
  folder named by the environment variable PNP_KERNELS_CLIP_MODEL.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .metrics import Metric

CLIP_ENV = "PNP_KERNELS_CLIP_MODEL"
CLIP_FRAMES = 8
CLIP_METRIC = Metric("clip_score", "higher", "cosine", "CLIP similarity between the prompt and the frames")


@dataclass(frozen=True)
class MetricGroup:
    """Metrics computed together by one function of (clip, prompt) that returns {metric name: value}."""

    metrics: tuple[Metric, ...]
    compute: Callable[[np.ndarray, str], dict]


class ClipScore:
    """CLIP text-video similarity from a local folder; the model loads on the first call."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._parts = None

    def _load(self):
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        local = dict(local_files_only=True)
        return (CLIPModel.from_pretrained(self.folder, **local).eval(),
                AutoTokenizer.from_pretrained(self.folder, **local),
                AutoImageProcessor.from_pretrained(self.folder, **local))

    def __call__(self, clip: np.ndarray, prompt: str) -> dict:
        import torch

        if self._parts is None:
            self._parts = self._load()
        model, tokenizer, images = self._parts
        frames = clip[np.unique(np.linspace(0, len(clip) - 1, CLIP_FRAMES).round().astype(int))]
        with torch.no_grad():
            outputs = model(**tokenizer([prompt], padding=True, return_tensors="pt"),
                            pixel_values=images(images=list(frames), return_tensors="pt")["pixel_values"])
        # The forward pass returns both embeddings normalised to unit length: their products are the cosines.
        similarity = outputs.image_embeds @ outputs.text_embeds[0]
        return {CLIP_METRIC.name: float(similarity.mean())}


def _clip(uses_prompts: bool) -> tuple[MetricGroup | None, str | None]:
    if not uses_prompts:
        return None, "skipping the clip metric: this model takes no prompt"
    folder = os.environ.get(CLIP_ENV)
    if not folder or not (Path(folder) / "config.json").is_file():
        return None, (f"skipping the clip metric: no local CLIP weights (set {CLIP_ENV} to a folder holding a CLIP "
                      "model saved with transformers; nothing is downloaded)")
    return MetricGroup((CLIP_METRIC,), ClipScore(Path(folder))), None


LOADERS = {"clip": _clip}


def load_optional(names: Sequence[str], uses_prompts: bool) -> tuple[list[MetricGroup], list[str]]:
    """The requested optional metrics whose weights are present, and a message for each one skipped."""
    found, skipped = [], []
    for name in dict.fromkeys(names):
        metric, message = LOADERS[name](uses_prompts)
        if metric is None:
            skipped.append(message)
        else:
            found.append(metric)
    return found, skipped
