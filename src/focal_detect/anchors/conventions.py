"""Cell anchors of each convention (one function per peer implementation).

Each ``_cells_<name>`` returns the ``(A, 4)`` cell anchors of one level on the CPU, in the
precision the implementation computes in; :func:`grid_shift` says what the grid adds to
``x * stride``. The table of conventions is in :mod:`focal_detect.anchors`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["CONVENTIONS"]

#: Names accepted by ``AnchorGenerator(convention=...)``.
CONVENTIONS: tuple[str, ...] = (
    "paper",
    "torchvision",
    "detectron2",
    "mmdetection",
    "detectron",
    "keras-retinanet",
)

ORDERS: tuple[str, ...] = ("ratio-major", "scale-major")

# Cell-anchor order each implementation uses (see the module docstring).
DEFAULT_ORDER: dict[str, str] = {
    "paper": "ratio-major",  # same as torchvision, so torchvision head weights line up
    "torchvision": "ratio-major",
    "detectron2": "scale-major",
    "mmdetection": "ratio-major",
    "detectron": "scale-major",
    "keras-retinanet": "ratio-major",
}

# Anchor centre inside a cell, as a fraction of the stride, per implementation.
DEFAULT_OFFSET: dict[str, float] = {
    "paper": 0.0,
    "torchvision": 0.0,
    "detectron2": 0.0,
    "mmdetection": 0.0,
    "detectron": 0.5,
    "keras-retinanet": 0.5,
}

# --------------------------------------------------------------------------------------
# Cell anchors per convention. Each returns an (A, 4) tensor on the CPU in the precision
# the implementation computes in, and ``shift`` is applied later by the grid.
# --------------------------------------------------------------------------------------


def _pairs(n_scales: int, n_ratios: int, order: str) -> list[tuple[int, int]]:
    """(scale_index, ratio_index) in the order of the A cell anchors."""
    if order == "ratio-major":
        return [(j, i) for i in range(n_ratios) for j in range(n_scales)]
    return [(j, i) for j in range(n_scales) for i in range(n_ratios)]


def _cells_paper(
    size: float, stride: int, scales: Sequence[float], ratios: Sequence[float], order: str, offset: float
) -> Tensor:
    # float64: side S = size * scale; width S / sqrt(r), height S * sqrt(r).
    rows = []
    for j, i in _pairs(len(scales), len(ratios), order):
        side = size * scales[j]
        root = math.sqrt(ratios[i])
        w, h = side / root, side * root
        rows.append((-0.5 * w, -0.5 * h, 0.5 * w, 0.5 * h))
    return torch.tensor(rows, dtype=torch.float64)


def _cells_torchvision(
    size: float, stride: int, scales: Sequence[float], ratios: Sequence[float], order: str, offset: float
) -> Tensor:
    # torchvision retinanet_resnet50_fpn: per-level sizes truncated to int, then
    # AnchorGenerator.generate_anchors in float32: h = sqrt(r), w = 1 / h, corners
    # (+-w * size, +-h * size) / 2 rounded half-to-even.
    sides = torch.tensor([float(int(size * s)) for s in scales], dtype=torch.float32)
    r = torch.tensor([float(x) for x in ratios], dtype=torch.float32)
    h_ratio = torch.sqrt(r)
    w_ratio = 1 / h_ratio
    if order == "ratio-major":
        ws = (w_ratio[:, None] * sides[None, :]).reshape(-1)
        hs = (h_ratio[:, None] * sides[None, :]).reshape(-1)
    else:
        ws = (sides[:, None] * w_ratio[None, :]).reshape(-1)
        hs = (sides[:, None] * h_ratio[None, :]).reshape(-1)
    return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()


def _cells_detectron2(
    size: float, stride: int, scales: Sequence[float], ratios: Sequence[float], order: str, offset: float
) -> Tensor:
    # detectron2 DefaultAnchorGenerator.generate_cell_anchors, Python floats, then float32.
    rows = []
    for j, i in _pairs(len(scales), len(ratios), order):
        area = (size * scales[j]) ** 2.0
        w = math.sqrt(area / ratios[i])
        h = ratios[i] * w
        rows.append((-w / 2.0, -h / 2.0, w / 2.0, h / 2.0))
    return torch.tensor(rows, dtype=torch.float32)


def _cells_mmdetection(
    size: float, stride: int, scales: Sequence[float], ratios: Sequence[float], order: str, offset: float
) -> Tensor:
    # mmdet AnchorGenerator (v2/v3): base_size = stride, float32 scales
    # octave_base_scale * 2**(i / scales_per_octave) with octave_base_scale = size / stride,
    # centre = center_offset * base_size inside the cell (the grid adds x * stride only).
    base = stride
    mm_scales = torch.tensor([s * (size / stride) for s in scales], dtype=torch.float32)
    r = torch.tensor([float(x) for x in ratios], dtype=torch.float32)
    h_ratio = torch.sqrt(r)
    w_ratio = 1 / h_ratio
    if order == "ratio-major":  # mmdet's scale_major=True (its default)
        ws = (base * w_ratio[:, None] * mm_scales[None, :]).reshape(-1)
        hs = (base * h_ratio[:, None] * mm_scales[None, :]).reshape(-1)
    else:
        ws = (base * mm_scales[:, None] * w_ratio[None, :]).reshape(-1)
        hs = (base * mm_scales[:, None] * h_ratio[None, :]).reshape(-1)
    c = offset * base
    return torch.stack([c - 0.5 * ws, c - 0.5 * hs, c + 0.5 * ws, c + 0.5 * hs], dim=-1)


def _cells_detectron(
    size: float, stride: int, scales: Sequence[float], ratios: Sequence[float], order: str, offset: float
) -> Tensor:
    # Detectron (Caffe2) generate_anchors, one (size, ratio) at a time as its RetinaNet
    # code does: round the ratio's sides on the stride x stride box, then scale; corners
    # are inclusive pixels around the centre (stride - 1) / 2, in float64.
    s = float(stride)
    rows = []
    for j, i in _pairs(len(scales), len(ratios), order):
        scale = (size * scales[j]) / s
        ctr = 0.5 * (s - 1.0)
        w0 = float(round(math.sqrt(s * s / ratios[i])))
        h0 = float(round(w0 * ratios[i]))
        x1, y1 = ctr - 0.5 * (w0 - 1.0), ctr - 0.5 * (h0 - 1.0)
        x2, y2 = ctr + 0.5 * (w0 - 1.0), ctr + 0.5 * (h0 - 1.0)
        w1, h1 = x2 - x1 + 1.0, y2 - y1 + 1.0
        cx, cy = x1 + 0.5 * (w1 - 1.0), y1 + 0.5 * (h1 - 1.0)
        w2, h2 = w1 * scale, h1 * scale
        rows.append(
            (cx - 0.5 * (w2 - 1.0), cy - 0.5 * (h2 - 1.0), cx + 0.5 * (w2 - 1.0), cy + 0.5 * (h2 - 1.0))
        )
    return torch.tensor(rows, dtype=torch.float64)


def _f32(x: float) -> float:
    return float(torch.tensor(x, dtype=torch.float32))


def _cells_keras_retinanet(
    size: float, stride: int, scales: Sequence[float], ratios: Sequence[float], order: str, offset: float
) -> Tensor:
    # keras-retinanet utils.anchors.generate_anchors: float32 scales and ratios
    # (keras floatx), side = float32(size * scale); w = sqrt(side^2 / r), h = w * r in
    # float64; corners -w/2 .. w - w/2.
    rows = []
    for j, i in _pairs(len(scales), len(ratios), order):
        side = float(torch.tensor(float(size), dtype=torch.float32) * _f32(scales[j]))
        r = _f32(ratios[i])
        w = math.sqrt(side * side / r)
        h = w * r
        rows.append((-(w * 0.5), -(h * 0.5), w - w * 0.5, h - h * 0.5))
    return torch.tensor(rows, dtype=torch.float64)


#: Cell-anchor function of each convention:
#: ``(size, stride, scales, ratios, order, offset) -> (A, 4)``.
CELLS: dict[str, Callable[..., Tensor]] = {
    "paper": _cells_paper,
    "torchvision": _cells_torchvision,
    "detectron2": _cells_detectron2,
    "mmdetection": _cells_mmdetection,
    "detectron": _cells_detectron,
    "keras-retinanet": _cells_keras_retinanet,
}


def grid_shift(convention: str, stride: int, offset: float) -> float:
    """Pixels added to ``x * stride`` by the grid (the rest of the centre is in the cell)."""
    if convention == "mmdetection":
        return 0.0  # mmdet puts center_offset * base_size inside the cell anchors
    if convention == "detectron":
        return (offset - 0.5) * stride  # the cell is already centred on (stride - 1) / 2
    return offset * stride
