"""Argument checks shared by every public entry point: one message style, one notion of "an integer".

Each check names the argument and the value it got, and raises TypeError (wrong kind of value) or
ValueError (right kind, out of range). Bools, NumPy bools and tensors are never numbers here: a
``True`` passed as a step index or a ``torch.tensor(3)`` passed as a count is a mistake, not a 1 or a 3.
Torch-free on purpose, so that the CLI can validate before importing torch.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Sequence


QUOTE_LIMIT = 80  # characters of a value an error message quotes; longer inputs are shortened


def quoted(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` for an error message; past ``limit`` characters its start and end with the length
    between, so that a huge input (a 100,000-character plan string) is not echoed back whole."""
    text = repr(value)
    if len(text) <= limit:
        return text
    length = f"{len(value)} characters" if isinstance(value, (str, bytes)) else f"{len(text)} characters written out"
    half = limit // 2
    return f"{text[:half]}...{text[-half // 2:]} ({length})"


def _is_bool_like(value: Any) -> bool:
    # numpy.bool_ is not a subclass of bool but compares equal to 0/1; reject it by name, no numpy import.
    return isinstance(value, bool) or (type(value).__module__ == "numpy" and type(value).__name__ in ("bool_", "bool"))


def check_bool(name: str, value: Any) -> bool:
    """A real ``bool`` (not a truthy string, int or NumPy bool)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {quoted(value)} ({type(value).__name__})")
    return value


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """An integer (not a bool or a tensor) in ``[low, high]``."""
    # A plain int skips the ABC check: these run on every op call.
    if type(value) is not int and (_is_bool_like(value) or not isinstance(value, numbers.Integral)):
        raise TypeError(f"{name} must be an integer, got {quoted(value)} ({type(value).__name__})")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


def check_real(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
) -> float:
    """A finite real number (not a bool or a tensor) in ``[low, high]`` (``(low, high]`` with low_open)."""
    if type(value) is float:  # the common case, without the ABC check: these run on every op call
        as_float = value
    elif _is_bool_like(value) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {quoted(value)} ({type(value).__name__})")
    else:
        try:
            as_float = float(value)
        except OverflowError:  # e.g. 10**400: an int too large for a float
            digits = len(str(value))
            raise ValueError(f"{name} must be a finite number, got an integer with {digits} digits") from None
    if not math.isfinite(as_float):
        raise ValueError(f"{name} must be finite, got {as_float!r}")
    if low is not None and (as_float <= low if low_open else as_float < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {as_float!r}")
    if high is not None and as_float > high:
        raise ValueError(f"{name} must be <= {high}, got {as_float!r}")
    return as_float


def check_choice(name: str, value: Any, choices: Sequence) -> Any:
    """One of ``choices``, compared by type as well as value (so ``True`` is not ``1``)."""
    for choice in choices:
        if type(value) is type(choice) and value == choice:
            return value
    raise ValueError(f"{name} must be one of {tuple(choices)}, got {quoted(value)}")


def check_latent_shape(name: str, shape: Sequence[int]) -> None:
    """A (B, C, F, H, W) latent shape without an empty axis (a run over nothing is a caller's mistake)."""
    empty = [f"{axis} = 0" for axis, size in zip("BCFHW", shape) if size == 0]
    if empty:
        raise ValueError(f"the {name} tensor has {'no frames' if shape[2] == 0 else 'an empty axis'} "
                         f"({', '.join(empty)} in (B, C, F, H, W) = {tuple(shape)})")


def check_has_data(name: str, device_type: str) -> None:
    """Refuse a tensor on the meta device: it has a shape but no values to compute on."""
    if device_type == "meta":
        raise ValueError(f"{name} is on the meta device, which holds shapes but no values; pass tensors with data")


def check_callable(name: str, value: Any, optional: bool = True) -> Any:
    """A callable (or None when optional), checked before any work starts."""
    if value is None and optional:
        return None
    if not callable(value):
        raise TypeError(f"{name} must be callable{' or None' if optional else ''}, got {quoted(value)} ({type(value).__name__})")
    return value


def check_sigma_grid(sigmas: Any) -> list[float]:
    """A sampling run's noise levels: N + 1 >= 2 non-increasing values in [0, 1] (a sequence, or
    anything with ``tolist()`` such as a 1-D tensor or array), as floats."""
    values = sigmas.tolist() if hasattr(sigmas, "tolist") else sigmas
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"sigmas must be a 1-D tensor or a sequence of floats, got {type(sigmas).__name__}")
    if len(values) < 2:
        raise ValueError(f"sigmas must hold at least 2 values (N steps need N + 1), got {len(values)}")
    values = [check_real(f"sigmas[{i}]", s, 0.0, 1.0) for i, s in enumerate(values)]
    for i in range(len(values) - 1):
        if values[i + 1] > values[i]:
            raise ValueError(
                f"sigmas must be non-increasing, got sigmas[{i}]={values[i]} < sigmas[{i + 1}]={values[i + 1]}"
            )
    return values
