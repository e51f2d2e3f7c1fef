"""A few-step student of the physics model by rectified-flow reflow, deterministic and resumable.

Reflow: the teacher samples (noise, clip) pairs with its 20 Euler steps; the student, initialised from
the teacher, learns the straight path between each pair: loss E || v(z, s) - (eps - x) ||^2 with
z = (1 - s) x + s eps, (eps, x) a teacher pair and s ~ U(0, 1). The velocity keeps its meaning
(v ~ eps - x, sigma 1 = noise, 0 = data), so x0 = z - s v is still the student's clean prediction,
which is what P&P perturbs, and the student samples at any step count. Why reflow and not
progressive distillation, and what the pilot measured: docs/FEW_STEP.md.

Determinism: the pairs are fixed by their seeds and the teacher; step i's pair indices and sigmas
depend only on (seed, i), so a resumed run draws what an uninterrupted run would. The pairs are
generated in chunks cached under OUT/pairs/ (a stopped generation resumes at the missing chunk).
``python -m pnp_kernels.physics.distill --out DIR`` logs DIR/loss.csv and DIR/loss.png, checkpoints to
DIR/checkpoint.pt (``--resume`` continues from it), records the teacher file's SHA-256 and the run's
settings in DIR/run.json (a resume with others is refused) and writes DIR/weights.safetensors. Student
weights are shipped only after the quality gate of docs/FEWSTEP_PREREG.md passes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch

from ..validators import check_int
from . import seeds
from .generate import DEFAULT_STEPS, generate, initial_noise
from .model import SHIPPED_WEIGHTS, PhysicsVelocityNet, load_weights
from .train import Trainer, _train, flow_matching_loss

# Seeds (docs/FEWSTEP_PREREG.md, physics/seeds.py). The student's training steps draw from
# seeds.training_draw, as the teacher's do; the teacher's pairs take their initial noise from seeds above
# every training draw and below HELD_OUT_START, so no clip of the gate or the study starts from noise
# that the teacher or the student was trained on.
PAIR_SEED_BASE = 2**36
MAX_PAIRS = 2**20
GATE_SEEDS = seeds.gate_seeds(512)
# A second student, trained after the first failed its gate, is judged on gate seeds nothing has used,
# so that retrying cannot pass by the noise of the first seeds (docs/FEW_STEP.md, "Deviations").
RETRY_GATE_SEEDS = seeds.gate_seeds(512, offset=2**20)
STUDY_SEEDS = seeds.study_seeds(1024)

PAIRS = 8192  # teacher pairs (~0.08 s each on one core)
PAIR_CHUNK = 64  # pairs sampled together and cached in one file
BATCH = 24
LEARNING_RATE_SCALE = 0.2  # fine-tuning from the teacher's weights: a fifth of the teacher's rate
TRAIN_STEPS = 6000


def file_digest(path: Path) -> str:
    """SHA-256 of a file: which teacher a pair cache or checkpoint was made with."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def pair_seeds(count: int) -> range:
    return range(PAIR_SEED_BASE, PAIR_SEED_BASE + check_int("pairs", count, low=1, high=MAX_PAIRS))


def teacher_samples(teacher: PhysicsVelocityNet, clip_seeds, num_steps: int = DEFAULT_STEPS) -> torch.Tensor:
    """The teacher's Euler samples (B, 1, F, H, W) from ``initial_noise(clip_seeds)``: the clip ends of pairs."""
    return generate(list(clip_seeds), None, num_steps=num_steps, model=teacher).latents


def load_pairs(teacher_path: Path, out_dir: Path, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(noise, samples) of the first ``count`` pairs, generating the chunks not yet cached in out_dir/pairs.

    A chunk file appears complete or not at all; chunks made with another teacher are refused."""
    pairs, digest = pair_seeds(count), file_digest(teacher_path)
    folder = Path(out_dir) / "pairs"
    folder.mkdir(parents=True, exist_ok=True)
    teacher, samples = load_weights(teacher_path), []
    for start in range(0, count, PAIR_CHUNK):
        path = folder / f"chunk_{start // PAIR_CHUNK:05d}.pt"
        chunk_seeds = pairs[start : start + PAIR_CHUNK]
        if path.is_file():
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if cached["teacher"] != digest or cached["seeds"] != list(chunk_seeds):
                raise ValueError(f"{path} was made with another teacher or other seeds; use a fresh --out")
        else:
            cached = {"teacher": digest, "seeds": list(chunk_seeds), "samples": teacher_samples(teacher, chunk_seeds)}
            torch.save(cached, path.with_suffix(".partial"))
            path.with_suffix(".partial").replace(path)
        samples.append(cached["samples"])
    return initial_noise(list(pairs), teacher), torch.cat(samples)


def reflow_batch(seed: int, step: int, num_pairs: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(pair indices, sigmas) of training step ``step``: a function of (seed, step) only."""
    generator = torch.Generator().manual_seed(seeds.training_draw(seed, step))
    return torch.randint(num_pairs, (batch,), generator=generator), torch.rand(batch, generator=generator)


class StudentTrainer(Trainer):
    """The physics trainer with the student's start (the teacher's weights), learning rate and batches
    (teacher pairs); ``save``, ``load`` and the training loop are the teacher's (physics/train.py)."""

    def __init__(self, out_dir: Path, teacher_path: Path = SHIPPED_WEIGHTS, *, pairs: int = PAIRS, seed: int = 0,
                 batch: int = BATCH):
        self.seed = check_int("seed", seed, low=0, high=seeds.MAX_TRAINING_SEED - 1)
        self.batch = check_int("batch", batch, low=1)
        self.noise, self.samples = load_pairs(teacher_path, out_dir, pairs)
        self.model = load_weights(teacher_path).train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=0.0, weight_decay=0.0)  # lr: set each step
        self.step = 0

    def learning_rate(self, total_steps: int) -> float:
        return LEARNING_RATE_SCALE * super().learning_rate(total_steps)  # the teacher's schedule, scaled

    def train_step(self, total_steps: int) -> float:
        indices, sigma = reflow_batch(self.seed, self.step, len(self.samples), self.batch)
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(total_steps)
        loss = flow_matching_loss(self.model, self.samples[indices], self.noise[indices], sigma)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return loss.item()


def check_run(out_dir: Path, run: dict, resume: bool) -> None:
    """Record what a run is made with in out_dir/run.json; a resume with anything else is refused (its
    checkpoint would continue another run)."""
    path = Path(out_dir) / "run.json"
    if resume and path.is_file():
        recorded = json.loads(path.read_text())
        if recorded != run:
            raise ValueError(f"{out_dir} holds a run made with {recorded}; this run has {run}")
    path.write_text(json.dumps(run, indent=1) + "\n")


def distill(out_dir: Path, steps: int = TRAIN_STEPS, *, teacher: Path = SHIPPED_WEIGHTS, pairs: int = PAIRS,
            seed: int = 0, batch: int = BATCH, resume: bool = False, log_every: int = 50,
            checkpoint_every: int = 250, threads: int = 1) -> StudentTrainer:
    """Make the pairs, then train the student until ``steps`` steps are done; log, checkpoint and write
    ``weights.safetensors`` in out_dir (as physics/train.py does)."""
    steps = check_int("steps", steps, low=1, high=seeds.TRAINING_SEED_STRIDE - 1)
    log_every = check_int("log_every", log_every, low=1)
    checkpoint_every = check_int("checkpoint_every", checkpoint_every, low=1)
    teacher, out_dir = Path(teacher), Path(out_dir)
    if not teacher.is_file():
        raise FileNotFoundError(f"teacher weights not found: {teacher}")
    out_dir.mkdir(parents=True, exist_ok=True)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(check_int("threads", threads, low=1))
    try:
        trainer = StudentTrainer(out_dir, teacher, pairs=pairs, seed=seed, batch=batch)
        check_run(out_dir, {"teacher": file_digest(teacher), "pairs": pairs, "seed": seed, "batch": batch}, resume)
        return _train(out_dir, steps, trainer, resume, log_every, checkpoint_every, [])
    finally:
        torch.set_num_threads(previous_threads)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Distil a few-step student of the physics model by reflow "
                                                 "(deterministic, resumable; docs/FEW_STEP.md).")
    parser.add_argument("--out", type=Path, default=Path("physics_student"), help="folder for pairs, log, checkpoint, weights")
    parser.add_argument("--teacher", type=Path, default=SHIPPED_WEIGHTS, help="teacher weights (default: the shipped model)")
    parser.add_argument("--pairs", type=int, default=PAIRS, help=f"teacher (noise, clip) pairs, at most {MAX_PAIRS}")
    parser.add_argument("--steps", type=int, default=TRAIN_STEPS, help="total training steps")
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--seed", type=int, default=0, help="fixes the order of pairs and the sigmas")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on shared cores)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    args = parser.parse_args(argv)
    distill(args.out, args.steps, teacher=args.teacher, pairs=args.pairs, seed=args.seed, batch=args.batch,
            resume=args.resume, threads=args.threads)


if __name__ == "__main__":
    main()
