"""Evidence: on the shipped toy models, P&P late in sampling pulls samples toward the data.

The criterion: mean nearest-neighbour distance of P&P samples at least 30% below Euler's at the
same number of steps, with fixed seeds, on every shipped dataset. Also: tau = 0 is the paper's
Algorithm 1 (no masking), and a perturbation to the wrong sigma fails the same criterion.
"""
import pytest
import torch

from pnp_kernels import PnPConfig, RefinePlan, pnp_sample
from pnp_kernels.threads import single_thread
from pnp_kernels.toy.data import DATASETS
from pnp_kernels.toy.experiment import (
    Variant, cloud_denoiser, generate, initial_noise, latent_to_points, placement, sigma_grid,
)
from pnp_kernels.toy.metric import ManifoldMetric
from pnp_kernels.toy.model import load_shipped

NUM_STEPS = 8
NUM_POINTS = 1999  # odd on purpose
NOISE_SEED, PERTURB_SEED = 11, 12
REQUIRED_REDUCTION = 0.30


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def shipped():
    return {name: (load_shipped(name), ManifoldMetric(name)) for name in DATASETS}


def reduction(euler: torch.Tensor, refined: torch.Tensor, metric: ManifoldMetric) -> float:
    """Relative drop of the mean nearest-neighbour distance, refined vs Euler."""
    return 1.0 - metric.score(refined).mean_nn / metric.score(euler).mean_nn


def euler_cloud(model, noise):
    return generate(model, noise, Variant(NUM_STEPS), PERTURB_SEED)[0]


def algorithm_1(model, noise, sigmas, plan: RefinePlan, generator, renoise_sigma=lambda sigma: sigma):
    """The paper's Algorithm 1 written out: Euler steps; at a planned step, K times predict x0 and
    re-noise it to ``renoise_sigma(sigma)`` (correct: the step's own sigma). No masking at all."""
    denoise = cloud_denoiser(model)
    sigmas = sigmas.tolist()
    z = noise.clone()
    for step in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[step], sigmas[step + 1]
        z_in = z
        for iteration in range(plan.iterations(step) + 1):
            v = denoise(z_in, step, sigma)
            if iteration < plan.iterations(step):
                x0 = z_in - sigma * v
                eps = torch.randn(z_in.shape, generator=generator)
                target = renoise_sigma(sigma)
                z_in = (1 - target) * x0 + target * eps
        z = z_in + (sigma_next - sigma) * v
    return z


@pytest.mark.parametrize("iterations", [1, 3])
@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_late_pnp_pulls_samples_toward_the_data(shipped, dataset, iterations):
    model, metric = shipped[dataset]
    noise = initial_noise(NUM_POINTS, NOISE_SEED)
    late = placement("late", NUM_STEPS)
    assert late.sigma_low < 0.25, "late = low sigma (paper time t near 1)"
    refined, nfe = generate(model, noise, Variant(NUM_STEPS, late, iterations), PERTURB_SEED)
    assert nfe == NUM_STEPS + iterations * (late.last - late.first + 1)
    drop = reduction(euler_cloud(model, noise), refined, metric)
    assert drop >= REQUIRED_REDUCTION, f"{dataset}: P&P late K={iterations} cut the mean NN distance by only {drop:.0%}"


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_perturbing_to_the_wrong_sigma_fails_the_criterion(shipped, dataset):
    # The classic mix-up of the paper's time t with sigma: re-noise to 1 - sigma instead of sigma.
    model, metric = shipped[dataset]
    noise = initial_noise(NUM_POINTS, NOISE_SEED)
    plan = placement("late", NUM_STEPS).plan(3)
    sigmas = sigma_grid(NUM_STEPS)
    right = algorithm_1(model, noise, sigmas, plan, torch.Generator().manual_seed(PERTURB_SEED))
    wrong = algorithm_1(model, noise, sigmas, plan, torch.Generator().manual_seed(PERTURB_SEED), lambda s: 1 - s)
    euler = euler_cloud(model, noise)
    assert reduction(euler, latent_to_points(right), metric) >= REQUIRED_REDUCTION
    drop = reduction(euler, latent_to_points(wrong), metric)
    assert drop < REQUIRED_REDUCTION, f"{dataset}: a wrong-sigma perturbation passed with a {drop:.0%} cut"


@pytest.mark.parametrize("ranges", [[(1, 2, 2), (5, 6, 1)], [(0, 6, 1)], [(6, 6, 3)]])
def test_tau_zero_is_algorithm_1(shipped, ranges):
    model, _ = shipped["gmm"]
    num_steps, plan = 7, RefinePlan(ranges)
    noise = torch.randn(1, 2, 313, 1, 1, generator=torch.Generator().manual_seed(len(ranges)))
    sigmas = sigma_grid(num_steps)
    expected = algorithm_1(model, noise, sigmas, plan, torch.Generator().manual_seed(5))
    result = pnp_sample(cloud_denoiser(model), noise, sigmas, PnPConfig(plan=plan, tau=0.0),
                        generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(result.latents, expected, rtol=1e-5, atol=1e-5)
    assert result.stats.nfe == num_steps + plan.extra_nfe(num_steps)
    # The comparison can fail: with tau > 0 some points are frozen, so the result differs.
    masked = pnp_sample(cloud_denoiser(model), noise, sigmas, PnPConfig(plan=plan, tau=0.02, certain_stop=1.0),
                        generator=torch.Generator().manual_seed(5))
    assert not torch.allclose(masked.latents, expected, rtol=1e-5, atol=1e-5)
