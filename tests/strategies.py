"""Shared Hypothesis strategies for box tensors.

Import from a test module as ``from strategies import valid_boxes`` (``tests/`` is on
``sys.path``: pytest's default ``rootdir``-relative import mode inserts the directory
of each test file, which holds no ``__init__.py``).
"""

from __future__ import annotations

import torch
from hypothesis import strategies as st

__all__ = ["valid_boxes", "box_pairs", "box_batches"]


@st.composite
def valid_boxes(
    draw: st.DrawFn,
    min_n: int = 0,
    max_n: int = 8,
    dtype: torch.dtype = torch.float32,
    max_coord: float = 1000.0,
    integer: bool | None = None,
    allow_zero_area: bool = True,
) -> torch.Tensor:
    """An ``(N, 4)`` tensor of valid ``(x1, y1, x2, y2)`` boxes, ``x1 <= x2``, ``y1 <= y2``.

    Coordinates lie in ``[0, max_coord]``. ``integer=None`` draws either small integer
    coordinates (many exact ties, shared edges, identical boxes) or arbitrary floats;
    ``True``/``False`` forces one. ``allow_zero_area=False`` makes every side at least
    ``max_coord / 1000`` long (strictly positive area).
    """
    n = draw(st.integers(min_value=min_n, max_value=max_n))
    if integer is None:
        integer = draw(st.booleans())
    min_side = 0.0 if allow_zero_area else max_coord / 1000.0
    hi = max_coord - min_side
    if integer:
        m = max(int(hi), 1)
        # small grids produce duplicates and touching boxes
        grid = draw(st.sampled_from([4, 16, m])) if m > 16 else m
        coord = st.integers(min_value=0, max_value=min(grid, m)).map(float)
    else:
        coord = st.floats(min_value=0.0, max_value=hi, allow_nan=False, width=32)
    rows = []
    for _ in range(n):
        a, b, c, d = (draw(coord) for _ in range(4))
        x1, x2 = min(a, c), max(a, c) + min_side
        y1, y2 = min(b, d), max(b, d) + min_side
        rows.append([x1, y1, x2, y2])
    t = torch.tensor(rows, dtype=torch.float64).reshape(n, 4)
    return t.to(dtype)


@st.composite
def box_pairs(draw: st.DrawFn, max_n: int = 8, dtype: torch.dtype = torch.float32, **kw):
    """Two independent ``valid_boxes`` tensors ``(N, 4)``, ``(M, 4)``."""
    return draw(valid_boxes(max_n=max_n, dtype=dtype, **kw)), draw(
        valid_boxes(max_n=max_n, dtype=dtype, **kw)
    )


@st.composite
def box_batches(
    draw: st.DrawFn,
    max_b: int = 3,
    n: int | None = None,
    max_n: int = 6,
    dtype: torch.dtype = torch.float32,
    **kw,
) -> torch.Tensor:
    """A ``(B, N, 4)`` tensor of valid boxes (same ``N`` in every image)."""
    b = draw(st.integers(min_value=1, max_value=max_b))
    if n is None:
        n = draw(st.integers(min_value=0, max_value=max_n))
    return torch.stack([draw(valid_boxes(min_n=n, max_n=n, dtype=dtype, **kw)) for _ in range(b)])
