"""The toy's pieces: data, metric, placements, training determinism, the demo and its PNG, errors."""
import pytest
import torch

from pnp_kernels.toy.data import DATASETS, sample_data
from pnp_kernels.toy.demo import FIGURE_NAME, run_demo
from pnp_kernels.toy.experiment import placement, sigma_grid
from pnp_kernels.toy.metric import ManifoldMetric, nearest_distances
from pnp_kernels.toy.model import load_shipped, weights_path
from pnp_kernels.toy.train import train

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_nearest_distances_match_brute_force():
    g = torch.Generator().manual_seed(7)
    points, reference = torch.randn(53, 2, generator=g), torch.randn(31, 2, generator=g)
    brute = torch.tensor([min(((p - r) ** 2).sum().sqrt().item() for r in reference) for p in points])
    torch.testing.assert_close(nearest_distances(points, reference, chunk=7), brute, rtol=1e-5, atol=1e-6)


def test_metric_scores_data_as_close_and_noise_as_far():
    for name in DATASETS:
        metric = ManifoldMetric(name, reference_size=20_000)
        on_data = metric.score(sample_data(name, 501, seed=123))
        off_data = metric.score(sample_data(name, 501, seed=123) + 0.5)
        assert on_data.mean_nn < metric.far / 2 and on_data.far_fraction < 0.05
        assert off_data.mean_nn > 0.1 and off_data.far_fraction > 0.5


@pytest.mark.parametrize("num_steps", [1, 5, 8, 13])
def test_placements_cover_the_named_end_of_the_grid(num_steps):
    sigmas = sigma_grid(num_steps).tolist()
    early, middle, late, everywhere = (placement(n, num_steps) for n in ("early", "middle", "late", "all"))
    assert early.first == 0 and early.sigma_high == 1.0
    assert late.last == num_steps - 1 and late.sigma_low == sigmas[num_steps - 1]
    assert early.first <= middle.first <= late.first and (everywhere.first, everywhere.last) == (0, num_steps - 1)
    for p in (early, middle, late, everywhere):
        p.plan(2).validate(num_steps)


def test_shipped_weights_are_small_and_load():
    for name in DATASETS:
        assert weights_path(name).stat().st_size < 300_000
        model = load_shipped(name)
        assert model(torch.zeros(3, 2), 0.5).shape == (3, 2)


def test_training_is_deterministic():
    first, again, other = train("sine", steps=25, seed=3), train("sine", steps=25, seed=3), train("sine", steps=25, seed=4)
    for (name, a), b, c in zip(first.state_dict().items(), again.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs between two runs with the same seed"
    assert any(not torch.equal(a, c) for a, c in zip(first.state_dict().values(), other.state_dict().values()))


def test_demo_writes_table_and_valid_png(tmp_path):
    table, figure = run_demo(tmp_path / "demo", seed=0)
    assert figure == tmp_path / "demo" / FIGURE_NAME
    assert figure.read_bytes()[:8] == PNG_SIGNATURE
    image = pytest.importorskip("matplotlib.image").imread(figure)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400
    for name in DATASETS:
        assert f"| {name} " in table
    assert "P&P late" in table and "Euler" in table


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda: sample_data("moons", 10, 0), ValueError),
        (lambda: sample_data("gmm", 0, 0), ValueError),
        (lambda: placement("last", 8), ValueError),
        (lambda: sigma_grid(0), ValueError),
        (lambda: ManifoldMetric("gmm", 100).score(torch.zeros(4, 3)), ValueError),
        (lambda: train("sine", steps=0), ValueError),
        (lambda: run_demo(42), TypeError),
        (lambda: run_demo("out", seed=1.5), TypeError),
    ],
)
def test_bad_inputs_raise(call, error):
    with pytest.raises(error):
        call()
