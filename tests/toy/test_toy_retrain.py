"""Retraining from scratch reproduces the shipped weights and passes the same criterion (slow: ~2 min)."""
import pytest

from pnp_kernels.toy.data import DATASETS
from pnp_kernels.threads import single_thread
from pnp_kernels.toy.experiment import Variant, generate, initial_noise, placement
from pnp_kernels.toy.metric import ManifoldMetric
from pnp_kernels.toy.model import load_shipped
from pnp_kernels.toy.train import train


@pytest.mark.slow
@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_retraining_reproduces_the_shipped_weights(dataset):
    retrained = train(dataset)
    shipped = load_shipped(dataset).state_dict()
    # Bitwise on the machine the weights were made on (x86-64 CPU, one thread). Other x86-64 CPUs pick
    # other vector kernels and round differently (seen: 2.6e-6 after the whole run); far below what
    # would change a sample, and the criterion below is checked on the retrained weights themselves.
    for name, value in retrained.state_dict().items():
        difference = (value - shipped[name]).abs().max().item()
        assert difference <= 1e-4, f"{dataset}: {name} differs by {difference:.3g}"
    with single_thread():
        noise = initial_noise(1001, 21)
        euler, _ = generate(retrained, noise, Variant(8), 22)
        refined, _ = generate(retrained, noise, Variant(8, placement("late", 8), 3), 22)
    metric = ManifoldMetric(dataset)
    assert metric.score(refined).mean_nn <= 0.7 * metric.score(euler).mean_nn
