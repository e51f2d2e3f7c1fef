"""RefinePlan and PnPConfig: accepted forms, and a clear error for every bad value."""
import numpy as np
import pytest
import torch

from pnp_kernels import DEFAULT_PLAN, PnPConfig, RefinePlan
from pnp_kernels.config import MAX_ITERATIONS


def test_plan_forms_agree():
    tuples = RefinePlan([(6, 14, 1), (2, 5, 3)])
    dicts = RefinePlan([{"start": 2, "end": 5, "steps": 3}, {"start": 6, "end": 14, "steps": 1}])
    parsed = RefinePlan.parse("2-5:3, 6-14:1")
    assert tuples == dicts == parsed == DEFAULT_PLAN
    assert tuples.ranges == ((2, 5, 3), (6, 14, 1))  # sorted
    assert RefinePlan.parse(str(parsed)) == parsed
    assert RefinePlan.parse("7:2").ranges == ((7, 7, 2),)
    assert not RefinePlan.parse("none") and not RefinePlan.parse("") and not RefinePlan([])


def test_plan_queries():
    plan = RefinePlan.parse("2-5:3,6-14:1")
    assert [plan.iterations(i) for i in range(16)] == [0, 0, 3, 3, 3, 3] + [1] * 9 + [0]
    assert plan.extra_nfe(50) == 4 * 3 + 9 * 1
    assert plan.extra_nfe(15) == 21
    assert RefinePlan([]).extra_nfe(3) == 0


@pytest.mark.parametrize(
    "ranges, error, words",
    [
        ([(-1, 3, 1)], ValueError, "first_step"),
        ([(1, 3, -2)], ValueError, "K"),
        ([(1.5, 3, 1)], TypeError, "first_step"),
        ([(1, True, 1)], TypeError, "last_step"),
        ([(1, 3, "2")], TypeError, "K"),
        ([(5, 3, 1)], ValueError, "last_step 3 < first_step 5"),
        ([(1, 4, 1), (4, 6, 2)], ValueError, "overlap"),
        ([(1, 2)], TypeError, "ranges[0]"),
        ([{"start": 1, "end": 2}], ValueError, "steps"),
        ("2-5:3", TypeError, "RefinePlan.parse"),
        (5, TypeError, "ranges"),
    ],
)
def test_plan_rejects(ranges, error, words):
    with pytest.raises(error, match=words.replace("[", r"\[").replace("]", r"\]")):
        RefinePlan(ranges)


@pytest.mark.parametrize("text", ["2-5", "a-b:1", "2-5:3;6:1", "-1:2", "2-5:1.5", "3-:1"])
def test_parse_rejects(text):
    with pytest.raises(ValueError, match="plan entry"):
        RefinePlan.parse(text)


def test_plan_beyond_num_steps():
    with pytest.raises(ValueError, match="refers to step 14 but the run has 10 steps"):
        DEFAULT_PLAN.validate(10)
    with pytest.raises(ValueError, match="refers to step 14"):
        DEFAULT_PLAN.extra_nfe(14)
    DEFAULT_PLAN.validate(15)


def test_config_defaults_and_plan_forms():
    cfg = PnPConfig()
    assert (cfg.plan, cfg.tau, cfg.p_norm, cfg.certain_stop, cfg.noise, cfg.backend, cfg.nan_check,
            cfg.published_rounding) == (RefinePlan.parse("published"), 0.25, 1, 0.999, "generator", "auto", True, False)
    assert PnPConfig(plan="2-5:3").plan == RefinePlan([(2, 5, 3)])
    assert PnPConfig(plan=[(1, 1, 2)]).plan == RefinePlan([(1, 1, 2)])
    assert PnPConfig(plan=None).plan == RefinePlan([])
    assert PnPConfig(tau=0, certain_stop=1).certain_stop == 1.0


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        ({"tau": -0.1}, ValueError, "tau"),
        ({"tau": float("nan")}, ValueError, "tau"),
        ({"tau": "0.2"}, TypeError, "tau"),
        ({"p_norm": 3}, ValueError, "p_norm"),
        ({"p_norm": True}, ValueError, "p_norm"),
        ({"certain_stop": 0.0}, ValueError, "certain_stop"),
        ({"certain_stop": 1.5}, ValueError, "certain_stop"),
        ({"noise": "numpy"}, ValueError, "noise"),
        ({"backend": "cudnn"}, ValueError, "backend"),
        ({"nan_check": "yes"}, TypeError, "nan_check"),
        ({"plan": "2-5:x"}, ValueError, "plan entry"),
        ({"plan": [(3, 1, 1)]}, ValueError, "last_step"),
    ],
)
def test_config_rejects(kwargs, error, name):
    with pytest.raises(error, match=name):
        PnPConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        ({"p_norm": np.True_}, ValueError, "p_norm"),
        ({"p_norm": torch.tensor([1, 2])}, ValueError, "p_norm"),
        ({"p_norm": 1.0}, ValueError, "p_norm"),
        ({"tau": 10**400}, ValueError, "tau must be a finite number"),
        ({"tau": float("inf")}, ValueError, "tau must be finite"),
        ({"certain_stop": 10**400}, ValueError, "certain_stop must be a finite number"),
        ({"certain_stop": np.float32(0.5) * 3}, ValueError, "certain_stop must be <= 1"),
        ({"published_rounding": 1}, TypeError, "published_rounding"),
        ({"nan_check": np.True_}, TypeError, "nan_check"),
        ({"plan": [(0, 1, MAX_ITERATIONS + 1)]}, ValueError, r"ranges\[0\] K must be <= 16"),
        ({"plan": [(0, 10**12, 1)]}, ValueError, r"ranges\[0\] last_step must be <= 9999"),
    ],
)
def test_config_rejects_odd_values(kwargs, error, name):
    with pytest.raises(error, match=name):
        PnPConfig(**kwargs)


@pytest.mark.parametrize("ranges", [{}, {"start": 1, "end": 2, "steps": 1}, torch.tensor(3), torch.tensor([[1, 2, 1]])])
def test_plan_rejects_non_sequences(ranges):
    with pytest.raises(TypeError, match="ranges must be a sequence"):
        RefinePlan(ranges)


def test_config_accepts_numpy_numbers_and_published_rounding():
    cfg = PnPConfig(tau=np.float32(0.5), certain_stop=np.float64(0.9), published_rounding=True)
    assert (cfg.tau, cfg.certain_stop, cfg.published_rounding) == (0.5, 0.9, True)
    assert PnPConfig(plan=[(np.int64(1), 2, 1)]).plan == RefinePlan([(1, 2, 1)])


@pytest.mark.parametrize("tau", [0.0, 1e300, float("inf"), -1e-9, float("nan"), 10**400])
def test_config_and_op_accept_the_same_tau(tau):
    from pnp_kernels import pnp_update

    z = torch.zeros(1, 2, 1, 2, 2)

    def accepts(build) -> bool:
        try:
            build()
            return True
        except ValueError:
            return False

    assert accepts(lambda: PnPConfig(tau=tau)) == accepts(lambda: pnp_update(z, z, 0.5, 0.25, tau=tau, backend="torch"))


@pytest.mark.parametrize("bad_tail", [",", ",x", ",1:1@nowhere", ",1-2:" + "9" * 50_000, ",20000:1"])
def test_a_long_plan_is_quoted_shortened_in_its_error(bad_tail):
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    entries = [f"{int(step)}:{int(k)}" for step, k in zip(torch.randint(0, 9999, (30_000,), generator=g),
                                                            torch.randint(0, 5, (30_000,), generator=g))]
    head = ",".join(entries)[: 100_000 - len(bad_tail)]
    text = head[: head.rindex(",")] + bad_tail  # whole entries, then the bad one
    with pytest.raises(ValueError) as error:
        RefinePlan.parse(text)
    message = str(error.value)
    assert len(message) < 600 and f"({len(text)} characters)" in message, message
    with pytest.raises(ValueError) as error:
        PnPConfig(plan=text)
    assert len(str(error.value)) < 600


def test_default_plan_is_the_published_plan_at_50_steps_and_fits_any_step_count():
    def linear(n):
        return [1.0 - i / n for i in range(n + 1)]

    assert PnPConfig().plan.resolve(linear(50)) == DEFAULT_PLAN
    # 10 steps: step 1 (fraction 0.1) lies in f0.04-0.12, step 2 (0.2) in f0.12-0.30
    assert PnPConfig().plan.resolve(linear(10)) == RefinePlan([(1, 1, 3), (2, 2, 1)])
    assert PnPConfig().plan.resolve(linear(4)) == RefinePlan([(1, 1, 1)])
