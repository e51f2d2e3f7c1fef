"""The physics study: rows and matched calls, the Restart and broken controls, the decision rules,
and the shipped results reproduced on a few seeds."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pnp_kernels.physics import report, rows, study
from pnp_kernels.physics.controls import NoisierPerturbation, restart_sample
from pnp_kernels.physics.generate import generate, shipped_model
from pnp_kernels.physics.model import PhysicsVelocityNet, load_weights
from pnp_kernels.physics.seeds import study_seeds

CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints" / "physics"


@pytest.fixture(scope="module")
def tiny_net():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return PhysicsVelocityNet(num_frames=5, size=8, channels=(8, 16)).eval()


class CountingNet(torch.nn.Module):
    """Counts clip evaluations (batch rows) of the wrapped network."""

    def __init__(self, net):
        super().__init__()
        self.net, self.config, self.clip_calls = net, net.config, 0

    def forward(self, z, sigma):
        self.clip_calls += z.shape[0]
        return self.net(z, sigma)


@pytest.mark.parametrize("make", [rows.headline_rows, rows.curve_rows])
def test_every_row_is_distinct_and_has_an_euler_row_with_its_model_calls(make):
    table = make()
    assert len({r.label() for r in table}) == len(table)
    for row in table:
        reference = rows.matching_euler(row, table)
        assert reference.kind == "euler" and reference.shift == row.shift
        assert reference.planned_calls == row.planned_calls


def test_headline_rows_follow_the_preregistration():
    table = rows.headline_rows()
    assert {r.shift for r in table} == {1.0, 3.0, 5.0}
    paper = [r for r in table if r.name == "published"]
    assert sorted((r.shift, r.tau) for r in paper) == [(s, t) for s in (1.0, 3.0, 5.0) for t in (0.0, 0.25)]
    assert [str(r.resolved_plan) for r in paper[:1]] == ["1-2:3,3-5:1"]  # steps 2-5 and 6-14 of 50, as fractions
    assert len(rows.restart_pairs(table)) == 3 and sum(r.kind == "broken" for r in table) == 1
    restart = {r.plan: r.planned_calls for r in table if r.kind == "restart"}
    assert all(r.planned_calls == restart[r.plan] for r in table if r.kind == "pnp" and r.plan in restart and r.shift == 1)


def test_restart_without_restarts_is_euler_and_with_them_costs_the_planned_calls(tiny_net):
    seeds = study_seeds(3, 77)
    euler = generate(seeds, None, num_steps=6, shift=3.0, model=tiny_net).latents
    assert torch.equal(restart_sample(tiny_net, seeds, 6, 3.0, 2, 4, 0), euler)
    counting = CountingNet(tiny_net)
    refined = restart_sample(counting, seeds, 6, 3.0, 2, 4, 2)
    assert counting.clip_calls == 3 * (6 + 2 * 3) and not torch.equal(refined, euler)
    alone = restart_sample(tiny_net, seeds[1:2], 6, 3.0, 2, 4, 2)
    torch.testing.assert_close(alone, refined[1:2], rtol=0, atol=1e-6)  # a clip does not depend on its batch


def test_restart_renoises_along_the_forward_process():
    # From sigma_lo to sigma_hi, clean data x at z_lo = (1 - lo) x + lo eps must reach the marginal of hi:
    # mean (1 - hi) x and standard deviation hi. A network that outputs -x (v = eps - x with eps = 0 at x)
    # is not needed: check the statistics on the re-noised latents directly with a zero-velocity model.
    class Still(torch.nn.Module):
        config = {"num_frames": 4, "size": 8}

        def forward(self, z, sigma):
            return torch.zeros_like(z)

    seeds = study_seeds(64, 500)
    z0 = restart_sample(Still(), seeds, 4, 1.0, 1, 1, 0)  # only the initial noise: std 1
    z1 = restart_sample(Still(), seeds, 4, 1.0, 1, 1, 1)  # re-noised from sigma 0.5 to 0.75, no motion
    a = (1 - 0.75) / (1 - 0.5)
    expected_std = math.sqrt(a * a + 0.75**2 - a * a * 0.5**2)
    assert abs(z0.std().item() - 1.0) < 0.02 and abs(z1.std().item() - expected_std) < 0.02


def test_noisier_perturbation_at_scale_one_changes_nothing(tiny_net):
    config = rows.Row("broken", 6, plan="2-3:2").config()
    plain = generate([2, 3], config, num_steps=6, model=tiny_net)
    wrapped = generate([2, 3], config, num_steps=6, model=NoisierPerturbation(tiny_net, scale=1.0))
    assert torch.equal(plain.latents, wrapped.latents)
    broken = generate([2, 3], config, num_steps=6, model=NoisierPerturbation(tiny_net))
    assert not torch.equal(plain.latents, broken.latents)


def fake_result(differences: dict[str, dict[str, float]], seeds: int = 512) -> dict:
    """Results in which each row's metrics are Euler's plus the given mean differences and noise."""
    rng = np.random.default_rng()
    table = rows.headline_rows()
    base = {"tracked": (rng.random(seeds) < 0.8).astype(float), "ballistic": rng.normal(0.5, 0.1, seeds)}
    stored = {}
    for row in table:
        shift = differences.get(row.label(), {})
        metrics = {name: (base.get(name, np.zeros(seeds)) + shift.get(name, 0.0) + rng.normal(0, 0.05, seeds)).tolist()
                   for name in report.METRIC_NAMES}
        stored[row.label()] = {"metrics": metrics, "calls": [row.planned_calls] * seeds}
    return {"rows": stored}


def test_verdicts_follow_the_preregistered_rule():
    middle, late, early = (rows.placed("pnp", p, 3) for p in ("middle", "late", "early"))
    result = fake_result({
        middle.label(): {"ballistic": -0.1},  # better motion, no lost clips: helps
        late.label(): {"ballistic": -0.1, "tracked": -0.1},  # better motion, but loses 10 points of clips
        early.label(): {"ballistic": +0.001},  # nothing resolvable
    })
    against, pairs, level = report.headline_comparisons(result)
    assert level == pytest.approx(1 - 0.05 / (2 * (len(against) + len(pairs))))
    verdicts = {c.row.label(): c.verdict() for c in against}
    assert verdicts[middle.label()] == "helps" and verdicts[late.label()] == "hurts" and verdicts[early.label()] == "neutral"
    chosen, meets = report.selected_placement(against)
    assert chosen.row == middle and meets


def test_ball_metrics_are_compared_on_seeds_tracked_in_both_rows():
    row, euler = rows.placed("pnp", "middle", 1), rows.Row("euler", 25)
    result = {"rows": {
        row.label(): {"metrics": {**{n: [0.0] * 4 for n in report.METRIC_NAMES}, "ballistic": [0.1, None, 0.3, 0.2]}},
        euler.label(): {"metrics": {**{n: [0.0] * 4 for n in report.METRIC_NAMES}, "ballistic": [0.2, 0.5, None, 0.4]}},
    }}
    interval = report.compare(result, row, euler, 0.95).differences["ballistic"]
    assert interval.n == 2 and interval.mean == pytest.approx(-0.15)


def test_the_headline_model_is_the_first_passing_checkpoint_in_the_registered_order():
    gate = lambda passed, tracked: {"gate": {"passed": passed, "checks": {"tracked": {"value": tracked}}}}
    assert report.headline_name({"1x": gate(True, 0.9), "2x": gate(False, 0.7), "4x": gate(True, 0.85)}) == "4x"
    assert report.headline_name({"2x": gate(False, 0.7)}) is None  # 4x not judged yet
    assert report.demo_name({"2x": gate(True, 0.82), "4x": gate(True, 0.85), "6x": gate(False, 0.9)}) == "4x"
    failed = {"2x": gate(False, 0.85), "4x": {**gate(False, 0.85), "headline": True}}
    assert report.reported_headline(failed) == ("4x", False)  # shown, labelled as a deviation
    assert report.reported_headline({"2x": {**gate(True, 0.85), "headline": True}}) == ("2x", True)


def _shipped_results():
    folder = study.RESULTS
    results = report.load(folder) if folder.is_dir() else {}
    name, _ = report.reported_headline(results)
    if name is None:
        pytest.skip("no shipped headline results")
    return name, results[name]


@pytest.mark.parametrize("label_of", [
    lambda: rows.Row("euler").label(),
    lambda: rows.paper(1.0, 0.25).label(),
    lambda: rows.placed("restart", "middle", 3).label(),
    lambda: rows.placed("pnp", "early", 3, shift=3.0).label(),
])
def test_shipped_headline_rows_reproduce_on_their_first_seeds(label_of):
    name, result = _shipped_results()
    model = load_weights(CHECKPOINTS / result["weights"])
    row = next(r for r in rows.headline_rows() if r.label() == label_of())
    measured = study.measure_row(row, study_seeds(study.BATCH), model)
    stored = result["rows"][row.label()]
    assert measured["calls"] == stored["calls"][:study.BATCH]
    for metric, values in measured["metrics"].items():
        assert values == stored["metrics"][metric][:study.BATCH], metric


def test_processes_sharing_a_results_file_keep_each_others_rows(tmp_path):
    first, second = study.Results(tmp_path, "4x"), study.Results(tmp_path, "4x")
    rows_of_first = first.data["rows"]  # what run_rows holds on to between saves
    rows_of_first["a"] = {"calls": [1]}
    first.save()
    second.data["rows"]["b"] = {"calls": [2]}
    second.data["gate"] = {"passed": True}
    second.save()
    rows_of_first["c"] = {"calls": [3]}
    first.save()
    merged = study.Results(tmp_path, "4x").data
    assert sorted(merged["rows"]) == ["a", "b", "c"] and merged["gate"] == {"passed": True}


def test_parts_share_out_every_headline_row_once():
    table = rows.headline_rows()
    parts = [table[k::3] for k in range(3)]
    assert sorted(r.label() for part in parts for r in part) == sorted(r.label() for r in table)


@pytest.mark.parametrize("argv, words", [
    (["curve", "--checkpoint", "4x"], "NAME=WEIGHTS"),
    (["curve", "--checkpoint", "4x=/nonexistent.safetensors"], "/nonexistent.safetensors"),
    (["headline", "--part", "2/2"], "K/N"),
    (["headline", "--part", "x"], "K/N"),
    (["sample"], "invalid choice"),
])
def test_bad_command_lines_are_refused_naming_the_value(argv, words, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        study.main([*argv, "--results", str(tmp_path)])
    assert words in str(stopped.value) + capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
