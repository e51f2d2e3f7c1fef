"""What one fused P&P update writes: the output tuple, and the buffers it is written into.

``pnp_update`` checks the buffers a caller passes as ``out=`` (shape, dtype, device, and that no
output shares memory with another output or with an input), allocates the rest, and hands the full
set to a backend, which only writes into it. Kernel backends write contiguous memory; a strided
caller buffer is computed in a contiguous one and copied back (``contiguous_buffers`` / ``copy_back``).
"""
from __future__ import annotations

import functools
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
    nonfinite: torch.Tensor  # int32 per-sample count of NaN/Inf positions in the unmerged x0 and a noise tensor (unpinned)
    z_perturbed: torch.Tensor | None  # float32 next model input, when noise was given
    uncertainty: torch.Tensor | None  # float32 U map, when asked for (0 where not computed)
    backend: str | None = None  # the backend that computed these


NO_BUFFERS = PnPUpdateOutput(None, None, None, None, None, None, None)
TENSOR_FIELDS = PnPUpdateOutput._fields[:-1]


def output_buffers(inputs: PnPUpdateInputs, out: PnPUpdateOutput | None, backend: str | None = None) -> PnPUpdateOutput:
    """The buffers an update writes: the caller's ``out`` fields where given (checked), new tensors elsewhere.

    Fields the inputs do not produce are None (x0 and certain without store_state, z_perturbed
    without noise, uncertainty unless asked for); a given buffer for one of them is left alone.
    ``backend`` fills the result's ``backend`` field.
    """
    if out is None:
        out = NO_BUFFERS
    elif not isinstance(out, PnPUpdateOutput):
        raise TypeError(f"out must be a PnPUpdateOutput or None, got {type(out).__name__}")
    z = inputs.z
    latent, mask, batch, device = z.shape, inputs.mask_shape, (z.shape[0],), z.device
    store, given = inputs.store_state, []
    f32 = torch.float32
    buffers = PnPUpdateOutput(
        _buffer("x0", out.x0, latent, f32, device, given) if store else None,
        _buffer("z_next", out.z_next, latent, f32, device, given),
        _buffer("certain", out.certain, mask, torch.bool, device, given) if store else None,
        _buffer("certain_fraction", out.certain_fraction, batch, f32, device, given),
        _buffer("nonfinite", out.nonfinite, batch, torch.int32, device, given),
        _buffer("z_perturbed", out.z_perturbed, latent, f32, device, given) if inputs.noise is not None else None,
        _buffer("uncertainty", out.uncertainty, mask, f32, device, given) if inputs.return_uncertainty else None,
        backend,
    )
    if given and not torch.compiler.is_compiling():  # traced tensors have no addresses to compare
        _check_no_overlap(given, inputs.tensors())
    return buffers


def _buffer(name: str, t, shape, dtype: torch.dtype, device: torch.device, given: list) -> torch.Tensor:
    """The caller's buffer ``t`` for output ``name`` once checked (recorded in ``given``), or a new one."""
    if t is None:
        return torch.empty(shape, dtype=dtype, device=device)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"out.{name} must be a torch.Tensor or None, got {type(t).__name__}")
    if t.shape != shape or t.dtype != dtype or t.device != device:
        raise ValueError(
            f"out.{name} has shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}; "
            f"expected {tuple(shape)}, {dtype}, {device}"
        )
    shared = [dim for dim, (size, stride) in enumerate(zip(t.shape, t.stride())) if stride == 0 and size > 1]
    if shared:  # an expanded view: writing it would write one memory location several times
        raise ValueError(f"out.{name} has stride 0 along dimension {shared[0]} (an expanded view), so its elements "
                         "share memory; pass a buffer of its own")
    given.append(("out." + name, t))
    return t


def _byte_ranges(named: list[tuple[str, torch.Tensor]], is_output: bool) -> list[tuple[int, int, str, bool]]:
    """(first, last + 1, name, is_output) byte addresses each non-empty tensor can touch."""
    ranges = []
    for name, t in named:
        if t.is_contiguous():
            size = t.nbytes
        else:  # strides are never negative in torch
            size = t.element_size() * (1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride()))) if t.numel() else 0
        if size:
            start = t.data_ptr()
            ranges.append((start, start + size, name, is_output))
    return ranges


def _check_no_overlap(outputs: list[tuple[str, torch.Tensor]], inputs: list[tuple[str, torch.Tensor]]) -> None:
    """Raise ValueError when a caller's output buffer shares memory with another output or an input.

    An output aliasing an input would be overwritten while the kernel still reads it (out.x0 given as
    prev_x0 or z_next, say); byte ranges are compared, so views of one buffer are caught too. Inputs
    may share memory with each other (v and v_uncond as halves of one batch, say). One sweep over the
    ranges sorted by start: a range overlaps an earlier one exactly when it starts before the furthest
    end seen so far (of any range when it is an output, of an output when it is an input).
    """
    reach = output_reach = 0
    reach_name = output_reach_name = ""
    for start, end, name, is_output in sorted(_byte_ranges(outputs, True) + _byte_ranges(inputs, False)):
        if start < (reach if is_output else output_reach):
            raise ValueError(f"{name} shares memory with {reach_name if is_output else output_reach_name}; "
                             "pass separate buffers")
        if end > reach:
            reach, reach_name = end, name
        if is_output and end > output_reach:
            output_reach, output_reach_name = end, name


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
    buffers.certain_fraction.copy_(certain_count).div_(_divisor(inputs.num_free_positions))


@functools.lru_cache(maxsize=64)
def _divisor(free_positions: int) -> torch.Tensor:
    # A 0-dim float32 CPU tensor holding float32(n), n = max(free_positions, 1): what torch divides by
    # when the reference divides a float32 tensor by the Python int n, at a third of the host time.
    return torch.tensor(float(max(free_positions, 1)), dtype=torch.float32)
