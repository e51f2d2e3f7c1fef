"""What one fused P&P update writes: the output tuple, and the buffers it is written into.

``pnp_update`` checks the buffers a caller passes as ``out=`` (shape, dtype, device, and that no
output shares memory with another output or with an input), allocates the rest, and hands the full
set to a backend, which only writes into it. Kernel backends write contiguous memory; a strided
caller buffer is computed in a contiguous one and copied back (``contiguous_buffers`` / ``copy_back``).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from .inputs import PnPUpdateInputs


class PnPUpdateOutput(NamedTuple):
    """Outputs of one fused P&P update (shapes: latents (B,C,F,H,W), masks (B,F,H,W), stats (B,)).

    As ``out=`` of ``pnp_update`` any field may be None (allocated) and ``backend`` is ignored.
    """

    x0: torch.Tensor | None  # float32 clean prediction after the masked merge (None: store_state=False)
    z_next: torch.Tensor  # float32 Euler proposal after the masked merge
    certain: torch.Tensor | None  # bool certain mask, all False without a previous iteration (None: store_state=False)
    certain_fraction: torch.Tensor  # float32 per-sample fraction of certain (unpinned) positions
    nonfinite: torch.Tensor  # int32 per-sample count of NaN/Inf in the unmerged x0 (unpinned)
    z_perturbed: torch.Tensor | None  # float32 next model input, when noise was given
    uncertainty: torch.Tensor | None  # float32 U map, when asked for (0 where not computed)
    backend: str | None = None  # the backend that computed these


NO_BUFFERS = PnPUpdateOutput(None, None, None, None, None, None, None)
TENSOR_FIELDS = PnPUpdateOutput._fields[:-1]


def expected_layouts(inputs: PnPUpdateInputs) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """(shape, dtype) of every output these inputs produce; fields left out stay None."""
    latent, mask, batch = tuple(inputs.z.shape), inputs.mask_shape, (inputs.batch,)
    layouts = {"z_next": (latent, torch.float32), "certain_fraction": (batch, torch.float32),
               "nonfinite": (batch, torch.int32)}
    if inputs.store_state:
        layouts.update(x0=(latent, torch.float32), certain=(mask, torch.bool))
    if inputs.noise is not None:
        layouts["z_perturbed"] = (latent, torch.float32)
    if inputs.return_uncertainty:
        layouts["uncertainty"] = (mask, torch.float32)
    return layouts


def output_buffers(inputs: PnPUpdateInputs, out: PnPUpdateOutput | None) -> PnPUpdateOutput:
    """The buffers an update writes: the caller's ``out`` fields where given (checked), new tensors elsewhere.

    A given field the inputs do not produce (z_perturbed without noise, say) is left alone.
    """
    if out is None:
        out = NO_BUFFERS
    elif not isinstance(out, PnPUpdateOutput):
        raise TypeError(f"out must be a PnPUpdateOutput or None, got {type(out).__name__}")
    device = inputs.z.device
    buffers, given = {}, {}
    for name, (shape, dtype) in expected_layouts(inputs).items():
        t = getattr(out, name)
        if t is None:
            buffers[name] = torch.empty(shape, dtype=dtype, device=device)
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"out.{name} must be a torch.Tensor or None, got {type(t).__name__}")
        if tuple(t.shape) != shape or t.dtype != dtype or t.device != device:
            raise ValueError(
                f"out.{name} has shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}; "
                f"expected {shape}, {dtype}, {device}"
            )
        buffers[name] = given[name] = t
    if given and not torch.compiler.is_compiling():  # traced tensors have no addresses to compare
        _check_no_overlap(given, inputs.tensors())
    return NO_BUFFERS._replace(**buffers)


def _byte_range(t: torch.Tensor) -> tuple[int, int] | None:
    """[first, last) byte addresses ``t`` can touch (None when empty); strides are never negative in torch."""
    start = t.data_ptr()
    if t.is_contiguous():
        return (start, start + t.nbytes) if t.nbytes else None
    if t.numel() == 0:
        return None
    extent = 1 + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()))
    return start, start + extent * t.element_size()


def _check_no_overlap(outputs: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor]) -> None:
    """Raise ValueError when a caller's output buffer shares memory with another output or an input.

    An output aliasing an input would be overwritten while the kernel still reads it (out.x0 given as
    prev_x0 or z_next, say); byte ranges are compared, so views of one buffer are caught too. One
    sweep over the ranges sorted by start: an item overlaps an earlier one exactly when it starts
    before the furthest end seen so far (of any item, or of an output when it is an input itself).
    """
    spans = [(r, f"out.{name}", True) for name, t in outputs.items() if (r := _byte_range(t)) is not None]
    spans += [(r, name, False) for name, t in inputs.items() if (r := _byte_range(t)) is not None]
    spans.sort()
    reach = output_reach = (0, "")  # (furthest end so far, whose)
    for (start, end), name, is_output in spans:
        end_before, owner = reach if is_output else output_reach
        if start < end_before:
            raise ValueError(f"{name} shares memory with {owner}; pass separate buffers")
        reach = max(reach, (end, name))
        if is_output:
            output_reach = max(output_reach, (end, name))


def contiguous_buffers(buffers: PnPUpdateOutput) -> PnPUpdateOutput:
    """``buffers`` with every strided tensor replaced by a contiguous one (for kernels); itself when none is."""
    strided = {name: torch.empty_like(t, memory_format=torch.contiguous_format)
               for name, t in zip(TENSOR_FIELDS, buffers) if t is not None and not t.is_contiguous()}
    return buffers._replace(**strided) if strided else buffers


def copy_back(written: PnPUpdateOutput, buffers: PnPUpdateOutput) -> None:
    """Copy what a kernel wrote into ``written`` (from ``contiguous_buffers``) into the caller's ``buffers``."""
    if written is buffers:
        return
    for name in TENSOR_FIELDS:
        source, target = getattr(written, name), getattr(buffers, name)
        if source is not target:
            target.copy_(source)


def write_certain_fraction(buffers: PnPUpdateOutput, certain_count: torch.Tensor, inputs: PnPUpdateInputs) -> None:
    """certain_fraction from a kernel's per-sample int32 count of certain positions (count / free positions)."""
    buffers.certain_fraction.copy_(certain_count).div_(max(inputs.num_free_positions, 1))
