"""Private input checks shared by the public entry points.

Every message reads ``"<function>: <argument> must ..., got ..."`` so a user sees
which call and which argument is wrong. These helpers only look at metadata
(shape, dtype, device, Python numbers) and never synchronise with the device,
except :func:`check_finite`, which callers use only at data/model boundaries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "check_tensor",
    "check_float_tensor",
    "check_boxes",
    "check_same_device",
    "check_same_shape",
    "check_finite",
    "check_number",
    "check_choice",
]


def check_tensor(fn: str, name: str, value: object) -> Tensor:
    """Raise ``TypeError`` unless ``value`` is a tensor; return it."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{fn}: {name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_float_tensor(fn: str, name: str, value: object) -> Tensor:
    """Raise ``TypeError`` unless ``value`` is a floating-point tensor."""
    t = check_tensor(fn, name, value)
    if not t.is_floating_point():
        raise TypeError(f"{fn}: {name} must be a floating-point tensor, got dtype {t.dtype}")
    return t


def check_boxes(fn: str, name: str, boxes: object, batched: bool | None = False) -> Tensor:
    """Check a box tensor of shape ``(N, 4)`` (``batched=False``), ``(B, N, 4)``
    (``batched=True``) or either (``batched=None``)."""
    t = check_float_tensor(fn, name, boxes)
    if batched is None:
        ok, want = t.ndim in (2, 3) and t.shape[-1] == 4, "(N, 4) or (B, N, 4)"
    elif batched:
        ok, want = t.ndim == 3 and t.shape[-1] == 4, "(B, N, 4)"
    else:
        ok, want = t.ndim == 2 and t.shape[-1] == 4, "(N, 4)"
    if not ok:
        raise ValueError(f"{fn}: {name} must have shape {want}, got {tuple(t.shape)}")
    return t


def check_same_device(fn: str, **tensors: Tensor | None) -> None:
    """Raise ``ValueError`` if the named tensors (``None`` skipped) live on different devices."""
    items = [(k, v) for k, v in tensors.items() if isinstance(v, Tensor)]
    if not items:
        return
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.device != first.device:
            raise ValueError(
                f"{fn}: {name} must be on the same device as {first_name} ({first.device}), got {t.device}"
            )


def check_same_shape(fn: str, name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` have the same shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"{fn}: {name_b} must have the same shape as {name_a} {tuple(a.shape)}, got {tuple(b.shape)}"
        )


def check_finite(fn: str, name: str, t: Tensor) -> None:
    """Raise ``ValueError`` if ``t`` holds NaN or infinity (synchronises the device)."""
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{fn}: {name} must be finite, got NaN or infinity")


def check_number(
    fn: str,
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Check a real Python number lies in a range; return it as ``float``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, Tensor) and value.numel() == 1:
            value = float(value)
        else:
            raise TypeError(f"{fn}: {name} must be a real number, got {type(value).__name__}")
    v = float(value)
    bad = math.isnan(v)
    if low is not None:
        bad = bad or (v <= low if low_open else v < low)
    if high is not None:
        bad = bad or (v >= high if high_open else v > high)
    if bad:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        rng = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
        raise ValueError(f"{fn}: {name} must be in {rng}, got {value!r}")
    return v


def check_choice(fn: str, name: str, value: object, choices: Sequence[str]) -> str:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        opts = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{fn}: {name} must be one of {opts}, got {value!r}")
    return value  # type: ignore[return-value]
