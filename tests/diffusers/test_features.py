"""diffusers features with P&P on (tiny Wan T2V): callbacks, compilation, offloading, refusals (caches: test_caches.py)."""
import pytest
import torch
from diffusers import DDIMScheduler, FlowMatchHeunDiscreteScheduler, FlowMatchLCMScheduler, WanPipeline

from pnp_kernels import PnPConfig
from pnp_kernels.diffusers import disable_pnp, enable_pnp
from pnp_kernels.threads import single_thread
from tests.diffusers.test_wan import PLAN, STEPS, make, run
from tests.wan import tiny

CONFIG = PnPConfig(plan=PLAN, tau=0.3)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Bitwise comparisons on one thread: with two, CPU BLAS can split a product differently when the
    same weights sit elsewhere in memory (an offloaded or copied module), which moves the last bits."""
    with single_thread():
        yield


@pytest.fixture(scope="module")
def reference(one_thread):
    """P&P output of the plain tiny pipeline (seed 0), to compare each feature against."""
    return run(enable_pnp(make(), CONFIG)).clone()


def test_callback_on_step_end_sees_every_loop_entry(reference):
    pipe = enable_pnp(make(), CONFIG)
    seen = []

    def callback(pipe_, i, t, tensors):
        seen.append((i, float(t)))
        return {"latents": tensors["latents"].clone()}  # a new tensor with the same values

    out = run(pipe, callback_on_step_end=callback)
    grid = pipe.scheduler
    assert [i for i, _ in seen] == list(range(len(grid.timesteps)))  # one call per model evaluation entry
    assert [t for _, t in seen] == grid.timesteps.tolist()
    assert torch.equal(out, reference)


def test_callback_replacing_latents_after_a_step_changes_the_state(reference):
    pipe = enable_pnp(make(), CONFIG)
    schedule = None

    def halve_after_step_zero(pipe_, i, t, tensors):
        nonlocal schedule
        schedule = pipe_.scheduler.schedule
        step, _, last = schedule[i]
        return {"latents": tensors["latents"] * 0.5} if (step == 0 and last) else {}

    out = run(pipe, callback_on_step_end=halve_after_step_zero)
    assert schedule is not None and not torch.allclose(out, reference, atol=1e-3)


def test_compile_repeated_blocks(reference):
    pipe = enable_pnp(make(), CONFIG)
    pipe.transformer.compile_repeated_blocks(backend="eager")
    diff = (run(pipe) - reference).abs().max().item()
    assert diff <= 1e-5, diff


def test_group_offloading(reference):
    pipe = enable_pnp(make(), CONFIG)
    pipe.transformer.enable_group_offload(torch.device("cpu"), offload_type="block_level", num_blocks_per_group=1)
    diff = (run(pipe) - reference).abs().max().item()
    assert diff <= 1e-6, diff


def test_model_cpu_offload(reference):
    pipe = enable_pnp(make(), CONFIG)
    pipe.enable_model_cpu_offload(device="cpu")
    diff = (run(pipe) - reference).abs().max().item()
    assert diff <= 1e-6, diff


def test_lora_loading(reference):
    pytest.importorskip("peft")
    from peft import LoraConfig

    pipe = enable_pnp(make(), CONFIG)
    pipe.transformer.add_adapter(LoraConfig(r=2, target_modules=["to_q", "to_k"], init_lora_weights=False))
    with_lora = run(pipe)
    assert not torch.allclose(with_lora, reference, atol=1e-4)
    pipe.transformer.disable_adapters()
    diff = (run(pipe) - reference).abs().max().item()
    assert diff <= 1e-6, diff


@pytest.mark.parametrize(
    "scheduler, match",
    [(DDIMScheduler(), "DDIMScheduler, which is not a flow-matching scheduler"),
     (FlowMatchHeunDiscreteScheduler(), "order 2"), (FlowMatchLCMScheduler(), "re-noises after every step")],
)
def test_schedulers_that_cannot_run_are_refused(scheduler, match):
    with pytest.raises(ValueError, match=match):
        enable_pnp(make(scheduler=scheduler), CONFIG)


def test_sigmas_outside_zero_one_are_refused():
    pipe = enable_pnp(make(), CONFIG)
    edm_grid = torch.tensor([80.0, 7.0, 0.5, 0.002])  # Cosmos 2: z = x + sigma eps
    with pytest.raises(ValueError, match=r"sigmas run from 80 to 0.002; P&P needs flow-matching sigmas in \[0, 1\]"):
        pipe._pnp_session.resolve_plan(edm_grid)


def test_a_loop_without_scheduler_step_is_refused():
    class NoStepPipeline(WanPipeline):
        def __call__(self, **kwargs):
            return None

    with pytest.raises(ValueError, match="never calls scheduler.step"):
        enable_pnp(NoStepPipeline(**tiny.components("t2v")), CONFIG)


def test_mid_grid_start_is_refused():
    from diffusers import WanVideoToVideoPipeline

    pipe = enable_pnp(make(), CONFIG)
    with pytest.raises(ValueError, match="begin_index=2"):
        pipe.scheduler.set_begin_index(2)
    with pytest.raises(ValueError, match="WanVideoToVideoPipeline is not supported: its strength"):
        enable_pnp(WanVideoToVideoPipeline(**tiny.components("t2v")), CONFIG)
    session = pipe._pnp_session  # a loop that skips the first timestep is caught at its first step
    session.in_call = True
    pipe.scheduler.set_timesteps(STEPS)
    with pytest.raises(ValueError, match="first timestep is .* but the grid starts at"):
        pipe.scheduler.step(torch.zeros(1, 16, 3, 6, 4), pipe.scheduler.timesteps[1], torch.zeros(1, 16, 3, 6, 4))


def test_from_pipe_and_save_pretrained_see_the_stock_pipeline(tmp_path):
    pipe = make()
    stock = run(pipe)
    enable_pnp(pipe, CONFIG)
    copy = WanPipeline.from_pipe(pipe)  # the real scheduler, no P&P
    copy.set_progress_bar_config(disable=True)
    assert torch.equal(run(copy), stock)
    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "scheduler" / "scheduler_config.json").exists()
    assert tuple(WanPipeline.load_config(tmp_path)["scheduler"]) == ("diffusers", "FlowMatchEulerDiscreteScheduler")
    leaked = WanPipeline(**{**tiny.components("t2v"), "scheduler": pipe.scheduler})  # the stand-in itself
    leaked.set_progress_bar_config(disable=True)
    with pytest.raises(RuntimeError, match=r"outside a call of the pipeline P&P is enabled on"):
        run(leaked)


def test_bad_arguments_and_states():
    pipe = make()
    with pytest.raises(TypeError, match="DiffusionPipeline"):
        enable_pnp(pipe.transformer, CONFIG)
    with pytest.raises(TypeError, match="PnPConfig"):
        enable_pnp(pipe, "2-5:3")
    with pytest.raises(ValueError, match="seed=3 is only used with PnPConfig\\(noise='philox'\\)"):
        enable_pnp(pipe, CONFIG, seed=3)
    with pytest.raises(TypeError, match="group must be 'auto', None or a torch.distributed ProcessGroup, got 1"):
        enable_pnp(pipe, CONFIG, group=1)
    with pytest.raises(ValueError, match="not enabled"):
        disable_pnp(pipe)
    enable_pnp(pipe, CONFIG)
    with pytest.raises(ValueError, match="already enabled"):
        enable_pnp(pipe, CONFIG)
    pipe.scheduler = tiny.scheduler()
    with pytest.raises(ValueError, match="scheduler was replaced"):
        run(pipe)
    disable_pnp(pipe)
    enable_pnp(pipe, PnPConfig(plan="9:1"))
    with pytest.raises(ValueError, match="refers to step 9"):
        run(pipe)


def test_plan_by_fraction_and_expert_is_resolved_on_the_call_grid():
    pipe = enable_pnp(make("a14b"), PnPConfig(plan="f0-0.5:1@high"))
    run(pipe, guidance_scale_2=2.0)
    stats = pipe.pnp_stats
    boundary = pipe.config.boundary_ratio
    planned = [s.step for s in stats.steps if s.planned]
    assert planned and all(s.sigma >= boundary for s in stats.steps if s.planned)
    assert all(s.planned == 0 for s in stats.steps if s.sigma < boundary)
