"""The paired evaluation loop: for every (prompt, seed), the baseline and every P&P setting from the same
initial noise, metrics computed at once, and one record per sample saved atomically as it finishes.

A sample's record (``samples/KEY.json``) is written last, after its thumbnails (``samples/KEY.npz``), each
under a temporary name renamed into place: a sample either has a complete record or none, so a run
interrupted at any moment resumes by skipping the samples that have one.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Protocol, Sequence

import numpy as np

from . import metrics

THUMBNAIL_FRAMES = 4  # frames kept per run for the contact sheet, evenly spaced
THUMBNAIL_HEIGHT = 128  # pixels; smaller frames are kept as they are
MANIFEST = "eval.json"
SAMPLES = "samples"


@dataclass(frozen=True)
class Setting:
    """One configuration of a comparison: ``pnp`` is the PnPConfig (an empty plan for the baseline)."""

    label: str
    pnp: object


@dataclass(frozen=True)
class Sample:
    """One (prompt, seed) pair. ``key`` names its files; it changes with the prompt text and the seed."""

    prompt: str
    seed: int

    @property
    def key(self) -> str:
        digest = hashlib.sha1(self.prompt.encode()).hexdigest()[:10]
        return f"seed{self.seed}-{digest}"


@dataclass
class Clip:
    """What one sampling run returns: uint8 RGB frames (F, H, W, 3) and its cost and P&P statistics."""

    frames: np.ndarray
    nfe: int
    seconds: float
    certain_fractions: list[list[float]] = field(default_factory=list)  # [refined step][iteration]


class Sampler(Protocol):
    """A model behind the evaluation (a Wan checkpoint or the embedded demo model)."""

    description: str
    uses_prompts: bool

    def fingerprint(self) -> dict:
        """Everything besides the prompt, seed and P&P setting that decides the outputs (JSON-able)."""

    def sample(self, prompt: str, seed: int, pnp) -> Clip:
        """One clip from the initial noise of ``seed``."""


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.partial")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def thumbnails(frames: np.ndarray) -> np.ndarray:
    """THUMBNAIL_FRAMES evenly spaced frames, shrunk to THUMBNAIL_HEIGHT rows when taller."""
    import cv2

    picks = np.unique(np.linspace(0, len(frames) - 1, THUMBNAIL_FRAMES).round().astype(int))
    height, width = frames.shape[1:3]
    if height <= THUMBNAIL_HEIGHT:
        return frames[picks].copy()
    size = (max(1, round(width * THUMBNAIL_HEIGHT / height)), THUMBNAIL_HEIGHT)
    return np.stack([cv2.resize(frames[i], size, interpolation=cv2.INTER_AREA) for i in picks])


class ResultStore:
    """The output folder: a manifest that fixes what is being evaluated, and one record per sample."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.samples = self.folder / SAMPLES

    def existing_fingerprint(self) -> dict | None:
        path = self.folder / MANIFEST
        return json.loads(path.read_text())["fingerprint"] if path.exists() else None

    def start(self, fingerprint: dict) -> None:
        self.samples.mkdir(parents=True, exist_ok=True)
        for leftover in self.samples.glob(".*.partial"):  # a write cut short by a kill signal
            leftover.unlink()
        data = json.dumps({"fingerprint": fingerprint}, indent=2) + "\n"
        write_atomically(self.folder / MANIFEST, data.encode())

    def done(self, sample: Sample) -> bool:
        return (self.samples / f"{sample.key}.json").exists()

    def save(self, sample: Sample, record: dict, thumbs: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, thumbnails=thumbs)
        write_atomically(self.samples / f"{sample.key}.npz", buffer.getvalue())
        write_atomically(self.samples / f"{sample.key}.json", (json.dumps(record, indent=2) + "\n").encode())

    def record(self, sample: Sample) -> dict:
        return json.loads((self.samples / f"{sample.key}.json").read_text())

    def thumbnails(self, sample: Sample) -> np.ndarray:
        """(runs, frames, H, W, 3): the baseline first, then each setting in order."""
        with np.load(self.samples / f"{sample.key}.npz") as stored:
            return stored["thumbnails"]


def _run_record(clip: Clip, baseline: Clip | None) -> dict:
    values = metrics.clip_metrics(clip.frames)
    values["frame_change"] = 0.0 if baseline is None else metrics.frame_change(clip.frames, baseline.frames)
    values["refined_share"] = metrics.refined_share(clip.certain_fractions)
    return {"nfe": clip.nfe, "time_s": clip.seconds, "metrics": values}


def evaluate_sample(sampler: Sampler, sample: Sample, baseline: Setting, settings: Sequence[Setting],
                    extra_metrics: Sequence[Callable[[np.ndarray, str], dict]] = ()) -> tuple[dict, np.ndarray]:
    """Run the baseline and every setting for one sample; returns its record and its thumbnails."""
    runs, thumbs = {}, []
    reference = None
    for setting in (baseline, *settings):
        clip = sampler.sample(sample.prompt, sample.seed, setting.pnp)
        record = _run_record(clip, reference)
        for extra in extra_metrics:
            record["metrics"].update(extra(clip.frames, sample.prompt))
        runs[setting.label] = record
        thumbs.append(thumbnails(clip.frames))
        if reference is None:
            reference = clip  # the baseline: every setting's frame change is measured against it
    return {"prompt": sample.prompt, "seed": sample.seed, "runs": runs}, np.stack(thumbs)


def evaluate(sampler: Sampler, samples: Sequence[Sample], baseline: Setting, settings: Sequence[Setting],
             store: ResultStore, extra_metrics: Sequence[Callable] = (), finished: Callable[[], None] = lambda: None,
             save: bool = True) -> None:
    """Evaluate ``samples``, saving each as it finishes and calling ``finished()`` after each. Without
    ``save`` (a rank that helps another one sample its videos) only the sampler runs."""
    for sample in samples:
        if save:
            record, thumbs = evaluate_sample(sampler, sample, baseline, settings, extra_metrics)
            store.save(sample, record, thumbs)
        else:
            for setting in (baseline, *settings):
                sampler.sample(sample.prompt, sample.seed, setting.pnp)
        finished()


def all_samples(prompts: Iterable[str], seeds: Iterable[int]) -> list[Sample]:
    """Every (prompt, seed) pair, prompt by prompt."""
    seeds = list(seeds)
    return [Sample(prompt, seed) for prompt in prompts for seed in seeds]
