"""Plans that do not depend on the step count: fractions of the run, sigma intervals, one expert,
presets; RefinePlan.resolve maps them onto a run's sigma grid (docs/ALGORITHM.md, "Plans")."""
import pytest
import torch

from pnp_kernels import DEFAULT_PLAN, WAN22_T2V_PLAN, PnPConfig, RefinePlan, pnp_sample
from pnp_kernels.config import MAX_ITERATIONS
from pnp_kernels.engine import check_sigmas
from tests.naive import ToyDenoiser


def linear(num_steps):
    return [1.0 - i / num_steps for i in range(num_steps + 1)]


def shifted(num_steps, shift=5.0):
    """A flow-matching grid with the resolution shift Wan uses: the plan must not care."""
    return [shift * t / (1 + (shift - 1) * t) for t in linear(num_steps)]


@pytest.mark.parametrize("grid", [linear, shifted])
@pytest.mark.parametrize(
    "num_steps, expected",
    [
        (50, [(2, 5, 3), (6, 14, 1)]),  # the published 50-step plan exactly
        (30, [(2, 3, 3), (4, 8, 1)]),
        (8, [(1, 2, 1)]),  # 4%-12% of 8 steps holds no step start; 12%-30% holds steps 1 and 2
        (4, [(1, 1, 1)]),
    ],
)
def test_published_plan_at_any_step_count(grid, num_steps, expected):
    for text in ("f0.04-0.12:3,f0.12-0.30:1", "published", " Published "):
        assert RefinePlan.parse(text).resolve(grid(num_steps)).ranges == tuple(expected)
    assert RefinePlan.parse("published").resolve(linear(50)) == DEFAULT_PLAN


@pytest.mark.parametrize("num_steps, expected", [(4, [(1, 1, 1)]), (6, [(1, 2, 1)]), (8, [(1, 3, 1)])])
def test_distilled_preset(num_steps, expected):
    assert RefinePlan.parse("distilled").resolve(linear(num_steps)).ranges == tuple(expected)


def test_wan22_preset_is_the_published_40_step_plan():
    assert RefinePlan.parse("published-wan22").resolve(torch.linspace(1, 0, 41)) == WAN22_T2V_PLAN


def test_sigma_ranges_include_their_start_and_exclude_their_end():
    sigmas = [1.0, 0.95, 0.9, 0.8, 0.5, 0.0]
    assert RefinePlan.parse("s0.95-0.8:2").resolve(sigmas).ranges == ((1, 2, 2),)
    assert RefinePlan.parse("s1-0.9:3,s0.9-0:1").resolve(sigmas).ranges == ((0, 1, 3), (2, 4, 1))
    assert RefinePlan.parse("all:1").resolve(sigmas).ranges == ((0, 4, 1),)


def test_one_expert_of_a_two_expert_model():
    sigmas = torch.tensor([1.0, 0.95, 0.9, 0.875, 0.8, 0.5, 0.0])
    boundary = 0.875  # the high-noise expert runs while sigma >= boundary, as in Wan 2.2 A14B
    assert RefinePlan.parse("all:1@high").resolve(sigmas, boundary).ranges == ((0, 3, 1),)
    assert RefinePlan.parse("all:1 @ LOW").resolve(sigmas, boundary).ranges == ((4, 5, 1),)
    assert RefinePlan.parse("all:2@high,all:1@low").resolve(sigmas, boundary).ranges == ((0, 3, 2), (4, 5, 1))
    assert RefinePlan.parse("f0.1-0.6:2@high").resolve(sigmas, boundary).ranges == ((1, 3, 2),)
    assert RefinePlan.parse("2-4:3@low").resolve(sigmas, boundary).ranges == ((4, 4, 3),)
    with pytest.raises(ValueError, match="'all:1@high' refines one expert, but no expert boundary"):
        RefinePlan.parse("all:1@high").resolve(sigmas)
    with pytest.raises(ValueError, match="expert must be 'high' or 'low'"):
        RefinePlan.parse("all:1@middle")


def test_step_plan_that_does_not_fit_keeps_its_error():
    with pytest.raises(ValueError, match="plan '2-5:3,6-14:1' refers to step 14 but the run has 10 steps"):
        RefinePlan.parse("2-5:3,6-14:1").resolve(linear(10))
    with pytest.raises(ValueError, match="refers to step 12 but the run has 10 steps"):
        RefinePlan.parse("10-12:1@high").resolve(linear(10), boundary_sigma=0.5)
    assert RefinePlan.parse("2-5:3").resolve(linear(10)) == RefinePlan([(2, 5, 3)])


@pytest.mark.parametrize("sigmas, error, match", [
    ([1.0], ValueError, r"at least 2 values"),
    ([1.0, 0.4, 0.6, 0.0], ValueError, r"non-increasing, got sigmas\[1\]=0.4 < sigmas\[2\]=0.6"),
    ([1.2, 0.5, 0.0], ValueError, r"sigmas\[0\] must be <= 1"),
    ([1.0, float("nan"), 0.0], ValueError, r"sigmas\[1\] must be finite"),
    ("1,0", TypeError, "sigmas must be a 1-D tensor or a sequence"),
])
def test_resolve_refuses_a_bad_sigma_grid_as_the_engine_does(sigmas, error, match):
    with pytest.raises(error, match=match):
        RefinePlan.parse("f0-0.5:1").resolve(sigmas)
    with pytest.raises(error, match=match):
        check_sigmas(sigmas)


def test_overlaps_quote_the_plan_as_typed():
    with pytest.raises(ValueError, match=r"plan '2-5:3, 4-6:1' overlap: steps 2-5 and 4-6 share step 4"):
        RefinePlan.parse("2-5:3, 4-6:1")
    with pytest.raises(ValueError, match=r"plan 'f0-0.5:1,f0.4-1:2': entries 'f0.0-0.5:1' and 'f0.4-1.0:2' overlap"):
        RefinePlan.parse("f0-0.5:1,f0.4-1:2")
    RefinePlan.parse("f0-0.5:1@high,f0.4-1:2@low")  # different experts never share a step
    with pytest.raises(ValueError, match=r"plan '2-5:3,f0-0.5:1': entries '2-5:3' and 'f0.0-0.5:1' both cover step 2"):
        RefinePlan.parse("2-5:3,f0-0.5:1").resolve(linear(10))


def test_a_relative_plan_must_be_resolved_before_step_queries():
    plan = RefinePlan.parse("f0.1-0.5:2")
    assert not plan.is_resolved and plan
    for query in (lambda: plan.iterations(3), lambda: plan.extra_nfe(10), lambda: plan.validate(10), plan.last_step):
        with pytest.raises(ValueError, match=r"plan 'f0.1-0.5:2' depends on the run's sigma grid: call plan.resolve"):
            query()


def test_text_round_trip_and_equality():
    plan = RefinePlan.parse("2-3:2, f0.5-0.75:1, s0.3-0.1:2@low, all:1@high")
    assert RefinePlan.parse(str(plan)) == plan
    assert str(RefinePlan.parse("none")) == "none" and not RefinePlan.parse("f0.1-0.2:0")


@pytest.mark.parametrize(
    "text, words",
    [
        ("٢-٥:٣", "plan entry"),  # Arabic-Indic digits are not plan digits
        ("２:1", "plan entry"),  # nor are full-width ones
        ("1" * 5000 + ":1", "is too long"),
        ("0:1000000000000", f"must be <= {MAX_ITERATIONS}"),
        (f"0:{MAX_ITERATIONS + 1}", f"K of '0:{MAX_ITERATIONS + 1}' in plan"),
        ("99999:1", "must be <= 9999"),
        ("f0.3-0.1:1", "runs forward"),
        ("s0.1-0.3:1", "from high to low noise"),
        ("f0.5-1.5:1", "must be <= 1.0"),
        ("s1-0.5", "plan entry"),
        ("publishd", "plan entry 'publishd'"),
    ],
)
def test_parse_rejects_with_the_text(text, words):
    with pytest.raises(ValueError, match=words) as error:
        RefinePlan.parse(text)
    assert repr(text)[:40].rstrip("'") in str(error.value)


def test_largest_k_is_accepted():
    assert RefinePlan.parse(f"0:{MAX_ITERATIONS}").ranges == ((0, 0, MAX_ITERATIONS),)


def test_pnp_sample_resolves_the_plan_on_its_grid():
    g = torch.Generator().manual_seed(1)
    latents, targets = torch.randn(1, 3, 2, 4, 5, generator=g), torch.randn(1, 3, 2, 4, 5, generator=g)
    for num_steps, refined in ((8, [1, 2]), (4, [1])):
        sigmas = torch.tensor(shifted(num_steps))
        stats = pnp_sample(ToyDenoiser(targets, [0.1], 3), latents, sigmas, PnPConfig(plan="published", tau=0.0),
                           generator=torch.Generator().manual_seed(0)).stats
        assert [s.step for s in stats.steps if s.planned] == refined
        assert stats.nfe == num_steps + len(refined)
