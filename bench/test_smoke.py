"""bench/smoke.py catches what it is there to catch: a wrong value, an unwritten element, a wrong mask."""
import pytest

from bench.smoke import disagreements
from bench.update_cases import HEADLINE, Variant, backend_reasons, make_inputs
from pnp_kernels.ops.backends import BACKENDS

SHAPE = (2, 16, 3, 5, 7)


class _Corrupted:
    """The torch backend, then one deliberate fault."""

    def __init__(self, fault):
        self.fault = fault

    def run(self, inputs, outputs):
        BACKENDS["torch"].run(inputs, outputs)
        self.fault(outputs)


def _nan_x0(outputs):
    outputs.x0.view(-1)[-1] = float("nan")  # as if the kernel never wrote the last element


def _shifted_z_next(outputs):
    outputs.z_next.view(-1)[123] += 0.01


def _flipped_mask(outputs):
    outputs.certain.view(-1)[5] = ~outputs.certain.view(-1)[5]


@pytest.mark.parametrize("variant", [HEADLINE, Variant(True, True, "philox"), Variant(False, False, "none")],
                         ids=lambda v: v.name)
def test_the_reference_backend_agrees(variant):
    assert disagreements("torch", make_inputs(SHAPE, variant, seed=3, device="cpu")) == []


@pytest.mark.parametrize("fault, expected", [(_nan_x0, "x0 has NaN"), (_shifted_z_next, "z_next max error"),
                                             (_flipped_mask, "certain differs")])
def test_a_faulty_backend_is_reported(monkeypatch, fault, expected):
    monkeypatch.setitem(BACKENDS, "faulty", _Corrupted(fault))
    problems = disagreements("faulty", make_inputs(SHAPE, HEADLINE, seed=4, device="cpu"))
    assert any(p.startswith(expected) for p in problems), problems


def test_triton_agrees_where_it_runs():
    inputs = make_inputs(SHAPE, HEADLINE, seed=5)
    if backend_reasons("triton", inputs):
        pytest.skip("; ".join(backend_reasons("triton", inputs)))
    assert disagreements("triton", inputs) == []
