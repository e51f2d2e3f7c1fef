"""Flow-matching training of the toy velocity model, deterministic from a seed.

Loss: E || v(z, s) - (eps - x) ||^2 with z = (1 - s) x + s eps, s ~ U(0, 1), fresh data every
batch. ``python -m pnp_kernels.toy.train`` retrains the shipped weights from scratch.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from .data import DATASETS, get_dataset
from ..threads import single_thread
from .model import VelocityMLP, save_model, weights_path

TRAIN_STEPS = 4000
BATCH = 1024
LEARNING_RATE = 3e-3


def train(dataset: str, steps: int = TRAIN_STEPS, seed: int = 0, log_every: int = 0) -> VelocityMLP:
    """A freshly initialised VelocityMLP trained on ``dataset``; same seed and steps -> same weights."""
    data = get_dataset(dataset)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)  # free here (CPU, no scatter ops); restored afterwards
    try:
        with single_thread():
            return _fit(data, steps, seed, log_every)
    finally:
        torch.use_deterministic_algorithms(deterministic)


def _fit(data, steps: int, seed: int, log_every: int) -> VelocityMLP:
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # seed the initialisation without touching the caller's RNG
        torch.manual_seed(seed)
        model = VelocityMLP()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    for step in range(steps):
        x = data.draw(BATCH, generator)
        eps = torch.randn(BATCH, 2, generator=generator)
        sigma = torch.rand(BATCH, generator=generator)
        z = (1 - sigma[:, None]) * x + sigma[:, None] * eps
        loss = (model(z, sigma) - (eps - x)).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"  {data.name} step {step:5d} loss {loss.item():.4f}", flush=True)
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Retrain the toy velocity models from scratch (deterministic).")
    parser.add_argument("--dataset", choices=sorted(DATASETS), action="append", help="default: all")
    parser.add_argument("--steps", type=int, default=TRAIN_STEPS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="folder for <dataset>.pt (default: the shipped weights)")
    args = parser.parse_args(argv)
    for name in args.dataset or sorted(DATASETS):
        started = time.perf_counter()
        model = train(name, steps=args.steps, seed=args.seed, log_every=500)
        path = args.out / f"{name}.pt" if args.out else weights_path(name)
        save_model(model, path)
        print(f"{name}: trained {args.steps} steps in {time.perf_counter() - started:.1f}s -> {path}")


if __name__ == "__main__":
    main()
