"""Held-out seeds: no gate, study or demo clip starts from a training draw."""
import pytest
import torch

from pnp_kernels.physics import seeds, train


def test_every_training_draw_is_below_every_held_out_seed():
    # The longest run this project trains (six times the shipped steps, with its cooldown copies) and,
    # more generally, any run the training code accepts.
    longest = 6 * train.TRAIN_STEPS
    assert seeds.training_draw(0, longest) < seeds.HELD_OUT_START
    largest = seeds.training_draw(seeds.MAX_TRAINING_SEED - 1, seeds.TRAINING_SEED_STRIDE - 1)
    assert largest < seeds.HELD_OUT_START
    held_out = seeds.gate_seeds(4) + seeds.study_seeds(4) + seeds.demo_seeds(4)
    assert min(held_out) >= seeds.HELD_OUT_START


def test_training_refuses_what_would_reach_the_held_out_range():
    with pytest.raises(ValueError, match="seed"):
        train.Trainer(seed=seeds.MAX_TRAINING_SEED)
    with pytest.raises(ValueError, match="step"):
        train.training_batch(0, seeds.TRAINING_SEED_STRIDE, 1)


def test_held_out_ranges_are_disjoint():
    size = 10_000
    gate, study, demo = (set(f(size, seeds.RANGE_SIZE - size)) | set(f(size)) for f in
                         (seeds.gate_seeds, seeds.study_seeds, seeds.demo_seeds))
    evaluation = {seeds.eval_seed(s) for s in (*range(size), *range(seeds.RANGE_SIZE - size, seeds.RANGE_SIZE))}
    assert not (gate & study) and not (gate & demo) and not (study & demo)
    assert not evaluation & (gate | study | demo) and min(evaluation) >= seeds.HELD_OUT_START
    with pytest.raises(ValueError, match="seed"):
        seeds.eval_seed(seeds.RANGE_SIZE)
    with pytest.raises(ValueError, match="offset"):
        seeds.study_seeds(2, seeds.RANGE_SIZE - 1)


def test_study_noise_is_not_a_training_noise():
    # What the seed ranges guarantee, checked on the tensors for the first training steps.
    shape = (1, 12, 16, 16)
    study = [torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds.study_seeds(8)]
    for step in range(64):
        eps = train.training_batch(0, step, 2)[1]
        assert not any(torch.equal(eps[0], s) or torch.equal(eps[1], s) for s in study)
