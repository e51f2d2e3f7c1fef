"""The node definitions against ComfyUI's V1 node schema, the custom node folder as ComfyUI loads it,
and the example workflow in docs/ against the nodes it uses."""
import importlib.util
import inspect
import json
import sys
from pathlib import Path

import pytest

from pnp_kernels import PnPConfig, RefinePlan
from pnp_kernels.comfyui import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from pnp_kernels.comfyui.nodes import PnPPlanNode, PnPSamplerNode
from pnp_kernels.comfyui.sampler import sample_pnp

from .fake_comfy import KSAMPLER

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "docs" / "comfyui_wan22_workflow.json"
# Keys of an input's options in ComfyUI's V1 node definition schema (docs/COMFYUI.md names the version).
OPTION_KEYS = {"default", "min", "max", "step", "round", "tooltip", "multiline", "advanced", "forceInput",
               "defaultInput", "lazy", "rawLink", "display", "control_after_generate", "placeholder",
               "label_on", "label_off", "hidden"}


def v1_problems(cls) -> list[str]:
    """What in a node class breaks ComfyUI's V1 rules (empty when nothing does)."""
    problems = []
    if not isinstance(inspect.getattr_static(cls, "INPUT_TYPES"), classmethod):
        return ["INPUT_TYPES is not a classmethod"]
    inputs = cls.INPUT_TYPES()
    if "required" not in inputs or set(inputs) - {"required", "optional", "hidden"}:
        problems.append(f"INPUT_TYPES sections {sorted(inputs)}: 'required' plus optionally 'optional', 'hidden'")
    for section in ("required", "optional"):
        for name, spec in inputs.get(section, {}).items():
            problems += [f"input {name!r}: {p}" for p in _input_problems(spec)]
    outputs = cls.RETURN_TYPES
    if not (isinstance(outputs, tuple) and all(isinstance(t, str) and t.isupper() for t in outputs)):
        problems.append(f"RETURN_TYPES {outputs!r} is not a tuple of upper-case type names")
    for attr in ("RETURN_NAMES", "OUTPUT_TOOLTIPS"):
        if not (isinstance(getattr(cls, attr, None), tuple) and len(getattr(cls, attr)) == len(outputs)):
            problems.append(f"{attr} is not a tuple with one entry per output")
    for attr in ("CATEGORY", "DESCRIPTION", "FUNCTION"):
        if not (isinstance(getattr(cls, attr, None), str) and getattr(cls, attr)):
            problems.append(f"{attr} is not a non-empty string")
    function = getattr(cls, getattr(cls, "FUNCTION", ""), None)
    if not callable(function):
        return problems + ["FUNCTION does not name a method"]
    params = list(inspect.signature(function).parameters.values())[1:]  # after self
    required, optional = set(inputs["required"]), set(inputs.get("optional", {}))
    if {p.name for p in params} != required | optional:
        problems.append(f"{cls.FUNCTION}() takes {[p.name for p in params]}, the inputs are {sorted(required | optional)}")
    if any((p.default is inspect.Parameter.empty) == (p.name in optional) for p in params):
        problems.append(f"{cls.FUNCTION}() must give exactly the optional inputs a default")
    return problems


def _input_problems(spec) -> list[str]:
    if not (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], dict)):
        return [f"{spec!r} is not (type, options)"]
    kind, options = spec
    problems = [f"unknown option {key!r}" for key in sorted(set(options) - OPTION_KEYS)]
    if not options.get("tooltip"):
        problems.append("no tooltip")
    if isinstance(kind, list):
        if not (kind and all(isinstance(choice, str) for choice in kind)) or options.get("default", kind[0]) not in kind:
            problems.append(f"combo {kind!r} with default {options.get('default')!r}")
    elif not (isinstance(kind, str) and kind.isupper()):
        problems.append(f"type {kind!r} is not an upper-case type name or a list of choices")
    elif kind in ("INT", "FLOAT") and not options["min"] <= options["default"] <= options["max"]:
        problems.append(f"default {options['default']} outside [{options['min']}, {options['max']}]")
    elif kind == "STRING" and not isinstance(options.get("default", ""), str):
        problems.append("STRING default is not a string")
    return problems


@pytest.mark.parametrize("node_id", sorted(NODE_CLASS_MAPPINGS))
def test_nodes_follow_the_v1_schema(node_id):
    assert v1_problems(NODE_CLASS_MAPPINGS[node_id]) == []
    assert NODE_DISPLAY_NAME_MAPPINGS[node_id]


def test_the_schema_check_finds_broken_nodes():
    class Broken(PnPPlanNode):
        RETURN_NAMES = ()

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"preset": (["a"], {"default": "b"}), "custom_plan": ("STRING", {"tooltip": "t"})}}

    assert v1_problems(Broken) == [
        "input 'preset': no tooltip", "input 'preset': combo ['a'] with default 'b'",
        "RETURN_NAMES is not a tuple with one entry per output",
    ]


def test_sampler_node_gives_comfyui_a_sampler(comfy):
    (sampler,) = PnPSamplerNode().get_sampler(0.1, "L2", 0.9, plan=RefinePlan.parse("2-4:2"))
    assert isinstance(sampler, KSAMPLER) and sampler.sampler_function is sample_pnp
    assert sampler.extra_options == {"pnp_config": PnPConfig(plan="2-4:2", tau=0.1, p_norm=2, certain_stop=0.9, noise="philox")}
    (default,) = PnPSamplerNode().get_sampler(0.25, "L1 (published)", 0.999)
    assert default.extra_options["pnp_config"] == PnPConfig(plan="published", noise="philox")


def test_plan_node():
    assert PnPPlanNode().build("distilled", "ignored") == (RefinePlan.parse("distilled"),)
    assert PnPPlanNode().build("custom", "s0.9-0.5:2") == (RefinePlan.parse("s0.9-0.5:2"),)
    assert not PnPPlanNode().build("none", "2-5:3")[0]
    with pytest.raises(ValueError, match="plan entry '2-x:3'"):
        PnPPlanNode().build("custom", "2-x:3")
    with pytest.raises(ValueError, match="preset must be one of"):
        PnPPlanNode().build("fast", "")


def test_comfyui_loads_the_repository_as_a_custom_node_folder():
    """ComfyUI imports custom_nodes/<folder>/__init__.py as a package named after the folder."""
    name = "pnp_kernels_as_a_custom_node"
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        assert sorted(module.NODE_CLASS_MAPPINGS) == sorted(NODE_CLASS_MAPPINGS)
        assert module.NODE_DISPLAY_NAME_MAPPINGS == NODE_DISPLAY_NAME_MAPPINGS
    finally:
        for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[loaded]


# What the stock ComfyUI nodes of the example workflow take and give (their sources: docs/COMFYUI.md).
STOCK_OUTPUTS = {
    "UNETLoader": ("MODEL",), "CLIPLoader": ("CLIP",), "VAELoader": ("VAE",), "ModelSamplingSD3": ("MODEL",),
    "CLIPTextEncode": ("CONDITIONING",), "CFGGuider": ("GUIDER",), "BasicScheduler": ("SIGMAS",),
    "RandomNoise": ("NOISE",), "Wan22ImageToVideoLatent": ("LATENT",), "SamplerCustomAdvanced": ("LATENT", "LATENT"),
    "VAEDecode": ("IMAGE",), "CreateVideo": ("VIDEO",), "SaveVideo": (),
}
STOCK_LINKED_INPUTS = {
    "ModelSamplingSD3": {"model": "MODEL"}, "CLIPTextEncode": {"clip": "CLIP"},
    "CFGGuider": {"model": "MODEL", "positive": "CONDITIONING", "negative": "CONDITIONING"},
    "BasicScheduler": {"model": "MODEL"}, "Wan22ImageToVideoLatent": {"vae": "VAE"},
    "SamplerCustomAdvanced": {"noise": "NOISE", "guider": "GUIDER", "sampler": "SAMPLER", "sigmas": "SIGMAS", "latent_image": "LATENT"},
    "VAEDecode": {"samples": "LATENT", "vae": "VAE"}, "CreateVideo": {"images": "IMAGE"}, "SaveVideo": {"video": "VIDEO"},
}


def _accepts(spec, value) -> bool:
    kind, options = spec
    if isinstance(kind, list):
        return value in kind
    if kind in ("INT", "FLOAT"):
        return options["min"] <= value <= options["max"]
    return isinstance(value, str)


def test_example_workflow_wires_the_nodes_together():
    graph = json.loads(WORKFLOW.read_text())

    def output_type(link):
        source = graph[link[0]]["class_type"]
        outputs = NODE_CLASS_MAPPINGS[source].RETURN_TYPES if source in NODE_CLASS_MAPPINGS else STOCK_OUTPUTS[source]
        return outputs[link[1]]

    for node_id, node in graph.items():
        kind, inputs = node["class_type"], node["inputs"]
        links = {name: value for name, value in inputs.items() if isinstance(value, list)}
        if kind in NODE_CLASS_MAPPINGS:
            cls = NODE_CLASS_MAPPINGS[kind]
            declared = {**cls.INPUT_TYPES()["required"], **cls.INPUT_TYPES().get("optional", {})}
            assert set(cls.INPUT_TYPES()["required"]) <= set(inputs) <= set(declared), node_id
            expected = {name: declared[name][0] for name in links}
            widgets = {name: value for name, value in inputs.items() if name not in links}
            assert all(_accepts(declared[name], value) for name, value in widgets.items()), node_id
        else:
            expected = {name: STOCK_LINKED_INPUTS[kind][name] for name in links}
            assert set(links) == set(STOCK_LINKED_INPUTS.get(kind, {})), node_id
            widgets = {}
        assert {name: output_type(link) for name, link in links.items()} == expected, node_id
        if kind == "PnPKernelsPlan":
            assert PnPPlanNode().build(**widgets)[0]
    used = [node["class_type"] for node in graph.values()]
    assert "PnPKernelsSampler" in used and "SamplerCustomAdvanced" in used
