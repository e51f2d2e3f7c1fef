"""One test per assumption pnp_kernels.compat makes about diffusers' internals (and the scheduler and
pipeline behaviour the P&P stand-in relies on): an upgrade that changes one fails here, by name."""
import inspect

import pytest
import torch

from pnp_kernels import compat
from tests.wan import tiny


def test_attention_version_floors_are_diffusers_own():
    from diffusers.models import attention_dispatch

    assert compat.ATTENTION_VERSION_FLOORS == {
        "flash": attention_dispatch._REQUIRED_FLASH_VERSION,
        "xformers": attention_dispatch._REQUIRED_XFORMERS_VERSION,
        "sage": attention_dispatch._REQUIRED_SAGE_VERSION,
    }


def test_set_attention_backend_is_stored_on_the_processors():
    from diffusers.models.attention_dispatch import attention_backend

    model = tiny.transformer()
    processors = compat.processors_with_backend([model])
    assert processors and all(compat.processor_backend(p) is None for p in processors)
    with attention_backend("native"):  # set_attention_backend also sets diffusers' global; restore it after
        model.set_attention_backend("_native_math")
    assert {compat.processor_backend(p).value for p in processors} == {"_native_math"}
    compat.set_processor_backend(processors[0], None)
    assert compat.processor_backend(processors[0]) is None


def test_compile_marks_the_module():
    block = torch.nn.Linear(3, 3)
    assert not compat.is_compiled(block)
    block.compile(backend="eager")
    assert compat.is_compiled(block)


def test_from_pipe_ends_with_a_dtype_only_cast():
    from diffusers import WanPipeline

    calls = []

    class Recording(WanPipeline):
        def to(self, *args, **kwargs):
            calls.append((args, kwargs))
            return super().to(*args, **kwargs)

    Recording.from_pipe(WanPipeline(**tiny.components("t2v")))
    assert len(calls) == 1 and compat.is_from_pipe_dtype_cast(*calls[0])
    assert not compat.is_from_pipe_dtype_cast(("cpu",), {}) and not compat.is_from_pipe_dtype_cast((), {"device": "cpu"})


def test_pipeline_setattr_rewrites_the_config_and_the_bypass_does_not():
    from diffusers import UniPCMultistepScheduler, WanPipeline

    pipe = WanPipeline(**tiny.components("t2v"))
    before = tuple(pipe.config["scheduler"])
    replacement = tiny.unipc_scheduler()
    compat.set_component_keeping_config(pipe, "scheduler", replacement)
    assert pipe.scheduler is replacement and tuple(pipe.config["scheduler"]) == before
    pipe.scheduler = tiny.unipc_scheduler()  # what the bypass avoids: the config follows the object
    assert tuple(pipe.config["scheduler"])[1] == UniPCMultistepScheduler.__name__


def test_model_hook_new_forward_and_original_forward():
    from diffusers.hooks import ModelHook

    class Doubling(ModelHook):
        def new_forward(self, module, *args, **kwargs):
            return 2 * compat.call_original_forward(self, *args, **kwargs)

    layer = torch.nn.Linear(2, 2)
    x = torch.randn(4, 2)
    expected = layer(x)
    registry = compat.hook_registry(layer)
    assert compat.hook_registry(layer) is registry  # one registry per module
    registry.register_hook(Doubling(), "doubling")
    assert torch.equal(layer(x), 2 * expected)
    registry.remove_hook("doubling", recurse=False)
    assert torch.equal(layer(x), expected)


def test_enable_cache_is_visible_through_cache_config():
    from diffusers.hooks import FirstBlockCacheConfig

    model = tiny.transformer()
    assert compat.cache_config(model) is None and compat.cache_config(torch.nn.Linear(1, 1)) is None
    config = FirstBlockCacheConfig(threshold=0.1)
    model.enable_cache(config)
    assert compat.cache_config(model) is config
    model.disable_cache()
    assert compat.cache_config(model) is None


def test_cache_state_lives_in_state_managers_keyed_by_context():
    from diffusers.hooks import FirstBlockCacheConfig

    model = tiny.transformer()
    model.enable_cache(FirstBlockCacheConfig(threshold=0.1))
    managers = compat.cache_states(model)
    assert len(managers) == 1
    with model.cache_context("cond"):
        managers[0].get_state().should_compute = False  # the loop's context has state
        with compat.fresh_cache_context(managers, "private"):
            assert managers[0].context.name == "private" and managers[0].get_state().should_compute
        assert managers[0].context.name == "cond" and not managers[0].get_state().should_compute
    assert set(managers[0]._state_cache) == {"cond"}


@pytest.mark.parametrize("make", [tiny.scheduler, tiny.unipc_scheduler], ids=["flow_match_euler", "unipc_flow"])
def test_flow_schedulers_give_n_timesteps_and_n_plus_1_sigmas(make):
    scheduler = make()
    scheduler.set_timesteps(5)
    assert len(scheduler.timesteps) == 5 and len(scheduler.sigmas) == 6
    assert scheduler.order == 1 and float(scheduler.sigmas[-1]) == 0.0
    # t = 1000 sigma (UniPC rounds t to an integer): the expert boundary sigma is boundary_ratio
    assert torch.allclose(scheduler.timesteps.float(), scheduler.sigmas[:5] * 1000, atol=1.0)


def test_inverted_sigmas_rise_to_one():
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(invert_sigmas=True)
    scheduler.set_timesteps(4)
    assert scheduler.config.invert_sigmas and float(scheduler.sigmas[-1]) == 1.0
    assert torch.all(scheduler.sigmas[1:] >= scheduler.sigmas[:-1])


def test_retrieve_timesteps_reads_the_stand_in_signature():
    from diffusers.pipelines.ltx2.pipeline_ltx2 import retrieve_timesteps

    from pnp_kernels import PnPConfig
    from pnp_kernels.diffusers.scheduler import PnPScheduler

    class Session:  # what PnPScheduler asks of its session
        def resolve_plan(self, sigmas):
            return PnPConfig(plan="0:1").plan

        def register(self, member):
            pass

    stand_in = PnPScheduler(tiny.scheduler(), Session())
    assert {"sigmas", "mu", "timesteps"} <= set(inspect.signature(stand_in.set_timesteps).parameters)
    timesteps, steps = retrieve_timesteps(stand_in, None, "cpu", sigmas=[1.0, 0.75, 0.5], mu=1.0)
    assert steps == 4 and len(timesteps) == 4  # step 0 twice (one refinement), then steps 1 and 2


def test_scheduler_output_type():
    from diffusers.schedulers.scheduling_utils import SchedulerOutput

    assert SchedulerOutput(prev_sample=torch.ones(1))[0].shape == (1,)


def test_pipeline_properties_read_the_call_state():
    from diffusers import WanPipeline

    pipe = WanPipeline(**tiny.components("t2v"))
    compat.set_call_state(pipe, guidance_scale=3.0, num_timesteps=7, current_timestep=5, interrupt=True,
                          attention_kwargs={"scale": 1.0})
    assert (pipe.guidance_scale, pipe.do_classifier_free_guidance, pipe.num_timesteps) == (3.0, True, 7)
    assert (pipe.current_timestep, pipe.interrupt, pipe.attention_kwargs) == (5, True, {"scale": 1.0})


def test_context_parallel_backends_come_from_diffusers_registry():
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    names = compat.context_parallel_backends()
    assert "native" in names and names <= {member.value for member in AttentionBackendName}
    assert all(_AttentionBackendRegistry._is_context_parallel_available(AttentionBackendName(n)) for n in names)


def test_enable_parallelism_records_its_config_on_the_model():
    from diffusers import ContextParallelConfig, ModelMixin
    from diffusers.models._modeling_parallel import ParallelConfig

    model = tiny.transformer()
    assert not compat.is_context_parallel(model)
    assert "self._parallel_config = config" in inspect.getsource(ModelMixin._resolve_parallel_config)
    # what enable_parallelism records (the call itself needs a process group)
    model._parallel_config = ParallelConfig(context_parallel_config=ContextParallelConfig(ulysses_degree=2))
    assert compat.is_context_parallel(model)
    model._parallel_config = ParallelConfig()  # tensor parallelism only: every rank holds all tokens
    assert not compat.is_context_parallel(model)
