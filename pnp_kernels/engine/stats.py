"""What a sampling run reports: per-step and per-run statistics, the event after every model call,
the error a NaN raises, and the model-time clock."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import NamedTuple

import torch


@dataclass
class StepStats:
    """What happened at one outer step."""

    step: int
    sigma: float
    sigma_next: float
    planned: int  # K of the plan
    iterations_run: int = 0  # P&P iterations computed after the first prediction (0..K)
    nfe: int = 1  # model calls at this step
    certain_fractions: list[list[float]] = field(default_factory=list)  # [iteration 1..][sample]
    exit_iteration: list[int | None] = field(default_factory=list)  # per sample: early exit, if any


@dataclass
class PnPStats:
    """Counts and timings of a sampling run (``summary()`` prints them)."""

    num_steps: int
    backend: str
    nfe: int = 0
    steps: list[StepStats] = field(default_factory=list)
    nfe_per_sample: list[int] = field(default_factory=list)  # model calls each sample needed
    time_total: float = 0.0  # seconds, whole loop
    time_model: float = 0.0  # seconds between handing out a model input and getting its velocity
    uncertainty_maps: list[dict] = field(default_factory=list)  # with capture_uncertainty

    @property
    def time_outside_model(self) -> float:
        return max(self.time_total - self.time_model, 0.0)

    @property
    def early_exits(self) -> int:
        """Number of (step, sample) pairs that left a refined step before its K iterations."""
        return sum(e is not None for s in self.steps for e in s.exit_iteration)

    @property
    def iterations_per_step(self) -> list[int]:
        return [s.iterations_run for s in self.steps]

    def to_dict(self) -> dict:
        return {
            "num_steps": self.num_steps,
            "backend": self.backend,
            "nfe": self.nfe,
            "baseline_nfe": self.num_steps,
            "nfe_per_sample": self.nfe_per_sample,
            "early_exits": self.early_exits,
            "time_total_s": self.time_total,
            "time_model_s": self.time_model,
            "time_outside_model_s": self.time_outside_model,
            "steps": [vars(s) for s in self.steps if s.planned > 0],
        }

    def summary(self) -> str:
        share = 100.0 * self.time_outside_model / self.time_total if self.time_total > 0 else 0.0
        refined = [s for s in self.steps if s.planned > 0]
        lines = [
            f"P&P: {self.nfe} model calls ({self.num_steps} without refinement), "
            f"{len(refined)} refined steps, {self.early_exits} early exits, backend {self.backend}",
            f"time {self.time_total:.3f}s, {self.time_model:.3f}s in the model, "
            f"{self.time_outside_model:.3f}s ({share:.2f}%) outside",
        ]
        for s in refined:
            last = [f"{f:.3f}" for f in s.certain_fractions[-1]] if s.certain_fractions else []
            lines.append(
                f"  step {s.step:3d} sigma {s.sigma:.3f}: {s.iterations_run}/{s.planned} iterations, "
                f"certain fraction {'/'.join(last) or '-'}"
            )
        return "\n".join(lines)


class IterationEvent(NamedTuple):
    """Passed to ``callback`` after every model call."""

    step: int
    iteration: int
    num_steps: int
    planned: int
    nfe: int
    certain_fraction: list[float] | None  # per sample, known at iterations >= 1


class NonFiniteError(FloatingPointError):
    """The model produced NaN or Inf."""


class ModelTimer:
    """Time between handing out a model input and getting its velocity: CUDA events (no sync until the
    end) or the host clock."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.host_seconds = 0.0
        self.events: list = []
        self.started = None

    def start(self) -> None:
        if self.cuda:
            self.started = torch.cuda.Event(enable_timing=True)
            self.started.record()
        else:
            self.started = time.perf_counter()

    def stop(self) -> None:
        if self.started is None:
            return
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self.events.append((self.started, end))
        else:
            self.host_seconds += time.perf_counter() - self.started
        self.started = None

    def seconds(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return sum(a.elapsed_time(b) for a, b in self.events) / 1000.0
        return self.host_seconds
