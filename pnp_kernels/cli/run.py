"""A sampling run: load the pipeline, sample (and the baseline), write every file, build the sidecar."""
from __future__ import annotations

import json
import time
from dataclasses import replace
from functools import partial
from typing import Sequence

from ..cli_common.errors import RunError
from ..cli_common.parallel import Ranks, together
from ..cli_common.pipeline import generate, load_pipeline
from ..config import RefinePlan
from ..staging import StagedFiles
from .args import PROG
from .outputs import claim_outputs
from .settings import Settings, run_files

CHUNK_FRAMES = 16  # composed videos are built and written this many frames at a time


def _run_record(output, seconds: float) -> dict:
    stats = output.pnp_stats
    return {
        "time_s": seconds, "attention_backend": output.attention_backend,
        "iterations_per_step": stats.iterations_per_step, **stats.to_dict(),
    }


def _out_of_memory(settings: Settings) -> RunError:
    return RunError(f"out of memory on {settings.device}; try --offload, fewer --frames or a "
                    "smaller --height/--width")


def _sample(settings: Settings, image, timings: dict, ranks: Ranks | None) -> tuple:
    """(refined output, baseline output or None); a model that returns NaN or runs out of memory is a
    one-line RunError. With ranks, all of them load before any samples, and only rank 0 decodes."""
    import torch

    from ..sampler import NonFiniteError

    started = time.perf_counter()
    with together(ranks, "loading the model"):
        try:
            pipe = load_pipeline(settings, with_image=image is not None)
        except torch.cuda.OutOfMemoryError:
            raise _out_of_memory(settings) from None
    if ranks is not None:  # collective calls: only once every rank has its pipeline
        ranks.enable(pipe)
    timings["load_s"] = time.perf_counter() - started
    sample = generate if ranks is None or ranks.writes else partial(generate, decode=False)  # only rank 0 decodes
    try:
        refined, timings["refined_s"] = sample(pipe, settings, image, settings.pnp, settings.save_uncertainty)
        baseline = None
        if settings.baseline:
            unrefined = replace(settings.pnp, plan=RefinePlan(()))
            baseline, timings["baseline_s"] = sample(pipe, settings, image, unrefined, capture_uncertainty=False)
    except NonFiniteError as error:  # with ranks: raised by all of them at the same model call
        error = RunError(f"{error}; try --dtype float32 or another --seed")
        raise (error if ranks is None else ranks.on_every_rank(error)) from None
    except torch.cuda.OutOfMemoryError:  # with ranks: this rank alone; torchrun stops the others
        error = _out_of_memory(settings)
        raise (error if ranks is None else ranks.alone(error)) from None
    return refined, baseline


def _write(settings: Settings, frames, baseline_frames, maps, labels, staged: StagedFiles) -> dict:
    """Write every video and picture under staged names; returns {name: final path}."""
    from .. import video

    paths = settings.outputs
    names = video.write_comparison(
        frames, settings.fps, lambda name: staged.path_for(paths[name]), baseline=baseline_frames, labels=labels,
        maps=maps if settings.save_uncertainty else None, tau=settings.pnp.tau, chunk_frames=CHUNK_FRAMES,
    )
    return {name: paths[name] for name in names}


def _record(settings: Settings, argv: Sequence[str], refined, baseline, timings: dict, ranks: Ranks | None) -> dict:
    """The sidecar record, less the outputs and timings (added when the files are written)."""
    from ..info import environment

    record = {
        "command": [PROG, *argv], "model": {"folder": str(settings.model.folder), "kind": settings.model.kind.name,
                                            "description": settings.model.kind.description},
        "settings": settings.to_dict(), "seed": settings.seed, "environment": environment(),
        "refined": _run_record(refined, timings["refined_s"]),
    }
    if ranks is not None:
        record["parallel"] = ranks.record()
    if baseline is not None:
        record["baseline"] = _run_record(baseline, timings["baseline_s"])
    return record


def _write_all(settings: Settings, record: dict, refined, baseline, timings: dict, started: float,
               staged: StagedFiles) -> None:
    """Write the videos, pictures and sidecar under staged names, then put them all in place; ``started``:
    when the run began (for the total time)."""
    labels = None
    if baseline is not None:
        labels = (f"baseline {record['baseline']['nfe']} NFE", f"P&P {record['refined']['nfe']} NFE")
    write_started = time.perf_counter()
    try:
        written = _write(settings, refined.frames[0], None if baseline is None else baseline.frames[0],
                         refined.pnp_stats.uncertainty_maps, labels, staged)
        timings["write_s"] = time.perf_counter() - write_started
        timings["total_s"] = time.perf_counter() - started
        written["sidecar"] = settings.outputs["sidecar"]
        record["outputs"] = {name: str(path) for name, path in written.items()}
        record["timings"] = timings
        staged.path_for(settings.outputs["sidecar"]).write_text(json.dumps(record, indent=2) + "\n")
        staged.commit()
    except OSError as error:  # a full disk, a folder removed meanwhile: nothing is left behind
        raise RunError(f"cannot write the outputs for --out {settings.outputs['video']}: "
                       f"{error.strerror or error}; nothing was written") from None


def run(settings: Settings, image, argv: Sequence[str], ranks: Ranks | None = None) -> dict | None:
    """Claim the outputs, sample, write every output file, and return the sidecar record (None on a rank
    that does not write). A second run given the same --out meanwhile is refused (exit status 2)."""
    with StagedFiles() as staged:
        with together(ranks, "claiming the output files"):
            if ranks is None or ranks.writes:
                files = run_files(settings.outputs, settings.baseline, settings.save_uncertainty)
                claim_outputs(staged, files, settings.overwrite)
        timings, started = {}, time.perf_counter()
        refined, baseline = _sample(settings, image, timings, ranks)
        if ranks is not None and not ranks.writes:
            return None
        record = _record(settings, argv, refined, baseline, timings, ranks)
        _write_all(settings, record, refined, baseline, timings, started, staged)
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
