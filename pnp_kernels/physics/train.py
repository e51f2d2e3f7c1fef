"""Flow-matching training of the physics video network, deterministic from a seed and resumable.

Loss: E || v(z, s) - (eps - x) ||^2 with z = (1 - s) x + s eps, s ~ U(0, 1), fresh clips every step.
The learning rate warms up, stays constant, and falls to 0 over the run's last steps, so it depends on
the total ``--steps``: resume with the same total.
The clips, noise and sigmas of step i depend only on (seed, i), so a run resumed from a checkpoint
draws what an uninterrupted run would. The final weights are exported (a moving average of the weights
was tried and measured worse than the weights at the end of the cooldown; docs/PHYSICS_STUDY.md). ``python -m pnp_kernels.physics.train --out DIR`` logs DIR/loss.csv and DIR/loss.png,
checkpoints to DIR/checkpoint.pt (``--resume`` continues from it) and writes DIR/weights.safetensors;
``--export`` also copies those weights to the shipped file.

``--milestones 3500,7000`` also writes, from the same run, the weights a run of each shorter total
would end with (DIR/steps_3500/weights.safetensors, ...): the learning rate of a run of total T is
constant until T - cooldown, so a longer run passes through exactly the state a run of total T has
when its cooldown begins; a copy of the trainer is cooled down from there for T's last steps
(warmup-stable-decay schedules are used this way to train several lengths in one run).
"""
from __future__ import annotations

import argparse
import copy
import csv
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from ..validators import check_int
from .data import sample_clips
from .model import SHIPPED_WEIGHTS, PhysicsVelocityNet, save_weights
from .seeds import MAX_TRAINING_SEED, TRAINING_SEED_STRIDE, training_draw

BATCH = 24
LEARNING_RATE = 1.5e-3
WARMUP_STEPS = 200
COOLDOWN_STEPS = 500  # the learning rate falls linearly to 0 over the last 500 steps (a quarter of short runs)
TRAIN_STEPS = 3500  # what the shipped weights had (~64 min on one busy CPU core)


def clips_to_latents(clips: np.ndarray) -> torch.Tensor:
    """Rendered clips (B, F, H, W, 3) in [0, 1] -> grey latents (B, 1, F, H, W) in [-1, 1]."""
    grey = clips.mean(axis=-1)
    return torch.from_numpy(grey * 2.0 - 1.0).float()[:, None]


def training_batch(seed: int, step: int, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, eps, sigma) of training step ``step``: a function of (seed, step) only (physics/seeds.py)."""
    draw = training_draw(seed, step)
    x = clips_to_latents(sample_clips(batch, draw))
    generator = torch.Generator().manual_seed(draw)
    eps = torch.randn(x.shape, generator=generator)
    sigma = torch.rand(batch, generator=generator)
    return x, eps, sigma


def flow_matching_loss(model: PhysicsVelocityNet, x: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    s = sigma[:, None, None, None, None]
    z = (1 - s) * x + s * eps
    return (model(z, sigma) - (eps - x)).pow(2).mean()


def cooldown_steps(total_steps: int) -> int:
    return min(COOLDOWN_STEPS, total_steps // 4)


class Trainer:
    """Model and optimiser, stepped by ``train_step`` and saved/restored by ``save``/``load``."""

    def __init__(self, seed: int = 0, batch: int = BATCH):
        self.seed = check_int("seed", seed, low=0, high=MAX_TRAINING_SEED - 1)
        self.batch = check_int("batch", batch, low=1)
        with torch.random.fork_rng(devices=[]):  # seeded initialisation, the caller's RNG untouched
            torch.manual_seed(self.seed)
            self.model = PhysicsVelocityNet()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=LEARNING_RATE, weight_decay=0.0)
        self.step = 0

    def learning_rate(self, total_steps: int) -> float:
        cooldown = cooldown_steps(total_steps)
        return LEARNING_RATE * min(1.0, (self.step + 1) / WARMUP_STEPS, (total_steps - self.step) / max(cooldown, 1))

    def train_step(self, total_steps: int) -> float:
        x, eps, sigma = training_batch(self.seed, self.step, self.batch)
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(total_steps)
        loss = flow_matching_loss(self.model, x, eps, sigma)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return loss.item()

    def save(self, path: Path) -> None:
        state = {"step": self.step, "seed": self.seed, "batch": self.batch, "model": self.model.state_dict(),
                 "optimizer": self.optimizer.state_dict()}
        partial = path.with_suffix(".partial")
        torch.save(state, partial)
        partial.replace(path)  # a crash while saving never leaves a broken checkpoint

    def load(self, path: Path) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if (state["seed"], state["batch"]) != (self.seed, self.batch):
            raise ValueError(f"checkpoint {path} was made with seed {state['seed']}, batch {state['batch']}; "
                             f"this run has seed {self.seed}, batch {self.batch}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = state["step"]


def plot_loss(csv_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return
    steps = [int(r["step"]) for r in rows]
    figure, axis = plt.subplots(figsize=(6, 3.5), layout="constrained")
    axis.plot(steps, [float(r["loss"]) for r in rows], label="training loss (mean over the logging window)")
    axis.set_yscale("log")
    axis.set_xlabel("step")
    axis.set_ylabel("flow-matching MSE")
    axis.set_title("physics video model: training loss")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.savefig(png_path, dpi=100)
    plt.close(figure)


def train(out_dir: Path, steps: int = TRAIN_STEPS, *, seed: int = 0, batch: int = BATCH, resume: bool = False,
          log_every: int = 50, checkpoint_every: int = 500, threads: int = 1,
          milestones: tuple[int, ...] = ()) -> Trainer:
    """Train until ``steps`` steps are done; log, checkpoint and write ``weights.safetensors`` in out_dir.

    milestones: shorter totals whose final weights are also written, to out_dir/steps_<total>/.
    """
    steps = check_int("steps", steps, low=1, high=TRAINING_SEED_STRIDE - 1)
    log_every = check_int("log_every", log_every, low=1)
    checkpoint_every = check_int("checkpoint_every", checkpoint_every, low=1)
    milestones = sorted({check_int(f"milestones[{i}]", m, low=1, high=steps - 1) for i, m in enumerate(milestones)})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(check_int("threads", threads, low=1))
    try:
        return _train(out_dir, steps, Trainer(seed, batch), resume, log_every, checkpoint_every, milestones)
    finally:
        torch.set_num_threads(previous_threads)


def milestone_dir(out_dir: Path, total_steps: int) -> Path:
    return Path(out_dir) / f"steps_{total_steps}"


def _train(out_dir: Path, steps: int, trainer: Trainer, resume: bool, log_every: int, checkpoint_every: int,
           milestones: list[int]) -> Trainer:
    checkpoint, log_path = out_dir / "checkpoint.pt", out_dir / "loss.csv"  # log: seconds since this process began
    if resume and checkpoint.is_file():
        trainer.load(checkpoint)
        print(f"resumed from {checkpoint} at step {trainer.step}", flush=True)
        _truncate_log(log_path, trainer.step)
    elif log_path.exists():
        log_path.unlink()  # a fresh run starts a fresh log
    if not log_path.exists():
        log_path.write_text("step,loss,seconds\n")
    forks = {total - cooldown_steps(total): total for total in milestones
             if not (milestone_dir(out_dir, total) / "weights.safetensors").is_file()}
    started, window = time.perf_counter(), []
    while trainer.step < steps:
        if trainer.step in forks:
            _write_outputs(trainer, out_dir)  # a crash during the branch resumes at its fork
            _cool_down_copy(trainer, forks.pop(trainer.step), out_dir, log_every)
        window.append(trainer.train_step(steps))
        if trainer.step % log_every == 0 or trainer.step == steps:
            _log(log_path, trainer.step, window, started)
            window = []
        if trainer.step % checkpoint_every == 0 and trainer.step < steps:
            _write_outputs(trainer, out_dir)
    _write_outputs(trainer, out_dir)  # also when resumed at the end: re-exports the weights
    return trainer


def _log(log_path: Path, step: int, window: list[float], started: float) -> None:
    with open(log_path, "a") as handle:
        handle.write(f"{step},{np.mean(window):.6f},{time.perf_counter() - started:.1f}\n")
    print(f"step {step:6d} loss {np.mean(window):.4f} ({time.perf_counter() - started:.0f}s)", flush=True)


def _cool_down_copy(trainer: Trainer, total_steps: int, out_dir: Path, log_every: int) -> None:
    """Cool a copy of ``trainer`` down to ``total_steps`` and write its weights and log to a milestone
    folder, which appears complete or not at all."""
    branch, final = copy.deepcopy(trainer), milestone_dir(out_dir, total_steps)
    staging = final.with_name(final.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    log_path = staging / "loss.csv"
    log_path.write_text("step,loss,seconds\n")
    started, window = time.perf_counter(), []
    while branch.step < total_steps:
        window.append(branch.train_step(total_steps))
        if branch.step % log_every == 0 or branch.step == total_steps:
            _log(log_path, branch.step, window, started)
            window = []
    save_weights(branch.model, staging / "weights.safetensors")
    staging.replace(final)
    print(f"wrote {final / 'weights.safetensors'}", flush=True)


def _truncate_log(log_path: Path, step: int) -> None:
    """Drop log rows after ``step``: they belong to a run that went on past its last checkpoint."""
    if log_path.exists():
        lines = log_path.read_text().splitlines(keepends=True)
        kept = lines[:1] + [line for line in lines[1:] if int(line.split(",")[0]) <= step]
        log_path.write_text("".join(kept))


def _write_outputs(trainer: Trainer, out_dir: Path) -> None:
    """Checkpoint, weights and the loss plot."""
    trainer.save(out_dir / "checkpoint.pt")
    save_weights(trainer.model, out_dir / "weights.safetensors")
    plot_loss(out_dir / "loss.csv", out_dir / "loss.png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the physics video model (deterministic, resumable).")
    parser.add_argument("--out", type=Path, default=Path("physics_train"), help="folder for log, checkpoint, weights")
    parser.add_argument("--steps", type=int, default=TRAIN_STEPS, help="total training steps")
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on shared cores)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--milestones", type=lambda text: tuple(int(v) for v in text.split(",") if v), default=(),
                        help="comma-separated shorter totals whose cooled-down weights are also written "
                             "(OUT/steps_<total>/)")
    parser.add_argument("--export", action="store_true", help=f"copy the final weights to {SHIPPED_WEIGHTS}")
    args = parser.parse_args(argv)
    train(args.out, args.steps, seed=args.seed, batch=args.batch, resume=args.resume, threads=args.threads,
          milestones=args.milestones)
    if args.export:
        shutil.copyfile(args.out / "weights.safetensors", SHIPPED_WEIGHTS)
        print(f"exported to {SHIPPED_WEIGHTS}")


if __name__ == "__main__":
    main()
