"""Pairwise overlaps of broadcast box tensors, bit-identical to :func:`~focal_detect.boxes.box_iou`.

``iou_pairs(gt, anchors)`` takes the ground truth first: the same operations in the same
order as ``box_iou(gt_boxes, anchors)`` (and torchvision's), so a (box, anchor) pair gets
the same bits whichever path computes it. :class:`Workspace` holds reusable buffers for
:func:`iou_into`, the same computation written into preallocated memory.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = []


def iou_pairs(a: Tensor, b: Tensor) -> Tensor:
    """IoU of ``a[..., i, :]`` with ``b[..., i, :]`` (broadcasting), ``a`` the ground truth.

    In-place steps keep the peak at three full-size float temporaries plus a bool mask.
    """
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    w = torch.minimum(a[..., 2], b[..., 2])
    w.sub_(torch.maximum(a[..., 0], b[..., 0])).clamp_(min=0)
    h = torch.minimum(a[..., 3], b[..., 3])
    h.sub_(torch.maximum(a[..., 1], b[..., 1])).clamp_(min=0)
    inter = w.mul_(h)
    del h
    union = area_a + area_b
    union = union.sub_(inter) if union.shape == inter.shape else union - inter
    pos = union > 0
    iou = inter.div_(union)
    del union
    return iou.masked_fill_(pos.logical_not_(), 0)


def ioa_pairs(anchor: Tensor, region: Tensor) -> Tensor:
    """Intersection of ``anchor`` and ``region`` over the anchor's area (broadcasting)."""
    area = (anchor[..., 2] - anchor[..., 0]) * (anchor[..., 3] - anchor[..., 1])
    w = (
        torch.minimum(anchor[..., 2], region[..., 2]) - torch.maximum(anchor[..., 0], region[..., 0])
    ).clamp_(min=0)
    h = (
        torch.minimum(anchor[..., 3], region[..., 3]) - torch.maximum(anchor[..., 1], region[..., 1])
    ).clamp_(min=0)
    inter = w.mul_(h)
    pos = area > 0
    return inter.div_(area).masked_fill_(~pos, 0)


def pair_bytes(itemsize: int) -> int:
    """Workspace bytes per (box, anchor) pair: three float buffers and a bool mask."""
    return 3 * itemsize + 1


class Workspace:
    """Three float buffers and a bool mask for ``capacity`` pairs, viewed per chunk.

    Written into again and again, the memory stays mapped: no page faults after the
    first chunk, and the allocator cannot fragment the peak.
    """

    def __init__(self, capacity: int, dtype: torch.dtype, device: torch.device) -> None:
        self.floats = [torch.empty(capacity, dtype=dtype, device=device) for _ in range(3)]
        self.mask = torch.empty(capacity, dtype=torch.bool, device=device)

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.floats) + self.mask.nbytes

    def views(self, shape: tuple[int, ...]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Contiguous ``shape`` views of the first elements of each buffer."""
        size = math.prod(shape)
        w, h, t = (f[:size].view(shape) for f in self.floats)
        return w, h, t, self.mask[:size].view(shape)


def iou_into(a: Tensor, b: Tensor, ws: Workspace, shape: tuple[int, ...]) -> Tensor:
    """:func:`iou_pairs` of broadcasting ``a``, ``b`` written into the workspace.

    Same operations in the same order (same bits); returns a view of its first buffer
    (the other buffers and the mask are free again when it returns).
    """
    w, h, t, pos = ws.views(shape)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    torch.minimum(a[..., 2], b[..., 2], out=w)
    w.sub_(torch.maximum(a[..., 0], b[..., 0], out=t)).clamp_(min=0)
    torch.minimum(a[..., 3], b[..., 3], out=h)
    h.sub_(torch.maximum(a[..., 1], b[..., 1], out=t)).clamp_(min=0)
    inter = w.mul_(h)
    union = torch.add(area_a, area_b, out=h).sub_(inter)
    torch.gt(union, 0, out=pos)
    iou = inter.div_(union)
    return iou.masked_fill_(pos.logical_not_(), 0)


def iou_grid_into(gt: Tensor, anc_cols: Tensor, anc_area: Tensor, ws: Workspace) -> Tensor:
    """The ``(M, n)`` IoU of boxes ``gt`` ``(M, 4)`` and anchors given as contiguous
    coordinate rows ``anc_cols`` ``(4, n)`` with their areas ``anc_area`` ``(n,)``, written
    into the workspace: :func:`iou_into` without strided reads or a per-call anchor area
    (same operations in the same order, same bits)."""
    m, n = gt.shape[0], anc_cols.shape[1]
    w, h, t, pos = ws.views((m, n))
    g = [gt[:, k, None] for k in range(4)]
    area_g = ((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]))[:, None]
    torch.minimum(g[2], anc_cols[2], out=w)
    w.sub_(torch.maximum(g[0], anc_cols[0], out=t)).clamp_(min=0)
    torch.minimum(g[3], anc_cols[3], out=h)
    h.sub_(torch.maximum(g[1], anc_cols[1], out=t)).clamp_(min=0)
    inter = w.mul_(h)
    union = torch.add(area_g, anc_area, out=h).sub_(inter)
    torch.gt(union, 0, out=pos)
    return inter.div_(union).masked_fill_(pos.logical_not_(), 0)
