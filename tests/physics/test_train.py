"""Training: batches fixed by (seed, step), resume equals an uninterrupted run, the learning-rate schedule."""
import csv

import pytest
import torch

from pnp_kernels.physics import train as physics_train
from pnp_kernels.physics.model import load_weights


def test_batches_depend_only_on_seed_and_step():
    a = physics_train.training_batch(3, 17, 4)
    b = physics_train.training_batch(3, 17, 4)
    c = physics_train.training_batch(3, 18, 4)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])
    x, eps, sigma = a
    assert x.shape == (4, 1, 12, 16, 16) and x.min() >= -1 and x.max() <= 1 and (sigma >= 0).all() and (sigma < 1).all()


def test_resumed_run_matches_an_uninterrupted_one(tmp_path):
    straight = physics_train.train(tmp_path / "a", 3, batch=2, log_every=1, checkpoint_every=2)
    physics_train.train(tmp_path / "b", 2, batch=2, log_every=1, checkpoint_every=2)
    with open(tmp_path / "b" / "loss.csv", "a") as handle:
        handle.write("3,9.9,1.0\n")  # as if the run had gone on past its last checkpoint, then died
    resumed = physics_train.train(tmp_path / "b", 3, batch=2, resume=True, log_every=1, checkpoint_every=2)
    assert resumed.step == straight.step == 3
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    with open(tmp_path / "b" / "loss.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [1, 2, 3] and float(rows[-1]["loss"]) != 9.9
    assert (tmp_path / "b" / "loss.png").is_file() and (tmp_path / "b" / "weights.safetensors").is_file()


def test_learning_rate_warms_up_holds_and_cools_down():
    trainer = physics_train.Trainer(batch=1)
    rates = []
    for step in (0, 199, 1000, 3000, 3250, 3499):
        trainer.step = step
        rates.append(trainer.learning_rate(3500) / physics_train.LEARNING_RATE)
    assert rates == pytest.approx([1 / 200, 1.0, 1.0, 1.0, 0.5, 1 / 500])


def test_checkpoint_of_another_run_is_refused(tmp_path):
    physics_train.train(tmp_path, 1, batch=2, checkpoint_every=1)
    with pytest.raises(ValueError, match="batch"):
        physics_train.train(tmp_path, 2, batch=3, resume=True)


@pytest.mark.slow
def test_brief_retraining_lowers_the_loss(tmp_path):
    physics_train.train(tmp_path, 150, batch=16, log_every=25)
    with open(tmp_path / "loss.csv") as handle:
        losses = [float(r["loss"]) for r in csv.DictReader(handle)]
    assert losses[-1] < 0.5 * losses[0]


def test_milestone_weights_equal_a_run_of_that_length(tmp_path):
    physics_train.train(tmp_path / "long", 9, batch=2, log_every=1, checkpoint_every=4, milestones=(6, 4))
    for total in (4, 6):
        short = physics_train.train(tmp_path / f"short{total}", total, batch=2)
        branch = load_weights(physics_train.milestone_dir(tmp_path / "long", total) / "weights.safetensors")
        for name, value in short.model.state_dict().items():
            assert torch.equal(value, branch.state_dict()[name]), (total, name)
    with open(physics_train.milestone_dir(tmp_path / "long", 6) / "loss.csv") as handle:
        assert [int(r["step"]) for r in csv.DictReader(handle)] == [6]  # the cooldown of a 6-step run (6 // 4 = 1 step)


def test_milestones_resume_at_their_fork(tmp_path):
    straight = physics_train.train(tmp_path / "a", 8, batch=2, milestones=(4,))
    physics_train.train(tmp_path / "b", 3, batch=2, checkpoint_every=1)  # stopped before the fork at step 3
    resumed = physics_train.train(tmp_path / "b", 8, batch=2, resume=True, milestones=(4,))
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    a, b = (load_weights(physics_train.milestone_dir(tmp_path / run, 4) / "weights.safetensors") for run in "ab")
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
