"""pnp_sample against the naive loop of docs/ALGORITHM.md, batch invariance, NFE counts, errors."""
import pytest
import torch

from pnp_kernels import Guided, NonFiniteError, PnPConfig, RefinePlan, pnp_sample
from tests.naive import ToyDenoiser, naive_pnp

SHAPE = (4, 3, 5, 7)  # C, F, H, W: odd on purpose
SIGMAS = torch.linspace(1.0, 0.0, 9)
PLANS = {"empty": [], "k1": [(1, 5, 1)], "k3": [(0, 1, 3), (3, 4, 2), (5, 5, 1)]}


def problem(batch, seed, gains=None):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, *SHAPE, generator=g)
    targets = torch.randn(batch, *SHAPE, generator=g)
    gains = gains if gains is not None else torch.rand(batch, generator=g).mul(0.5).tolist()
    return latents, targets, gains


def generators(seed, batch, per_sample):
    if per_sample:
        return [torch.Generator().manual_seed(seed + b) for b in range(batch)]
    return torch.Generator().manual_seed(seed)


CASES = [
    # plan, tau, p_norm, guided, batch, per-sample generators
    *[(plan, 0.0, 1, False, 1, False) for plan in PLANS],
    ("k3", 0.05, 1, True, 3, False),
    ("k3", 0.05, 2, False, 3, True),
    ("k3", 0.0, 2, True, 1, False),
    ("k1", 0.05, 1, True, 3, True),
    ("k3", 10.0, 1, False, 3, False),  # everything certain at once: early exit at iteration 1
    ("k3", 0.08, 2, True, 3, True),
]


@pytest.mark.parametrize("plan, tau, p_norm, guided, batch, per_sample", CASES)
def test_matches_naive_loop(plan, tau, p_norm, guided, batch, per_sample):
    seed = int(torch.randint(0, 2**31, ()))  # fresh inputs every run
    latents, targets, gains = problem(batch, seed)
    cfg = PnPConfig(plan=PLANS[plan], tau=tau, p_norm=p_norm, certain_stop=0.9, backend="torch")
    gen_lib, gen_naive = generators(seed, batch, per_sample), generators(seed, batch, per_sample)

    result = pnp_sample(ToyDenoiser(targets, gains, SHAPE[0], guided=guided), latents, SIGMAS, cfg, generator=gen_lib)
    expected = naive_pnp(
        ToyDenoiser(targets, gains, SHAPE[0], guided=guided), latents, SIGMAS, PLANS[plan], tau, p_norm, 0.9, gen_naive
    )
    torch.testing.assert_close(result.latents, expected, rtol=0, atol=1e-6)
    # The generator was consumed exactly as in the published order (early exits included).
    for a, b in zip(gen_lib if per_sample else [gen_lib], gen_naive if per_sample else [gen_naive]):
        assert torch.equal(a.get_state(), b.get_state())
    if tau == 10.0:
        assert all(s.exit_iteration == [1] * batch for s in result.stats.steps if s.planned > 1)


def test_pinned_frames_match_naive():
    latents, targets, gains = problem(2, 7)
    cfg = PnPConfig(plan=PLANS["k3"], tau=0.05, certain_stop=0.95, backend="torch")
    result = pnp_sample(ToyDenoiser(targets, gains, SHAPE[0]), latents, SIGMAS, cfg,
                        generator=generators(3, 2, True), num_pinned_frames=1)
    expected = naive_pnp(ToyDenoiser(targets, gains, SHAPE[0]), latents, SIGMAS, PLANS["k3"], 0.05, 1, 0.95,
                         generators(3, 2, True), num_pinned_frames=1)
    torch.testing.assert_close(result.latents, expected, rtol=0, atol=1e-6)
    assert torch.equal(result.latents[:, :, 0], latents[:, :, 0])  # the condition frame never moves


def test_batch_equals_samples_one_by_one_with_different_exits():
    # Error gains spread over two orders of magnitude: samples leave the refined steps at different iterations.
    latents, targets, _ = problem(3, 11)
    gains = [0.01, 0.3, 3.0]
    cfg = PnPConfig(plan=[(1, 3, 3)], tau=0.05, certain_stop=0.9, backend="torch")
    denoiser = ToyDenoiser(targets, gains, SHAPE[0])
    batched = pnp_sample(denoiser, latents, SIGMAS, cfg, generator=generators(5, 3, True))
    exits = [tuple(s.exit_iteration) for s in batched.stats.steps if s.planned]
    assert len({e for step in exits for e in step}) > 1, f"test needs samples that exit differently, got {exits}"
    for b in range(3):
        single = pnp_sample(denoiser.select(b), latents[b : b + 1], SIGMAS, cfg,
                            generator=[torch.Generator().manual_seed(5 + b)])
        torch.testing.assert_close(batched.latents[b : b + 1], single.latents, rtol=0, atol=1e-6)
        assert [s.exit_iteration[0] for s in single.stats.steps] == [s.exit_iteration[b] for s in batched.stats.steps]
        assert single.stats.nfe == batched.stats.nfe_per_sample[b]


def test_philox_batch_equals_samples_and_ignores_plan_changes():
    latents, targets, gains = problem(3, 13)
    denoiser = ToyDenoiser(targets, gains, SHAPE[0])
    cfg = PnPConfig(plan=[(1, 2, 2)], tau=0.0, noise="philox", backend="torch")
    batched = pnp_sample(denoiser, latents, SIGMAS, cfg, seed=100)
    for b in range(3):
        single = pnp_sample(denoiser.select(b), latents[b : b + 1], SIGMAS, cfg, seed=[100 + b])
        torch.testing.assert_close(batched.latents[b : b + 1], single.latents, rtol=0, atol=1e-6)


@pytest.mark.parametrize("noise", ["philox", "generator"])
def test_noise_depends_on_the_plan_only_in_generator_mode(noise):
    # With the ideal denoiser x0 = target whatever its input, so a perturbed input reveals its noise:
    # eps = (z_in - (1 - s) target) / s. Refining step 1 as well must not change step 3's noise in
    # philox mode (draws depend on seed, sample, step, iteration only); it does in generator mode.
    latents, targets, _ = problem(2, 37)
    ideal = ToyDenoiser(targets, [0.0, 0.0], SHAPE[0])

    def noise_at_step3(plan):
        seen = {}

        def denoise(z, i, s):
            seen.setdefault(i, []).append(z.clone())
            return ideal(z, i, s)

        extra = dict(seed=5) if noise == "philox" else dict(generator=torch.Generator().manual_seed(5))
        pnp_sample(denoise, latents, SIGMAS, PnPConfig(plan=plan, tau=0.0, noise=noise), **extra)
        s = float(SIGMAS[3])
        return (seen[3][1] - (1 - s) * targets) / s

    alone, with_earlier = noise_at_step3([(3, 3, 1)]), noise_at_step3([(1, 1, 2), (3, 3, 1)])
    assert 0.9 < alone.std() < 1.1
    if noise == "philox":
        torch.testing.assert_close(alone, with_earlier, rtol=0, atol=1e-4)
    else:
        assert (alone - with_earlier).abs().max() > 1.0


@pytest.mark.parametrize("plan, tau", [([(0, 2, 3), (4, 6, 1)], 0.0), ([(0, 2, 3), (4, 6, 1)], 0.08), ([], 0.0)])
def test_nfe_counts_model_calls(plan, tau):
    latents, targets, gains = problem(2, 17)
    denoiser = ToyDenoiser(targets, gains, SHAPE[0], guided=True)
    cfg = PnPConfig(plan=plan, tau=tau, certain_stop=0.9)
    stats = pnp_sample(denoiser, latents, SIGMAS, cfg, generator=torch.Generator().manual_seed(0)).stats
    assert stats.nfe == denoiser.calls == sum(s.nfe for s in stats.steps)
    assert all(s.nfe == s.iterations_run + 1 for s in stats.steps)
    if tau == 0.0:  # nothing is ever certain: every planned iteration runs
        assert stats.nfe == 8 + RefinePlan(plan).extra_nfe(8)
        assert stats.early_exits == 0
    assert stats.time_total >= stats.time_model > 0
    assert "model calls" in stats.summary() and stats.to_dict()["nfe"] == stats.nfe


def test_uncertainty_capture_and_callback():
    latents, targets, gains = problem(2, 19)
    events = []
    result = pnp_sample(ToyDenoiser(targets, gains, SHAPE[0]), latents, SIGMAS, PnPConfig(plan=[(1, 2, 2)], tau=0.05),
                        generator=torch.Generator().manual_seed(0), capture_uncertainty=True, callback=events.append)
    maps = result.stats.uncertainty_maps
    assert [(m["step"], m["iteration"]) for m in maps] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert maps[0]["uncertainty"].shape == (2, *SHAPE[1:]) and maps[0]["certain"].dtype == torch.bool
    assert torch.equal(maps[0]["certain"], maps[0]["uncertainty"] < 0.05)
    assert len(events) == result.stats.nfe
    assert events[2].step == 1 and events[2].iteration == 1 and len(events[2].certain_fraction) == 2


def test_input_latents_untouched():
    latents, targets, gains = problem(1, 23)
    copy = latents.clone()
    pnp_sample(ToyDenoiser(targets, gains, SHAPE[0]), latents, SIGMAS, generator=torch.Generator().manual_seed(0),
               config=PnPConfig(plan=[(1, 2, 1)]))
    assert torch.equal(latents, copy)


@pytest.mark.parametrize("step, iteration", [(2, 2), (6, 0), (0, 0)])
def test_nan_from_the_model_names_step_and_iteration(step, iteration):
    latents, targets, gains = problem(2, 29)
    toy = ToyDenoiser(targets, gains, SHAPE[0])
    where = {}

    def denoise(z, i, s):
        k = where[i] = where.get(i, -1) + 1
        v = toy(z, i, s)
        return v * float("nan") if (i, k) == (step, iteration) else v

    cfg = PnPConfig(plan=[(1, 3, 3)], tau=0.0)
    with pytest.raises(NonFiniteError, match=f"step {step}, iteration {iteration}"):
        pnp_sample(denoise, latents, SIGMAS, cfg, generator=torch.Generator().manual_seed(0))
    where.clear()
    quiet = pnp_sample(denoise, latents, SIGMAS, PnPConfig(plan=[(1, 3, 3)], tau=0.0, nan_check=False),
                       generator=torch.Generator().manual_seed(0))
    assert torch.isnan(quiet.latents).any()


def bad_call(**overrides):
    latents, targets, gains = problem(2, 31)
    args = dict(denoise=ToyDenoiser(targets, gains, SHAPE[0]), latents=latents, sigmas=SIGMAS,
                config=PnPConfig(plan=[(1, 2, 1)]), generator=torch.Generator())
    args.update(overrides)
    return pnp_sample(**args)


@pytest.mark.parametrize(
    "overrides, error, words",
    [
        ({"config": PnPConfig(plan=[(1, 9, 1)])}, ValueError, "refers to step 9 but the run has 8 steps"),
        ({"sigmas": torch.tensor([1.0, 0.5, 0.7, 0.0])}, ValueError, "non-increasing"),
        ({"sigmas": [1.0, 1.5, 0.0]}, ValueError, r"sigmas\[1\]"),
        ({"sigmas": [1.0]}, ValueError, "at least 2"),
        ({"sigmas": torch.ones(2, 2)}, ValueError, "1-D"),
        ({"latents": torch.zeros(2, 4, 3, 5)}, ValueError, "latents"),
        ({"latents": torch.zeros(2, 4, 3, 5, 7, dtype=torch.int64)}, ValueError, "latents"),
        ({"denoise": "model"}, TypeError, "denoise"),
        ({"config": {"tau": 0.2}}, TypeError, "config"),
        ({"generator": [torch.Generator()]}, ValueError, "1 generators for a batch of 2"),
        ({"generator": 3}, TypeError, "generator"),
        ({"seed": 3}, ValueError, "seed="),
        ({"config": PnPConfig(plan=[], noise="philox"), "generator": None}, ValueError, "needs seed"),
        ({"config": PnPConfig(plan=[], noise="philox"), "seed": [1, 2, 3], "generator": None}, ValueError, "3 entries"),
        ({"num_pinned_frames": 3}, ValueError, "num_pinned_frames"),
        ({"denoise": lambda z, i, s: z[:, :2]}, ValueError, "step 0, iteration 0"),
        ({"denoise": lambda z, i, s: Guided(z, z, "high")}, TypeError, "scale"),
        ({"denoise": lambda z, i, s: z.numpy()}, TypeError, "tensor or Guided"),
    ],
)
def test_bad_input(overrides, error, words):
    with pytest.raises(error, match=words):
        bad_call(**overrides)


def test_step_end_hook_can_replace_the_state():
    latents, targets, gains = problem(1, 41)
    seen = []

    def step_end(step, z):
        seen.append(step)
        return torch.zeros_like(z) if step == 7 else None

    result = pnp_sample(ToyDenoiser(targets, gains, SHAPE[0]), latents, SIGMAS, PnPConfig(plan=[(1, 2, 1)]),
                        generator=torch.Generator().manual_seed(0), step_end=step_end)
    assert seen == list(range(8)) and not result.latents.any()
    with pytest.raises(ValueError, match="step_end returned"):
        bad_call(step_end=lambda step, z: z[:, :1])


def test_without_a_generator_the_noise_is_torchs_global_random_state():
    # README, "Noise": as a diffusers pipeline called without generator=; reproducible after manual_seed.
    latents, targets, gains = problem(2, 47)
    denoise, config, seed = ToyDenoiser(targets, gains, SHAPE[0]), PnPConfig(plan=[(1, 3, 2)], tau=0.0), 12345
    torch.manual_seed(seed)
    implicit = pnp_sample(denoise, latents, SIGMAS, config).latents
    explicit = pnp_sample(denoise, latents, SIGMAS, config, generator=torch.Generator().manual_seed(seed)).latents
    torch.manual_seed(seed + 1)
    other = pnp_sample(denoise, latents, SIGMAS, config).latents
    assert torch.equal(implicit, explicit) and not torch.equal(implicit, other)


def test_nan_from_step_end_is_blamed_on_step_end_not_the_model():
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    bad_step = int(torch.randint(0, 7, (), generator=g))
    position = tuple(int(torch.randint(0, n, (), generator=g)) for n in (2, *SHAPE))

    def step_end(step, z):
        if step != bad_step:
            return None
        poisoned = z.clone()
        poisoned[position] = float("inf") if position[0] else float("nan")
        return poisoned

    with pytest.raises(NonFiniteError, match=f"step_end returned after step {bad_step} contains NaN/Inf") as caught:
        bad_call(step_end=step_end)
    assert "model" not in str(caught.value)
    unchecked = bad_call(step_end=step_end, config=PnPConfig(plan=[(1, 2, 1)], nan_check=False))
    assert not torch.isfinite(unchecked.latents).all()


def test_at_most_one_host_read_per_refined_iteration(monkeypatch):
    # docs/ALGORITHM.md, "Host reads": count every way a tensor reaches the host during a run.
    latents, targets, gains = problem(2, 43)
    denoiser = ToyDenoiser(targets, gains, SHAPE[0])
    reads = []
    for name in ("tolist", "item", "cpu", "numpy", "__bool__", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    cfg = PnPConfig(plan=[(1, 3, 3), (5, 6, 1)], tau=0.0)
    stats = pnp_sample(denoiser, latents, SIGMAS, cfg, generator=torch.Generator().manual_seed(0)).stats
    monkeypatch.undo()
    refined_iterations = sum(s.iterations_run for s in stats.steps)
    assert refined_iterations == 3 * 3 + 2
    # + reading the sigma grid and checking the input latents before the loop, + the final NaN check
    assert len(reads) <= refined_iterations + 3, reads


def channels_last(t):
    return t.to(memory_format=torch.channels_last_3d)


def permuted_view(t):
    return t.permute(0, 2, 1, 3, 4).contiguous().permute(0, 2, 1, 3, 4)


@pytest.mark.parametrize("layout", [channels_last, permuted_view])
def test_generator_noise_does_not_depend_on_memory_layout(layout):
    latents, targets, gains = problem(2, 47)
    strided = layout(latents)
    assert torch.equal(strided, latents) and strided.stride() != latents.stride()
    cfg = PnPConfig(plan=[(1, 3, 2)], tau=0.05, certain_stop=0.95)
    runs = [pnp_sample(ToyDenoiser(targets, gains, SHAPE[0]), z, SIGMAS, cfg, generator=torch.Generator().manual_seed(4))
            for z in (latents, strided)]
    assert torch.equal(runs[0].latents, runs[1].latents)


@pytest.mark.parametrize(
    "overrides, error, words",
    [
        ({"capture_uncertainty": "no"}, TypeError, "capture_uncertainty must be True or False"),
        ({"capture_uncertainty": None}, TypeError, "capture_uncertainty must be True or False"),
        ({"callback": 3}, TypeError, "callback must be callable"),
        ({"step_end": 3}, TypeError, "step_end must be callable"),
        ({"sigmas": [1.0, 10**400, 0.0]}, ValueError, r"sigmas\[1\]"),
        ({"latents": torch.zeros(2, 4, 0, 5, 7)}, ValueError, r"latents tensor has no frames \(F = 0"),
        ({"latents": torch.zeros(2, 4, 3, 5, 7, device="meta")}, ValueError, "latents is on the meta device"),
        ({"latents": torch.full((2, 4, 3, 5, 7), float("nan"))}, ValueError, "latents contain NaN/Inf"),
        ({"latents": [[0.0]]}, TypeError, "latents must be a torch.Tensor"),
        ({"group": 3}, TypeError, "group must be 'auto', None or a torch.distributed ProcessGroup"),
        ({"group": "world"}, ValueError, "group must be one of"),
        ({"config": PnPConfig(plan=[(1, 2, 1)], noise="philox"), "generator": None, "seed": [1.5, 2]},
         TypeError, r"seed\[0\] must be an integer"),
    ],
)
def test_bad_input_is_refused_before_any_model_call(overrides, error, words):
    latents, targets, gains = problem(2, 53)
    toy = ToyDenoiser(targets, gains, SHAPE[0])
    args = dict(denoise=toy, latents=latents, sigmas=SIGMAS, config=PnPConfig(plan=[(1, 2, 1)]),
                generator=torch.Generator())
    args.update(overrides)
    with pytest.raises(error, match=words):
        pnp_sample(**args)
    assert toy.calls == 0


def test_bad_values_returned_by_the_caller_name_what_returned_them():
    with pytest.raises(ValueError, match="guidance scale at step 0, iteration 0 must be a finite number"):
        bad_call(denoise=lambda z, i, s: Guided(z, z, 10**400))
    with pytest.raises(ValueError, match="step_end returned after step 0 must be a floating-point tensor"):
        bad_call(step_end=lambda step, z: z.to(torch.int32))


def test_nan_at_a_plain_step_is_reported_within_a_few_calls():
    # A 40-step plain run: the NaN of step 3 stops the run after at most NAN_READ_INTERVAL more calls,
    # not at the end of the run, and the message names step 3.
    from pnp_kernels.engine import NAN_READ_INTERVAL

    latents, targets, gains = problem(1, 59)
    toy = ToyDenoiser(targets, gains, SHAPE[0])

    def denoise(z, i, s):
        v = toy(z, i, s)
        return v * float("nan") if i == 3 else v

    with pytest.raises(NonFiniteError, match="step 3, iteration 0"):
        pnp_sample(denoise, latents, torch.linspace(1, 0, 41), PnPConfig(plan=[]))
    assert toy.calls <= 4 + NAN_READ_INTERVAL


def test_host_reads_of_a_plain_run(monkeypatch):
    from pnp_kernels.engine import NAN_READ_INTERVAL

    latents, targets, gains = problem(1, 61)
    reads = []
    original = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: reads.append(1) or original(self))
    pnp_sample(ToyDenoiser(targets, gains, SHAPE[0]), latents, torch.linspace(1, 0, 41), PnPConfig(plan=[]))
    monkeypatch.undo()
    assert len(reads) <= 40 // NAN_READ_INTERVAL + 2  # + the sigma grid, + the final check
