"""Argument checks shared by the models, the scheduler, the pipelines, training and evaluation.

Each returns the value it accepted (as the plain Python type) or raises `ValueError` naming the argument, the
value and what is allowed. `bool` is never accepted as a number: `True` is an `int` to Python, not to a user.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable


def _is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_positive_int(name: str, value, allow_none: bool = False) -> int | None:
    """`value` as an `int` >= 1 (or None when `allow_none`)."""
    if value is None and allow_none:
        return None
    if not _is_integer(value) or value < 1:
        allowed = "a positive integer" + (" or None" if allow_none else "")
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return int(value)


def check_non_negative_int(name: str, value) -> int:
    """`value` as an `int` >= 0."""
    if not _is_integer(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def check_finite_number(name: str, value, minimum: float | None = None, maximum: float | None = None,
                        exclusive_minimum: bool = False) -> float:
    """`value` as a finite `float` in `[minimum, maximum]` (`(minimum, maximum]` with `exclusive_minimum`)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    below = minimum is not None and (value <= minimum if exclusive_minimum else value < minimum)
    if below or (maximum is not None and value > maximum):
        low = "" if minimum is None else (f"> {minimum}" if exclusive_minimum else f">= {minimum}")
        high = "" if maximum is None else f"<= {maximum}"
        raise ValueError(f"{name} must be a finite number {' and '.join(filter(None, (low, high)))}, got {value!r}")
    return float(value)


def check_choice(name: str, value, choices: Iterable):
    """`value` if it is one of `choices`."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def check_guidance_scale(value, name: str = "guidance_scale") -> float:
    """Classifier-free guidance scale: a finite number >= 0, where 1 means no guidance."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0 (1 = no guidance), got {value!r}")
    return float(value)


# `torch.Generator.manual_seed` takes seeds in [0, 2**64 - 1] (and raises a RuntimeError beyond).
MAX_SEED = 2**64 - 1


def check_seed(name: str, seed, count: int = 1) -> int:
    """`seed` as an `int` such that the `count` seeds `seed, seed + 1, ..., seed + count - 1` all lie in
    `[0, MAX_SEED]`, the range `torch.Generator.manual_seed` takes."""
    last = MAX_SEED - count + 1
    if not _is_integer(seed) or not 0 <= seed <= last:
        needs = f" ({count} outputs take seeds {name} .. {name} + {count - 1})" if count > 1 else ""
        raise ValueError(f"{name} must be an integer in [0, {last}]{needs}, got {seed!r}")
    return int(seed)
