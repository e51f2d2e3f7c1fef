"""Which seeds train the physics model and which judge it: ranges that can never meet.

Training step ``step`` of a run with seed ``seed`` draws its clips (numpy) and its noise and sigmas
(torch) from the integer ``seed * TRAINING_SEED_STRIDE + step``. Training seeds are below
``MAX_TRAINING_SEED`` and runs shorter than ``TRAINING_SEED_STRIDE`` steps, so every training draw uses
an integer below ``HELD_OUT_START``. Clips that judge the model (the quality gate, the studies, the
demo) start from ``torch.Generator().manual_seed(s)`` with ``s`` at or above ``HELD_OUT_START``: their
initial noise and reference clips are never a training draw. The gate, the study and the demo use
disjoint ranges, so the gate is judged on seeds the study never sees; ``pnp-eval --model demo`` maps
its seeds into a range of its own.
"""
from __future__ import annotations

from ..validators import check_int

TRAINING_SEED_STRIDE = 1_000_003
MAX_TRAINING_SEED = 1_000
HELD_OUT_START = 2**40  # > MAX_TRAINING_SEED * TRAINING_SEED_STRIDE
RANGE_SIZE = 2**24  # seeds per held-out range
GATE_START = HELD_OUT_START
STUDY_START = HELD_OUT_START + RANGE_SIZE
DEMO_START = HELD_OUT_START + 2 * RANGE_SIZE
EVAL_START = HELD_OUT_START + 3 * RANGE_SIZE


def training_draw(seed: int, step: int) -> int:
    """The integer that seeds training step ``step`` of a run with seed ``seed``."""
    seed = check_int("seed", seed, low=0, high=MAX_TRAINING_SEED - 1)
    step = check_int("step", step, low=0, high=TRAINING_SEED_STRIDE - 1)
    return seed * TRAINING_SEED_STRIDE + step


def _held_out(start: int, count: int, offset: int) -> list[int]:
    count = check_int("count", count, low=1, high=RANGE_SIZE)
    offset = check_int("offset", offset, low=0, high=RANGE_SIZE - count)
    return list(range(start + offset, start + offset + count))


def gate_seeds(count: int, offset: int = 0) -> list[int]:
    """Seeds of the quality gate (never used by a study or the demo)."""
    return _held_out(GATE_START, count, offset)


def study_seeds(count: int, offset: int = 0) -> list[int]:
    """Seeds of the studies: paired across rows, never a training draw or a gate seed."""
    return _held_out(STUDY_START, count, offset)


def demo_seeds(count: int, offset: int = 0) -> list[int]:
    """Seeds of ``pnp-sample --demo`` (``--seed`` is the offset)."""
    return _held_out(DEMO_START, count, offset)


def eval_seed(seed: int) -> int:
    """The held-out seed behind ``pnp-eval --model demo``'s seed ``seed`` (0 <= seed < RANGE_SIZE)."""
    return _held_out(EVAL_START, 1, check_int("seed", seed, low=0, high=RANGE_SIZE - 1))[0]
