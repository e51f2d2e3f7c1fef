"""Smoke check before any timing: the Triton and CUDA updates against the reference on a few shapes.

    python -m bench.smoke          # exit 0: every available backend agrees; 3: a backend disagrees

Outputs are poisoned before each run (NaN latents, the reference's mask negated), so an element a
kernel never writes is caught. A certain-mask difference is allowed only where the reference's
uncertainty lies within rounding of tau; latent outputs are compared where the masks agree. A
backend that cannot run here (no CUDA extension, no GPU) is reported with its reason, not as a failure.
"""
from __future__ import annotations

import dataclasses
import sys
import time
import zlib

import torch

from bench.harness import DEVICE, ON_GPU
from bench.update_cases import HEADLINE, SHAPES, Variant, backend_reasons, make_inputs
from pnp_kernels.ops import PnPUpdateInputs, PnPUpdateOutput
from pnp_kernels.ops.backends import BACKENDS
from pnp_kernels.ops.outputs import TENSOR_FIELDS, output_buffers
from pnp_kernels.ops.reference import reference_update

BACKEND_NAMES = ("triton", "cuda")
DISAGREES_EXIT = 3  # distinct from a crash (1): only a disagreement stops the GPU suite
RELATIVE_TOLERANCE = 1e-4  # of max(1, max |reference|): rounding is ~1e-6; an indexing error is O(1)
TIE_WIDTH = 1e-5  # |U - tau| within this (relative to tau) may round either way
ODD_SHAPES = [(1, 16, 3, 7, 5), (3, 48, 2, 5, 9)]
VARIANTS = [HEADLINE, Variant(True, True, "philox"), Variant(False, False, "none"), Variant(True, False, "tensor"),
            Variant(True, True, "none")]


def cases() -> list[tuple[tuple[int, ...], Variant]]:
    """Odd small shapes with every variant, and the two Wan 480p latents with a refined iteration. On CPU
    (Triton's interpreter, a dry run of the suite) the first odd shape alone: the code path, quickly."""
    if not ON_GPU:
        return [(ODD_SHAPES[0], variant) for variant in VARIANTS]
    full = SHAPES["full"]
    return [(shape, variant) for shape in ODD_SHAPES for variant in VARIANTS] + [
        (full["480p-c16"], Variant(True, True, "philox")), (full["480p-c48"], HEADLINE)]


def _poisoned_outputs(inputs: PnPUpdateInputs, reference: PnPUpdateOutput) -> PnPUpdateOutput:
    """Output buffers holding what no correct kernel leaves there: NaN latents, the negated reference mask."""
    buffers = output_buffers(inputs, None)
    for name in TENSOR_FIELDS:
        t = getattr(buffers, name)
        if t is not None and t.is_floating_point():
            t.fill_(float("nan"))
    if buffers.certain is not None:
        buffers.certain.copy_(~reference.certain)
    return buffers


def disagreements(backend: str, inputs: PnPUpdateInputs) -> list[str]:
    """What ``backend`` gets wrong on ``inputs`` compared with the reference ([] when it agrees)."""
    reference = reference_update(dataclasses.replace(inputs, return_uncertainty=True, store_state=True))
    out = _poisoned_outputs(inputs, reference)
    BACKENDS[backend].run(inputs, out)
    ties = (reference.uncertainty - inputs.tau).abs() <= TIE_WIDTH * max(inputs.tau, 1.0)
    problems = []
    # Positions whose mask may round either way; with the state stored, the backend's own mask says which way.
    if out.certain is not None:
        wrong_mask = (out.certain != reference.certain) & ~ties
        if wrong_mask.any():
            problems.append(f"certain differs at {int(wrong_mask.sum())} positions away from tau")
        same_mask = out.certain == reference.certain
    else:
        same_mask = ~ties
    for name in ("x0", "z_next", "z_perturbed"):
        want, got = getattr(reference, name), getattr(out, name)
        if want is None or got is None:
            continue
        compared = same_mask.unsqueeze(1).expand_as(want)
        if not torch.isfinite(got[compared]).all():
            problems.append(f"{name} has NaN/Inf (unwritten elements?)")
            continue
        error = (got - want).abs()[compared].max().item() if compared.any() else 0.0
        scale = max(1.0, want.abs().max().item())
        if error > RELATIVE_TOLERANCE * scale:
            problems.append(f"{name} max error {error:.3g} (allowed {RELATIVE_TOLERANCE * scale:.3g})")
    fraction_error = (out.certain_fraction - reference.certain_fraction).abs().max().item()
    if fraction_error > int(ties.sum()) / inputs.positions + 1e-6:
        problems.append(f"certain_fraction off by {fraction_error:.3g}")
    if not torch.equal(out.nonfinite, reference.nonfinite):
        problems.append(f"nonfinite {out.nonfinite.tolist()} vs {reference.nonfinite.tolist()}")
    return problems


def main() -> int:
    print(f"smoke: Triton and CUDA pnp_update against the reference on {DEVICE}")
    failed = False
    for backend in BACKEND_NAMES:
        for shape, variant in cases():
            inputs = make_inputs(shape, variant, seed=zlib.crc32(repr((shape, variant)).encode()))
            label = f"{backend:6} {'x'.join(map(str, shape)):16} {variant.name:32}"
            reasons = backend_reasons(backend, inputs)
            if reasons:
                print(f"{backend:6} unavailable here, not checked: {'; '.join(reasons)}")
                break
            started = time.perf_counter()
            problems = disagreements(backend, inputs)
            failed |= bool(problems)
            took = time.perf_counter() - started
            print(f"{label} {'DISAGREES: ' + '; '.join(problems) if problems else 'agrees'} ({took:.1f} s)")
    print("smoke: " + ("a backend DISAGREES with the reference: its timings would mean nothing" if failed
                       else "every available backend agrees with the reference"))
    return DISAGREES_EXIT if failed else 0


if __name__ == "__main__":
    sys.exit(main())
