"""The few-step student's reflow training: held-out seeds, teacher pairs, the loss, resume, brief training."""
import copy
import csv
from pathlib import Path

import pytest
import torch

from pnp_kernels.physics import distill, seeds
from pnp_kernels.physics.generate import generate, initial_noise
from pnp_kernels.physics.model import SHIPPED_WEIGHTS, PhysicsVelocityNet, load_weights, save_weights


def test_pair_seeds_lie_between_every_training_draw_and_the_held_out_ranges():
    largest_training_draw = seeds.training_draw(seeds.MAX_TRAINING_SEED - 1, seeds.TRAINING_SEED_STRIDE - 1)
    pairs = distill.pair_seeds(distill.MAX_PAIRS)
    assert largest_training_draw < pairs.start and pairs.stop <= seeds.HELD_OUT_START
    judged = set(distill.GATE_SEEDS) | set(distill.RETRY_GATE_SEEDS) | set(distill.STUDY_SEEDS)
    assert len(judged) == 512 + 512 + 1024 and min(judged) >= seeds.HELD_OUT_START  # no range shares a seed
    assert set(distill.RETRY_GATE_SEEDS).isdisjoint(seeds.gate_seeds(1024))  # nor with the physics gate
    with pytest.raises(ValueError, match="pairs"):
        distill.pair_seeds(distill.MAX_PAIRS + 1)
    with pytest.raises(ValueError, match="seed"):
        distill.StudentTrainer(Path("unused"), seed=seeds.MAX_TRAINING_SEED)
    with pytest.raises(ValueError, match="steps"):
        distill.distill(Path("unused"), seeds.TRAINING_SEED_STRIDE)


def test_pairs_are_the_teachers_samples_and_are_cached(tmp_path, monkeypatch):
    noise, samples = distill.load_pairs(SHIPPED_WEIGHTS, tmp_path, 3)
    seeds = list(distill.pair_seeds(3))
    torch.testing.assert_close(noise, initial_noise(seeds, load_weights()), rtol=0, atol=0)
    expected = generate(seeds, None, num_steps=20, model=load_weights()).latents
    torch.testing.assert_close(samples, expected, rtol=0, atol=0)

    def must_not_sample(*args, **kwargs):
        raise AssertionError("cached pairs were sampled again")

    monkeypatch.setattr(distill, "teacher_samples", must_not_sample)
    again = distill.load_pairs(SHIPPED_WEIGHTS, tmp_path, 3)
    assert torch.equal(again[1], samples) and torch.equal(again[0], noise)
    assert not list((tmp_path / "pairs").glob("*.partial"))


def _other_teacher(path):
    torch.manual_seed(1)
    model = load_weights()
    with torch.no_grad():
        model.head[-1].bias.add_(0.01)
    return save_weights(model, path)


def test_pairs_of_another_teacher_are_refused(tmp_path):
    distill.load_pairs(SHIPPED_WEIGHTS, tmp_path / "run", 2)
    with pytest.raises(ValueError, match="another teacher"):
        distill.load_pairs(_other_teacher(tmp_path / "other.safetensors"), tmp_path / "run", 2)


def test_a_training_step_is_flow_matching_on_the_teachers_pairs(tmp_path):
    trainer = distill.StudentTrainer(tmp_path, pairs=3, batch=5)
    indices, sigma = distill.reflow_batch(0, 0, 3, 5)
    model = copy.deepcopy(trainer.model)
    naive = 0.0
    with torch.no_grad():
        for b in range(5):
            clip, noise = trainer.samples[indices[b]][None], trainer.noise[indices[b]][None]
            z = (1 - sigma[b]) * clip + sigma[b] * noise  # the straight path from the teacher's clip to its noise
            naive += (model(z, sigma[b]) - (noise - clip)).pow(2).mean().item() / 5
    assert trainer.train_step(100) == pytest.approx(naive, rel=1e-5)
    # the teacher's warm-up schedule at a fifth of its rate
    assert trainer.step == 1 and trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1.5e-3 / 5 / 200)


def test_batches_depend_only_on_seed_and_step():
    a, b, c = (distill.reflow_batch(0, step, 10, 6) for step in (4, 4, 5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    assert a[0].min() >= 0 and a[0].max() < 10 and (a[1] >= 0).all() and (a[1] < 1).all()


def test_resumed_run_matches_an_uninterrupted_one(tmp_path):
    straight = distill.distill(tmp_path / "a", 3, pairs=4, batch=2, log_every=1, checkpoint_every=2)
    distill.distill(tmp_path / "b", 2, pairs=4, batch=2, log_every=1, checkpoint_every=2)
    with open(tmp_path / "b" / "loss.csv", "a") as handle:
        handle.write("3,9.9,1.0\n")  # as if the run had gone on past its last checkpoint, then died
    resumed = distill.distill(tmp_path / "b", 3, pairs=4, batch=2, resume=True, log_every=1, checkpoint_every=2)
    assert resumed.step == straight.step == 3
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    for name, value in straight.optimizer.state_dict()["state"].items():
        assert all(torch.equal(v, resumed.optimizer.state_dict()["state"][name][k]) for k, v in value.items())
    with open(tmp_path / "b" / "loss.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [1, 2, 3] and float(rows[-1]["loss"]) != 9.9
    student = load_weights(tmp_path / "b" / "weights.safetensors")
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in straight.model.state_dict().items())


def test_a_resume_with_other_settings_is_refused(tmp_path):
    distill.distill(tmp_path, 1, pairs=2, batch=2, checkpoint_every=1)
    with pytest.raises(ValueError, match="batch"):
        distill.distill(tmp_path, 2, pairs=2, batch=3, resume=True)
    with pytest.raises(ValueError, match="pairs"):
        distill.distill(tmp_path, 2, pairs=1, batch=2, resume=True)


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="teacher"):
        distill.distill(tmp_path, 1, teacher=tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="steps"):
        distill.distill(tmp_path, 0)
    with pytest.raises(ValueError, match="pairs"):
        distill.distill(tmp_path, 1, pairs=0)


def _four_step_error(model, noise, target):
    z = noise.clone()
    with torch.no_grad():
        for i in range(4):
            z = z - 0.25 * model(z, 1 - i / 4)
    return (z - target).pow(2).mean().item()


@pytest.mark.slow
def test_brief_distillation_brings_four_steps_towards_the_teacher(tmp_path):
    trainer = distill.distill(tmp_path, 120, pairs=8, batch=4, log_every=40)
    teacher = load_weights()
    before = _four_step_error(teacher, trainer.noise, trainer.samples)
    after = _four_step_error(trainer.model.eval(), trainer.noise, trainer.samples)
    assert after < 0.5 * before, (before, after)  # measured: about 0.11 before, 0.02-0.03 after
