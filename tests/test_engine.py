"""PnPEngine driven call by call: against the naive loop, two engines sharing one model call, frozen
samples, which buffers the op is asked to write, and misuse of the call protocol."""
import pytest
import torch

from pnp_kernels import Guided, PnPConfig, pnp_sample
from pnp_kernels.engine import PnPEngine, advance_together
import pnp_kernels.engine.state as engine_module
from tests.naive import ToyDenoiser, naive_pnp

SIGMAS = torch.linspace(1.0, 0.0, 7)
VIDEO = (4, 3, 5, 7)  # C, F, H, W
AUDIO = (2, 1, 9, 3)


def fresh(batch, shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *shape, generator=g), torch.randn(batch, *shape, generator=g)


def per_sample(seed, batch):
    return [torch.Generator().manual_seed(seed + b) for b in range(batch)]


def drive(engine, denoise):
    """The loop a caller writes around the engine (pnp_sample without hooks)."""
    for step in range(engine.num_steps):
        z_in = engine.begin_step(step)
        while z_in is not None:
            out = denoise(z_in, step, engine.sigmas[step])
            z_in = engine.feed(out.cond, out.uncond, out.scale) if isinstance(out, Guided) else engine.feed(out)
    return engine.finish()


def drive_together(engines, models):
    """Engines that share each model call, each with its own (uncoupled) model."""
    for step in range(len(SIGMAS) - 1):
        inputs = [e.begin_step(step) for e in engines]
        while inputs[0] is not None:
            for e, m, z_in in zip(engines, models, inputs):
                e.update(m(z_in, step, e.sigmas[step]))
            inputs = advance_together(engines)


def test_driven_engine_matches_naive_loop():
    seed = int(torch.randint(0, 2**31, ()))
    latents, targets = fresh(3, VIDEO, seed)
    toy = ToyDenoiser(targets, [0.02, 0.4, 2.0], VIDEO[0], guided=True)
    cfg = PnPConfig(plan=[(1, 3, 3), (4, 4, 1)], tau=0.05, certain_stop=0.9, backend="torch")
    engine = PnPEngine(cfg, SIGMAS, latents, generator=per_sample(seed, 3))
    stats = drive(engine, toy)
    assert stats.nfe == toy.calls
    expected = naive_pnp(toy, latents, SIGMAS, cfg.plan.ranges, 0.05, 1, 0.9, per_sample(seed, 3))
    torch.testing.assert_close(engine.z, expected, rtol=0, atol=1e-6)


def test_two_engines_sharing_a_model_call_equal_each_engine_alone():
    # Uncoupled video and audio denoisers: each engine's result must equal its run alone, while the
    # joint step runs as many model calls as the engine that iterates longest.
    seed = int(torch.randint(0, 2**31, ()))
    video, video_targets = fresh(2, VIDEO, seed)
    audio, audio_targets = fresh(2, AUDIO, seed + 1)
    video_model = ToyDenoiser(video_targets, [0.01, 0.05], VIDEO[0])
    audio_model = ToyDenoiser(audio_targets, [1.0, 3.0], AUDIO[0], seed=1)
    cfg = PnPConfig(plan=[(1, 3, 3)], tau=0.05, certain_stop=0.9, backend="torch")
    alone_gens = per_sample(seed, 2) + per_sample(seed + 10, 2)
    alone_video = pnp_sample(video_model, video, SIGMAS, cfg, generator=alone_gens[:2])
    alone_audio = pnp_sample(audio_model, audio, SIGMAS, cfg, generator=alone_gens[2:])
    alone_calls = [(v.nfe, a.nfe) for v, a in zip(alone_video.stats.steps, alone_audio.stats.steps)]
    assert any(v != a for v, a in alone_calls), f"test needs engines that stop at different iterations: {alone_calls}"

    video_gens, audio_gens = per_sample(seed, 2), per_sample(seed + 10, 2)
    engines = [PnPEngine(cfg, SIGMAS, video, generator=video_gens), PnPEngine(cfg, SIGMAS, audio, generator=audio_gens)]
    joint_calls = []
    for step in range(len(SIGMAS) - 1):
        inputs, calls = [e.begin_step(step) for e in engines], 0
        while inputs[0] is not None:
            calls += 1
            sigma = engines[0].sigmas[step]
            engines[0].update(video_model(inputs[0], step, sigma))
            engines[1].update(audio_model(inputs[1], step, sigma))
            inputs = advance_together(engines)
            assert (inputs[0] is None) == (inputs[1] is None)
        joint_calls.append(calls)
    stats = [e.finish() for e in engines]

    assert joint_calls == [max(v, a) for v, a in alone_calls]
    torch.testing.assert_close(engines[0].z, alone_video.latents, rtol=0, atol=0)
    torch.testing.assert_close(engines[1].z, alone_audio.latents, rtol=0, atol=0)
    for joint, alone in ((stats[0], alone_video.stats), (stats[1], alone_audio.stats)):
        assert [s.exit_iteration for s in joint.steps] == [s.exit_iteration for s in alone.steps]
        assert joint.nfe_per_sample == alone.nfe_per_sample
    # a frozen engine draws no noise: its generators end where its run alone left them
    for joint_gen, alone_gen in zip(video_gens + audio_gens, alone_gens):
        assert torch.equal(joint_gen.get_state(), alone_gen.get_state())


def test_an_engine_that_stops_never_rewinds_a_generator_another_engine_drew_from_since():
    # Video (an ideal denoiser) is certain everywhere at iteration 1 and stops; audio (a poor one)
    # goes on. Video's draw for iteration 2 came before audio's: giving it back would make audio's
    # next draw repeat numbers it already used. The spent draw must stay spent.
    video, video_targets = fresh(1, VIDEO, 5)
    audio, audio_targets = fresh(1, AUDIO, 6)
    models = [ToyDenoiser(video_targets, [0.0], VIDEO[0]), ToyDenoiser(audio_targets, [50.0], AUDIO[0], seed=1)]
    cfg = PnPConfig(plan=[(1, 1, 3)], tau=0.05, certain_stop=0.9, backend="torch")
    shared = torch.Generator().manual_seed(9)
    engines = [PnPEngine(cfg, SIGMAS, video, generator=shared), PnPEngine(cfg, SIGMAS, audio, generator=shared)]
    drive_together(engines, models)
    video_stats, audio_stats = (e.finish() for e in engines)
    assert video_stats.steps[1].exit_iteration == [1]
    assert audio_stats.steps[1].iterations_run == 3

    expected = torch.Generator().manual_seed(9)
    for shape in (video.shape, audio.shape, video.shape, audio.shape, audio.shape):
        torch.randn(shape, generator=expected)
    assert torch.equal(shared.get_state(), expected.get_state())


def test_engines_sharing_one_generator_rewind_it_in_order():
    # tau large: every refined step stops after iteration 1, so the draws both engines made for
    # iteration 2 are given back. One shared generator must then hold exactly the draws used:
    # video then audio noise, once per refined step.
    video, video_targets = fresh(1, VIDEO, 3)
    audio, audio_targets = fresh(1, AUDIO, 4)
    models = [ToyDenoiser(video_targets, [0.1], VIDEO[0]), ToyDenoiser(audio_targets, [0.1], AUDIO[0], seed=1)]
    cfg = PnPConfig(plan=[(1, 2, 3), (4, 4, 2)], tau=10.0, backend="torch")
    shared = torch.Generator().manual_seed(9)
    engines = [PnPEngine(cfg, SIGMAS, video, generator=shared), PnPEngine(cfg, SIGMAS, audio, generator=shared)]
    drive_together(engines, models)
    assert [s.iterations_run for s in engines[0].finish().steps] == [0, 1, 1, 0, 1, 0]

    expected = torch.Generator().manual_seed(9)
    for _ in range(3):  # refined steps 1, 2, 4
        torch.randn(video.shape, generator=expected)
        torch.randn(audio.shape, generator=expected)
    assert torch.equal(shared.get_state(), expected.get_state())


def test_frozen_sample_is_fed_its_last_input():
    latents, targets = fresh(2, VIDEO, 5)
    toy = ToyDenoiser(targets, [0.0, 3.0], VIDEO[0])  # sample 0 is certain at once, sample 1 is not
    cfg = PnPConfig(plan=[(2, 2, 3)], tau=0.05, certain_stop=0.9, backend="torch")
    engine = PnPEngine(cfg, SIGMAS, latents, generator=torch.Generator().manual_seed(0))
    inputs, activity = [], []
    for step in range(engine.num_steps):
        z_in = engine.begin_step(step)
        while z_in is not None:
            if step == 2:
                inputs.append(z_in.clone())
                activity.append(list(engine.iterating))
            z_in = engine.feed(toy(z_in, step, engine.sigmas[step]))
    assert activity == [[True, True], [True, True], [False, True], [False, True]]
    assert engine.stats.steps[-1].step == 5 and engine.stats.steps[2].exit_iteration == [1, None]
    assert torch.equal(inputs[2][0], inputs[1][0]) and torch.equal(inputs[3][0], inputs[1][0])
    assert not torch.equal(inputs[2][1], inputs[1][1])


def test_a_caller_can_end_a_step_early():
    # advance(keep_going=False) after iteration 1 of a K=3 step is the same as a plan with K=1 there:
    # same result, same generator draws (the draw made for iteration 2 is given back).
    latents, targets = fresh(2, VIDEO, 9)
    toy = ToyDenoiser(targets, [0.1, 0.5], VIDEO[0])
    generators = [torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)]
    engine = PnPEngine(PnPConfig(plan=[(2, 2, 3)], tau=0.0), SIGMAS, latents, generator=generators[0])
    for step in range(engine.num_steps):
        z_in = engine.begin_step(step)
        while z_in is not None:
            engine.update(toy(z_in, step, engine.sigmas[step]))
            z_in = engine.advance(keep_going=False if engine.iteration == 1 else None)
    stats = engine.finish()
    expected = pnp_sample(toy, latents, SIGMAS, PnPConfig(plan=[(2, 2, 1)], tau=0.0), generator=generators[1])
    assert torch.equal(engine.z, expected.latents)
    assert torch.equal(generators[0].get_state(), generators[1].get_state())
    assert stats.steps[2].exit_iteration == [1, 1] and stats.nfe == expected.stats.nfe


def test_op_writes_x0_and_mask_only_when_they_are_read(monkeypatch):
    calls = []

    def spy(inputs, out, backend):
        calls.append((inputs.store_state, inputs.noise is not None))
        return original(inputs, out, backend)

    original = engine_module.update_checked
    monkeypatch.setattr(engine_module, "update_checked", spy)
    latents, targets = fresh(1, VIDEO, 6)
    cfg = PnPConfig(plan=[(1, 1, 2)], tau=0.0, backend="torch")
    pnp_sample(ToyDenoiser(targets, [0.1], VIDEO[0]), latents, SIGMAS[:4], cfg, generator=torch.Generator())
    # plain step 0; step 1: iterations 0, 1 (state kept, noise for the next) and 2 (last); plain step 2
    assert calls == [(False, False), (True, True), (True, True), (False, False), (False, False)]


def test_call_protocol_misuse():
    latents, targets = fresh(1, VIDEO, 8)
    toy = ToyDenoiser(targets, [0.1], VIDEO[0])
    engine = PnPEngine(PnPConfig(plan=[(0, 0, 1)]), SIGMAS, latents, generator=torch.Generator())
    with pytest.raises(RuntimeError, match="begin_step first"):
        engine.update(latents)
    with pytest.raises(ValueError, match="step must be 0"):
        engine.begin_step(1)
    z_in = engine.begin_step(0)
    with pytest.raises(RuntimeError, match="advance before update"):
        engine.advance()
    with pytest.raises(RuntimeError, match="still running"):
        engine.finish()
    with pytest.raises(RuntimeError, match="set_state during step 0"):
        engine.set_state(latents)
    with pytest.raises(ValueError, match=r"velocity at step 0, iteration 0 has shape"):
        engine.update(z_in[:, :1])
    engine.update(toy(z_in, 0, 1.0))
    with pytest.raises(RuntimeError, match="update twice"):
        engine.update(toy(z_in, 0, 1.0))
    with pytest.raises(TypeError, match="keep_going"):
        engine.advance(keep_going="yes")


@pytest.mark.gpu
@pytest.mark.parametrize("noise", ["philox", "generator"])
def test_cuda_run_matches_the_cpu_reference(noise, monkeypatch):
    # The engine's device paths: CUDA buffers and events, the fastest backend "auto" finds, and in
    # generator mode a CPU generator drawing for CUDA latents. tau = 0: no certain mask, so backends
    # that round differently in the last bit cannot flip a decision.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # the toy's conv in full float32
    latents, targets = fresh(2, VIDEO, 12)
    cfg = PnPConfig(plan=[(1, 3, 2)], tau=0.0, noise=noise)
    results = {}
    for device in ("cpu", "cuda"):
        toy = ToyDenoiser(targets, [0.1, 0.5], VIDEO[0])
        toy.targets, toy.gains, toy.w_cond = (t.to(device) for t in (toy.targets, toy.gains, toy.w_cond))
        source = {"seed": 5} if noise == "philox" else {"generator": torch.Generator().manual_seed(5)}
        results[device] = pnp_sample(toy, latents.to(device), SIGMAS, cfg, **source)
    assert results["cuda"].latents.is_cuda and results["cuda"].stats.time_model > 0
    assert results["cpu"].stats.backend == "torch" and results["cuda"].stats.backend in ("triton", "cuda", "torch")
    torch.testing.assert_close(results["cuda"].latents.cpu(), results["cpu"].latents, rtol=1e-4, atol=1e-4)
