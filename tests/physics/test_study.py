"""The study: placements, NFE accounting, the negative control, statistics and the shipped table."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pnp_kernels.physics import study
from pnp_kernels.physics.generate import DEFAULT_STEPS, generate, shipped_model
from pnp_kernels.physics.model import PhysicsVelocityNet

SHIPPED_STUDY = Path(__file__).resolve().parents[2] / "docs" / "physics_study.json"


def test_placements_split_the_steps_after_the_first_in_thirds():
    assert [study.placement_steps(p, 10) for p in study.PLACEMENTS] == [(1, 3), (4, 6), (7, 9)]
    assert [study.placement_steps(p, 7) for p in study.PLACEMENTS] == [(1, 2), (3, 4), (5, 6)]


def test_every_pnp_row_has_an_euler_row_with_as_many_model_calls():
    variants = study.study_variants(10)
    euler_nfe = {v.planned_nfe for v in variants if v.placement is None}
    assert euler_nfe == {10, 13, 16, 19}
    assert all(v.planned_nfe in euler_nfe for v in variants)
    assert sum(v.broken for v in variants) == 1 and len(variants) == 1 + 3 + 18 + 1


def test_planned_model_calls_are_what_the_sampler_counts():
    variant = study.Variant(6, "middle", 2, 0.0)
    clips = generate([0, 1], variant.config(), num_steps=6)
    assert clips.stats.nfe == variant.planned_nfe == 6 + 2 * 1


def test_noisier_perturbation_at_scale_one_changes_nothing():
    torch.manual_seed(0)
    net = PhysicsVelocityNet(num_frames=5, size=8, channels=(8, 16)).eval()
    config = study.Variant(4, "early", 2, 0.0).config()
    plain = generate([2, 3], config, num_steps=4, model=net)
    same = generate([2, 3], config, num_steps=4, model=study.NoisierPerturbation(net, scale=1.0))
    louder = generate([2, 3], config, num_steps=4, model=study.NoisierPerturbation(net, scale=10.0))
    torch.testing.assert_close(same.latents, plain.latents, rtol=0, atol=1e-5)
    assert (louder.latents - plain.latents).abs().max() > 0.1


def test_negative_control_is_worse_than_euler():
    seeds = list(range(100, 112))
    model = shipped_model()
    euler = study.run_variant(study.Variant(DEFAULT_STEPS), seeds, model)
    broken = study.run_variant(study.study_variants(DEFAULT_STEPS)[-1], seeds, model)
    assert broken["variant"]["broken"]
    worse = {name: study.paired_difference(broken, euler, name)[0] for name in ("tracked", "shape", "background")}
    assert worse["tracked"] < 0 and worse["shape"] > 0 and worse["background"] > 0


def test_mean_ci_matches_a_naive_formula():
    rng = np.random.default_rng()
    values = rng.normal(3.0, 2.0, 37)
    mean, half, n = study.mean_ci(np.append(values, np.nan))
    assert n == 37 and mean == pytest.approx(values.mean())
    assert half == pytest.approx(1.96 * math.sqrt(((values - values.mean()) ** 2).sum() / 36) / math.sqrt(37))


def test_differences_are_marked_only_when_the_interval_excludes_zero():
    assert study._mark(-0.5, 0.1, "shape").startswith("**")  # lower shape error: P&P better
    assert study._mark(-0.5, 0.1, "tracked").startswith("*-")  # fewer tracked clips: P&P worse
    assert "*" not in study._mark(0.05, 0.1, "shape")


def test_gate_needs_tracked_balls_and_stable_size():
    real = {"metrics": {"tracked": [1.0] * 5, "permanence": [0.0] * 5, "size": [0.002] * 5}}
    good = {"metrics": {"tracked": [1.0, 1.0, 1.0, 1.0, 0.0], "permanence": [0.0, 0.1, 0.0, 0.0, 0.0], "size": [0.01] * 5}}
    assert study.quality_gate(good, real)["passed"]  # 80% tracked, 0.02 events per transition
    bad = {"metrics": {**good["metrics"], "tracked": [1.0, 0.0, 1.0, 1.0, 0.0]}}
    assert not study.quality_gate(bad, real)["passed"]
    jittery = {"metrics": {**good["metrics"], "size": [0.2] * 5}}
    assert not study.quality_gate(jittery, real)["checks"]["size"]["passed"]


def test_study_reproduces_the_shipped_numbers_on_a_subset():
    shipped = json.loads(SHIPPED_STUDY.read_text())
    positions = list(range(study.BATCH))  # the first batch of shipped seeds: sampled exactly as in the study
    seeds = [shipped["seeds"][i] for i in positions]
    rows = {row["label"]: row for row in shipped["rows"]}
    # Euler, one P&P row and the control; only Euler when the shipped study stopped at the gate.
    n = shipped["num_steps"]
    candidates = (study.Variant(n), study.Variant(n, "early", 1, 0.25), study.study_variants(n)[-1])
    shown = [v for v in candidates if v.label() in rows]
    assert shown and shown[0] == study.Variant(n)
    assert len(shown) == 3 or not shipped["gate"]["passed"]
    for variant in shown:
        fresh = study.run_variant(variant, seeds, shipped_model())
        for name, values in fresh["metrics"].items():
            expected = [rows[variant.label()]["metrics"][name][i] for i in positions]
            np.testing.assert_array_equal(values, expected, err_msg=f"{variant.label()}: {name}")
