"""Picking the first candidate, in order of preference, with no reason against it: the rule of the
"auto" choices of the update backend and of the attention backend."""
from __future__ import annotations

from typing import Callable, Iterable


def first_without_reasons(
    candidates: Iterable[str], reasons_against: Callable[[str], list[str]]
) -> tuple[str | None, dict[str, list[str]]]:
    """The first candidate with no reasons against it (None when every one has some), and the reasons
    of each candidate passed over before it."""
    refused: dict[str, list[str]] = {}
    for name in candidates:
        reasons = reasons_against(name)
        if not reasons:
            return name, refused
        refused[name] = reasons
    return None, refused
