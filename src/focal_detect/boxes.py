r"""Axis-aligned box operations: areas, IoU, format conversion, clipping and NMS.

Boxes are ``(x1, y1, x2, y2)`` in pixels. A box is *valid* when ``x1 <= x2`` and
``y1 <= y2``; it is *zero-area* when one of its sides is 0 and *degenerate* when
``x2 < x1`` or ``y2 < y1``.

Conventions shared with :mod:`torchvision.ops` (and checked against it by the tests):

* For valid boxes with a positive union, :func:`box_iou` and
  :func:`generalized_box_iou` compute the same floating-point operations in the same
  order as torchvision, so their values are bit-identical.
* :func:`nms` and :func:`batched_nms` return the same indices in the same order as
  torchvision's C++ kernel, ties and degenerate boxes included.

Deliberate differences:

* Where torchvision divides 0 by 0 (IoU of two zero-area boxes, GIoU of two boxes
  whose enclosing box has zero area) and returns NaN, we return a finite value
  (IoU 0, enclosing-box penalty 0). Degenerate boxes get IoU 0 with everything
  (torchvision may return ``-0.0`` or NaN there).
* ``float16``/``bfloat16`` inputs are converted to ``float32`` *before* any
  arithmetic (torchvision subtracts in half precision first); areas and IoUs are
  returned in ``float32`` (as torchvision) because an 800 px box has area
  :math:`640000 > 65504`, the largest ``float16``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from focal_detect._checks import (
    check_boxes,
    check_float_tensor,
    check_number,
    check_same_device,
    check_tensor,
)

__all__ = [
    "box_area",
    "box_iou",
    "generalized_box_iou",
    "box_xyxy_to_cxcywh",
    "box_cxcywh_to_xyxy",
    "clip_boxes",
    "remove_small_boxes",
    "nms",
    "batched_nms",
]


def _upcast(t: Tensor) -> Tensor:
    """Half-precision floats to ``float32``; ``float32``/``float64`` unchanged."""
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.float()
    return t


def _check_last4(fn: str, name: str, boxes: object) -> Tensor:
    t = check_float_tensor(fn, name, boxes)
    if t.ndim < 1 or t.shape[-1] != 4:
        raise ValueError(f"{fn}: {name} must have shape (..., 4), got {tuple(t.shape)}")
    return t


def _check_pair(fn: str, boxes1: object, boxes2: object) -> tuple[Tensor, Tensor]:
    a = check_boxes(fn, "boxes1", boxes1, batched=None)
    b = check_boxes(fn, "boxes2", boxes2, batched=None)
    check_same_device(fn, boxes1=a, boxes2=b)
    if a.ndim == 3 and b.ndim == 3 and a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{fn}: boxes2 must have the same batch size as boxes1 ({a.shape[0]}), got {b.shape[0]}"
        )
    return a, b


def box_area(boxes: Tensor) -> Tensor:
    r"""Area of each box, :math:`(x_2 - x_1)(y_2 - y_1)`.

    Degenerate boxes (``x2 < x1`` or ``y2 < y1``) are not clamped: their "area" is the
    signed product, as in torchvision.

    Shape:
        boxes: ``(..., 4)``.
        output: ``(...)``.

    Args:
        boxes: ``(..., 4)`` in ``(x1, y1, x2, y2)``.

    Returns:
        Shape ``(...)``; ``float32`` for ``float16``/``bfloat16`` input (a half-precision
        area overflows beyond 65504 px², i.e. a 256 px square), else the input dtype.

    Raises:
        TypeError: ``boxes`` is not a floating-point tensor.
        ValueError: The last dimension of ``boxes`` is not 4.

    Example:
        >>> box_area(torch.tensor([[0.0, 0.0, 2.0, 3.0], [1.0, 1.0, 1.0, 5.0]]))
        tensor([6., 0.])
    """
    boxes = _upcast(_check_last4("box_area", "boxes", boxes))
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _needs_grad(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _inter_union(boxes1: Tensor, boxes2: Tensor, inplace: bool = False) -> tuple[Tensor, Tensor]:
    # Same operations, in the same order, as torchvision's _box_inter_union, written
    # per coordinate (max/min are exact, so the values are bit-identical). With
    # ``inplace`` (no autograd) the (..., N, M) temporaries are reused: memory
    # traffic, not arithmetic, is the cost of a large IoU matrix.
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    a = boxes1[..., :, None, :]
    b = boxes2[..., None, :, :]
    if inplace:
        w = torch.minimum(a[..., 2], b[..., 2])
        w.sub_(torch.maximum(a[..., 0], b[..., 0])).clamp_(min=0)
        h = torch.minimum(a[..., 3], b[..., 3])
        h.sub_(torch.maximum(a[..., 1], b[..., 1])).clamp_(min=0)
        inter = w.mul_(h)
        union = torch.add(area1[..., :, None], area2[..., None, :], out=h).sub_(inter)
        return inter, union
    w = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    h = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp(min=0)
    inter = w * h
    union = area1[..., :, None] + area2[..., None, :] - inter
    return inter, union


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    r"""Pairwise intersection over union (Jaccard index).

    .. math:: \mathrm{IoU}(a, b) = \frac{|a \cap b|}{|a| + |b| - |a \cap b|}

    where :math:`|a \cap b| = \max(0, \min(x_2^a, x_2^b) - \max(x_1^a, x_1^b))
    \cdot \max(0, \min(y_2^a, y_2^b) - \max(y_1^a, y_1^b))`.

    For valid boxes with a positive union the result is bit-identical to
    ``torchvision.ops.box_iou``. Where the union is not positive (two zero-area
    boxes, degenerate boxes) the IoU is defined as 0 instead of torchvision's NaN /
    ``-0.0``, so the result is always finite for finite input and lies in ``[0, 1]``.

    Shape:
        boxes1: ``(N, 4)`` or ``(B, N, 4)``.
        boxes2: ``(M, 4)`` or ``(B, M, 4)``.
        output: ``(N, M)``, or ``(B, N, M)`` when either input is batched.

    Args:
        boxes1: ``(N, 4)`` or ``(B, N, 4)`` in ``(x1, y1, x2, y2)``.
        boxes2: ``(M, 4)`` or ``(B, M, 4)``. A 2-D argument is broadcast against a
            batched one.

    Returns:
        ``(N, M)``, or ``(B, N, M)`` when either input is batched. ``float32`` for
        half-precision inputs (computed in ``float32``), else the input dtype.

    Raises:
        TypeError: An argument is not a floating-point tensor.
        ValueError: Bad shapes, different batch sizes or devices.

    Example:
        >>> a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
        >>> b = torch.tensor([[1.0, 0.0, 3.0, 2.0], [5.0, 5.0, 5.0, 5.0]])
        >>> box_iou(a, b)
        tensor([[0.3333, 0.0000]])
        >>> box_iou(b[1:], b[1:])  # two zero-area boxes: 0, not NaN
        tensor([[0.]])
    """
    boxes1, boxes2 = _check_pair("box_iou", boxes1, boxes2)
    if _needs_grad(boxes1, boxes2):
        inter, union = _inter_union(_upcast(boxes1), _upcast(boxes2))
        zero = torch.zeros((), dtype=inter.dtype, device=inter.device)
        return torch.where(union > 0, inter / union, zero)
    inter, union = _inter_union(_upcast(boxes1), _upcast(boxes2), inplace=True)
    bad = union <= 0  # 0/0 (NaN) or 0/negative (-0.0) below: defined as 0
    return inter.div_(union).masked_fill_(bad, 0.0)


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    r"""Pairwise generalized IoU (Rezatofighi et al. 2019).

    .. math:: \mathrm{GIoU}(a, b) = \mathrm{IoU}(a, b) - \frac{|C| - |a \cup b|}{|C|}

    where :math:`C` is the smallest box enclosing :math:`a` and :math:`b`. For valid
    boxes the value lies in ``[-1, 1]`` and is bit-identical to
    ``torchvision.ops.generalized_box_iou`` whenever the union is positive. The IoU
    term follows :func:`box_iou` (0 for a non-positive union) and the penalty term is
    0 when :math:`|C| = 0` (torchvision: NaN), so the result is always finite.

    Shape:
        boxes1: ``(N, 4)`` or ``(B, N, 4)``.
        boxes2: ``(M, 4)`` or ``(B, M, 4)``.
        output: ``(N, M)``, or ``(B, N, M)`` when either input is batched.

    Args:
        boxes1: ``(N, 4)`` or ``(B, N, 4)`` in ``(x1, y1, x2, y2)``.
        boxes2: ``(M, 4)`` or ``(B, M, 4)``.

    Returns:
        ``(N, M)`` or ``(B, N, M)``; ``float32`` for half-precision inputs.

    Raises:
        TypeError: An argument is not a floating-point tensor.
        ValueError: Bad shapes, different batch sizes or devices.

    Example:
        >>> a = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
        >>> b = torch.tensor([[2.0, 0.0, 3.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
        >>> generalized_box_iou(a, b)
        tensor([[-0.3333,  1.0000]])
    """
    boxes1, boxes2 = _check_pair("generalized_box_iou", boxes1, boxes2)
    boxes1, boxes2 = _upcast(boxes1), _upcast(boxes2)
    inter, union = _inter_union(boxes1, boxes2)
    zero = torch.zeros((), dtype=inter.dtype, device=inter.device)
    iou = torch.where(union > 0, inter / union, zero)
    a = boxes1[..., :, None, :]
    b = boxes2[..., None, :, :]
    wi = (torch.maximum(a[..., 2], b[..., 2]) - torch.minimum(a[..., 0], b[..., 0])).clamp(min=0)
    hi = (torch.maximum(a[..., 3], b[..., 3]) - torch.minimum(a[..., 1], b[..., 1])).clamp(min=0)
    areai = wi * hi
    penalty = torch.where(areai > 0, (areai - union) / areai, zero)
    return iou - penalty


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    r"""Convert ``(x1, y1, x2, y2)`` to ``(cx, cy, w, h)``.

    :math:`c_x = (x_1 + x_2) / 2`, :math:`w = x_2 - x_1` (same operations as
    ``torchvision.ops.box_convert``).

    Shape:
        boxes: ``(..., 4)``.
        output: ``(..., 4)``.

    Args:
        boxes: ``(..., 4)`` in ``(x1, y1, x2, y2)``.

    Returns:
        ``(..., 4)`` in ``(cx, cy, w, h)``, input dtype.

    Example:
        >>> box_xyxy_to_cxcywh(torch.tensor([[0.0, 2.0, 4.0, 8.0]]))
        tensor([[2., 5., 4., 6.]])
    """
    boxes = _check_last4("box_xyxy_to_cxcywh", "boxes", boxes)
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    r"""Convert ``(cx, cy, w, h)`` to ``(x1, y1, x2, y2)``.

    :math:`x_1 = c_x - w / 2`, :math:`x_2 = c_x + w / 2` (computed as
    ``cx - 0.5 * w``, as ``torchvision.ops.box_convert``).

    Shape:
        boxes: ``(..., 4)``.
        output: ``(..., 4)``.

    Args:
        boxes: ``(..., 4)`` in ``(cx, cy, w, h)``.

    Returns:
        ``(..., 4)`` in ``(x1, y1, x2, y2)``, input dtype.

    Example:
        >>> box_cxcywh_to_xyxy(torch.tensor([[2.0, 5.0, 4.0, 6.0]]))
        tensor([[0., 2., 4., 8.]])
    """
    boxes = _check_last4("box_cxcywh_to_xyxy", "boxes", boxes)
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def clip_boxes(boxes: Tensor, size: Sequence[float]) -> Tensor:
    r"""Clip boxes to an image: :math:`x \in [0, W]`, :math:`y \in [0, H]`.

    Same result as ``torchvision.ops.clip_boxes_to_image``. Boxes entirely outside
    the image become zero-area boxes on its border (remove them with
    :func:`remove_small_boxes`).

    Shape:
        boxes: ``(..., 4)``.
        output: ``(..., 4)``.

    Args:
        boxes: ``(..., 4)`` in ``(x1, y1, x2, y2)``.
        size: ``(height, width)`` of the image, numbers ``>= 0``.

    Returns:
        ``(..., 4)``, input dtype.

    Raises:
        ValueError: ``size`` is not a pair of non-negative numbers.

    Example:
        >>> clip_boxes(torch.tensor([[-5.0, 2.0, 30.0, 40.0]]), size=(20, 10))
        tensor([[ 0.,  2., 10., 20.]])
    """
    fn = "clip_boxes"
    boxes = _check_last4(fn, "boxes", boxes)
    if isinstance(size, (str, bytes)) or not isinstance(size, Sequence) or len(size) != 2:
        raise ValueError(f"{fn}: size must be a pair (height, width), got {size!r}")
    height = check_number(fn, "size[0] (height)", size[0], low=0)
    width = check_number(fn, "size[1] (width)", size[1], low=0)
    if boxes.is_floating_point():
        # A size beyond the dtype's range clips nothing finite: clamp at its maximum.
        big = float(torch.finfo(boxes.dtype).max)
        height, width = min(height, big), min(width, big)
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(
        (x1.clamp(0, width), y1.clamp(0, height), x2.clamp(0, width), y2.clamp(0, height)),
        dim=-1,
    )


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    r"""Indices of the boxes whose width and height are both ``>= min_size``.

    Same result as ``torchvision.ops.remove_small_boxes``; degenerate boxes (negative
    width or height) are removed for any ``min_size >= 0``.

    Shape:
        boxes: ``(N, 4)``.
        output: ``(K,)`` indices, ``K <= N``.

    Args:
        boxes: ``(N, 4)`` in ``(x1, y1, x2, y2)``.
        min_size: Minimum side length, a number ``>= 0``.

    Returns:
        ``(K,)`` int64 indices into ``boxes``, increasing.

    Raises:
        ValueError: Bad shape or negative ``min_size``.

    Example:
        >>> b = torch.tensor([[0.0, 0.0, 5.0, 5.0], [0.0, 0.0, 0.5, 9.0], [1.0, 1.0, 2.0, 2.0]])
        >>> remove_small_boxes(b, min_size=1.0)
        tensor([0, 2])
    """
    fn = "remove_small_boxes"
    boxes = check_boxes(fn, "boxes", boxes)
    min_size = check_number(fn, "min_size", min_size, low=0)
    ws = boxes[:, 2] - boxes[:, 0]
    hs = boxes[:, 3] - boxes[:, 1]
    return torch.where((ws >= min_size) & (hs >= min_size))[0]


# --------------------------------------------------------------------------- NMS


def _float32_threshold(thr: float, dtype: torch.dtype) -> float:
    """A threshold ``t`` of ``dtype`` with ``x > t`` iff ``x > thr`` for every ``x``.

    torchvision's kernel compares a ``float`` IoU with a ``double`` threshold; a
    tensor comparison would round ``thr`` to ``float32`` first. When rounding goes up,
    use the ``float32`` just below so both comparisons agree for every ``float32``.
    """
    if dtype == torch.float64:
        return thr
    t = torch.tensor(thr, dtype=torch.float32)
    if float(t) > thr:
        t = torch.nextafter(t, torch.tensor(float("-inf")))
    return float(t)


def _nms_padded(boxes: Tensor, valid: Tensor, counts: list[int], thr: float) -> Tensor:
    r"""Exact greedy NMS on ``C`` independent groups at once.

    ``boxes`` ``(C, L, 4)`` holds each group's boxes in decreasing score order,
    padded to length ``L``; ``valid`` ``(C, L)`` marks real boxes; ``counts`` the
    number per group, non-increasing. Returns the keep mask ``(C, L)``.

    Greedy NMS keeps box ``j`` iff no *kept* box ``i < j`` has IoU > thr with it,
    i.e. the keep mask is the unique fixed point of
    :math:`k_j = a_j \wedge \neg \bigvee_{i<j} (S_{ij} \wedge k_i)`. The columns are
    processed in blocks; inside a block the fixed point is found by iterating from
    ``k = a`` (each step finalises at least the next undecided box; usually a few
    steps suffice); the kept boxes of a block then suppress the later blocks (only
    kept rows against still-alive columns, see :func:`_suppress_rest`). Inside a
    block, groups are batched in tiers of similar length so that short groups are
    not padded to the longest one.
    """
    C, L = valid.shape
    device = boxes.device
    # Contiguous coordinate planes (C, L): broadcasting strided views is much slower.
    planes = [boxes[..., c].contiguous() for c in range(4)]
    area = (planes[2] - planes[0]) * (planes[3] - planes[1])
    planes.append(area)
    # Whole groups in one block when they are short and the (C, L, L) matrix is
    # small, else blocks of _NMS_BLOCK columns, halved (down to 64) while
    # C * block^2 exceeds the budget. (Blocks let later blocks skip the rows
    # suppressed earlier, which pays off for long groups.)
    block = L
    if L > _NMS_BLOCK or C * L * L > _NMS_DENSE_ELEMENTS:
        block = _NMS_BLOCK
        while block > 64 and C * block * block > _NMS_DENSE_ELEMENTS:
            block //= 2
    keep = torch.zeros(C, L, dtype=torch.bool, device=device)
    alive_all = valid.clone()
    # 0 strictly above the diagonal (box i < j may suppress j), -inf elsewhere.
    n_blk = min(block, L)
    upper = torch.full((n_blk, n_blk), float("-inf"), dtype=boxes.dtype, device=device).tril_()
    for s in range(0, L, block):
        e = min(s + block, L)
        ca = sum(1 for n in counts if n > s)  # groups with boxes in this block (a prefix)
        cr = sum(1 for n in counts if n > e)  # groups with boxes after this block
        # Groups of similar length share a batch, so short groups are not padded to
        # the block length: tiers of widths (W/2, W], (W/4, W/2], ...
        g0 = 0
        while g0 < ca:
            width = min(counts[g0], e) - s
            g1 = g0 + 1
            while g1 < ca and 2 * (min(counts[g1], e) - s) > width:
                g1 += 1
            ge = s + width
            blk = [p[g0:g1, s:ge] for p in planes]
            sup = _overlaps(blk, blk, thr, upper[:width, :width])  # S_ij, i < j only
            k = _solve_block(sup, alive_all[g0:g1, s:ge])
            keep[g0:g1, s:ge] = k
            hi = min(g1, cr)  # groups of this tier with boxes after the block
            if hi > g0:
                _suppress_rest(
                    [p[: hi - g0] for p in blk],
                    k[: hi - g0],
                    [p[g0:hi, e:] for p in planes],
                    alive_all[g0:hi, e:],
                    thr,
                )
            g0 = g1
    return keep


def _compress(mask: Tensor) -> tuple[Tensor, Tensor, int]:
    """Positions ``(C, m)`` of the True entries of ``mask`` ``(C, P)`` first (in order),
    the validity of each slot ``(C, m)``, and ``m``, the largest count per row."""
    counts = mask.sum(1)
    m = int(counts.max()) if counts.numel() else 0
    pos = torch.sort((~mask).to(torch.uint8), dim=1, stable=True)[1][:, :m]
    slot_ok = torch.arange(m, device=mask.device) < counts[:, None]
    return pos, slot_ok, m


def _suppress_rest(blk: list[Tensor], kept: Tensor, rest: list[Tensor], alive: Tensor, thr: float) -> None:
    """Clear, in place, ``alive`` ``(C, R)`` of the ``rest`` boxes that a ``kept`` box
    of the block suppresses. Only kept rows and alive columns take part: after the
    first blocks most boxes are suppressed, so this is far less than ``P x R`` work."""
    rows, row_ok, m_rows = _compress(kept)
    if m_rows == 0:
        return
    cols, col_ok, m_cols = _compress(alive)
    if m_cols == 0:
        return
    p = [t.gather(1, rows) for t in blk]
    q = [t.gather(1, cols) for t in rest]
    over = _overlaps(p, q, thr)
    hit = torch.bmm(row_ok.to(over.dtype).unsqueeze(1), over).squeeze(1) > 0
    # cols are distinct; padded slots point at dead columns and write False again.
    alive.scatter_(1, cols, col_ok & ~hit)


# Size of the largest (C, L, L) suppression matrix solved in one block, and the
# longest block used beyond it (bounds memory to about C * L * _NMS_BLOCK entries).
# Measured on 2 CPU cores: 5000 boxes x 80 classes stays in one block; 20000 x 80
# runs best in blocks of 128, a single class of 1000-20000 boxes in blocks of 256.
_NMS_DENSE_ELEMENTS = 2_000_000
_NMS_BLOCK = 256
# Fixed-point iterations tried on a block before splitting it in two, and the block
# length at or below which the iteration is simply run to convergence (<= P + 1 steps).
_NMS_TRIES = 8
_NMS_LEAF = 32


def _solve_block(sup: Tensor, alive: Tensor) -> Tensor:
    r"""Greedy keep mask ``(C, P)`` from the strictly upper-triangular suppression
    matrix ``sup`` ``(C, P, P)`` (1 where box ``i < j`` would suppress ``j``) and the
    boxes still ``alive`` ``(C, P)``.

    Iterates :math:`k \leftarrow a \wedge \neg (k^\top S > 0)` from :math:`k = a`;
    the iterates alternate between subsets and supersets of the answer and each step
    decides at least one more box, so it stops at the exact greedy result. Long
    suppression chains (each box decided only after the previous one) would need
    ``P`` steps: after ``_NMS_TRIES`` steps the block is split in halves, solved
    first half first, which bounds the worst case to about ``_NMS_TRIES * P^2``
    multiply-adds plus ``P`` small steps.
    """
    P = alive.shape[1]
    k = alive
    tries = P + 1 if P <= _NMS_LEAF else _NMS_TRIES
    for _ in range(tries):
        hit = torch.bmm(k.to(sup.dtype).unsqueeze(1), sup).squeeze(1) > 0
        new = alive & ~hit
        if torch.equal(new, k):
            return k
        k = new
    if P <= _NMS_LEAF:  # pragma: no cover - P + 1 steps always converge
        return k
    h = P // 2
    k1 = _solve_block(sup[:, :h, :h], alive[:, :h])
    hit = torch.bmm(k1.to(sup.dtype).unsqueeze(1), sup[:, :h, h:]).squeeze(1) > 0
    k2 = _solve_block(sup[:, h:, h:], alive[:, h:] & ~hit)
    return torch.cat((k1, k2), dim=1)


def _overlaps(p: list[Tensor], q: list[Tensor], thr: float, mask: Tensor | None = None) -> Tensor:
    """``1.0`` where ``IoU > thr``, else ``0.0``, for planes ``(x1, y1, x2, y2, area)``
    of shapes (C, P) x (C, Q), in the planes' dtype (ready for ``bmm``).

    The IoU is computed as torchvision's NMS kernel: ``inter / (area_i + area_j -
    inter)`` with unclamped areas (0/0 is NaN, never greater than the threshold).
    ``mask`` ``(P, Q)`` is added before the comparison: ``-inf`` entries never
    suppress, ``0`` entries leave the IoU unchanged.
    """
    x1a, y1a, x2a, y2a, aa = (t[:, :, None] for t in p)
    x1b, y1b, x2b, y2b, ab = (t[:, None, :] for t in q)
    w = torch.minimum(x2a, x2b)
    w.sub_(torch.maximum(x1a, x1b)).clamp_(min=0)
    h = torch.minimum(y2a, y2b)
    h.sub_(torch.maximum(y1a, y1b)).clamp_(min=0)
    inter = w.mul_(h)
    union = torch.add(aa, ab, out=h).sub_(inter)
    iou = inter.div_(union)
    if mask is not None:
        iou.add_(mask)
    # A floating-point output is much faster here than a bool one followed by a cast.
    return torch.gt(iou, thr, out=h)


def _check_nms_args(fn: str, boxes: object, scores: object, iou_threshold: object) -> float:
    boxes = check_boxes(fn, "boxes", boxes)
    scores = check_float_tensor(fn, "scores", scores)
    if scores.ndim != 1 or scores.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"{fn}: scores must have shape (N,) with N = {boxes.shape[0]} (from boxes), "
            f"got {tuple(scores.shape)}"
        )
    check_same_device(fn, boxes=boxes, scores=scores)
    return check_number(fn, "iou_threshold", iou_threshold)


def _batched_nms_impl(boxes: Tensor, scores: Tensor, idxs: Tensor | None, thr: float) -> Tensor:
    n = boxes.shape[0]
    device = boxes.device
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    # NMS is not differentiable: work on detached boxes (in-place and out= ops below).
    work = boxes.detach()
    if work.dtype not in (torch.float32, torch.float64):
        work = work.float()
    thr_t = _float32_threshold(thr, work.dtype)
    # Decreasing score, ties in index order, NaN scores last: a stable ascending sort
    # of the negated scores (ascending sorts put NaN last; torch.sort and
    # torchvision's kernel put a NaN first in descending order, where it would
    # suppress real boxes). One sort, as before.
    order0 = torch.sort(scores.neg(), stable=True)[1]
    if idxs is None:
        valid = torch.ones(1, n, dtype=torch.bool, device=device)
        keep = _nms_padded(work[order0].unsqueeze(0), valid, [n], thr_t)[0]
        return order0[keep]
    # Group by class: a stable sort of the score-sorted classes keeps score order
    # inside each class.
    cls_sorted, perm = torch.sort(idxs[order0], stable=True)
    order = order0[perm]
    uniq, cnt = torch.unique_consecutive(cls_sorted, return_counts=True)
    # Groups ordered by size (largest first) so the groups alive in a block are a prefix.
    cnt_sorted, grp_order = torch.sort(cnt, descending=True, stable=True)
    counts = cnt_sorted.tolist()
    C, L = len(counts), counts[0]
    starts = torch.cumsum(cnt, 0) - cnt  # start of each group in `order`
    # Slot of each sorted box: row = rank of its group, column = position in group.
    group_of = torch.repeat_interleave(torch.arange(C, device=device), cnt)
    rank = torch.empty_like(grp_order)
    rank[grp_order] = torch.arange(C, device=device)
    row = rank[group_of]
    col = torch.arange(n, device=device) - starts[group_of]
    padded = work.new_zeros(C, L, 4)
    padded[row, col] = work[order]
    valid = torch.zeros(C, L, dtype=torch.bool, device=device)
    valid[row, col] = True
    keep_pad = _nms_padded(padded, valid, counts, thr_t)
    # Final order: decreasing score, ties by index (as torchvision), i.e. the order
    # of the stable score sort restricted to the kept boxes.
    kept_flag = torch.zeros(n, dtype=torch.bool, device=device)
    kept_flag[order[keep_pad[row, col]]] = True
    return order0[kept_flag[order0]]


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    r"""Greedy non-maximum suppression, exact and in pure PyTorch.

    Boxes are visited in decreasing score order (ties: lower index first); a box is
    kept unless a previously *kept* box has
    :math:`\mathrm{IoU} > \text{iou\_threshold}` with it. The IoU is computed as
    torchvision's kernel does (unclamped areas; the 0/0 of two zero-area boxes never
    suppresses; a ``float32`` IoU is compared with the threshold as a double), so
    the result equals ``torchvision.ops.nms`` index for index for scores without
    NaN. Half-precision boxes are processed in ``float32``.

    NaN (documented safe behaviour; nothing is checked, so nothing synchronises the
    device): a box with a NaN *score* is visited after every box with a number score
    (``-inf`` included), so it never suppresses one; it is kept unless suppressed, and
    listed last (torchvision sorts NaN first, where it suppresses real boxes). A box
    with a NaN *coordinate* has NaN IoUs, which never suppress: it suppresses nothing
    and is never suppressed.

    The greedy recurrence is solved without a Python loop over boxes: boxes are
    processed in blocks and each block's keep mask is the fixed point of
    :math:`k_j = \neg \bigvee_{i<j} (\mathrm{IoU}_{ij} > t \wedge k_i)`, found by a
    few vectorised iterations.

    Shape:
        boxes: ``(N, 4)``.
        scores: ``(N,)``.
        output: ``(K,)`` indices, ``K <= N``.

    Args:
        boxes: ``(N, 4)`` in ``(x1, y1, x2, y2)``.
        scores: ``(N,)`` scores.
        iou_threshold: Boxes with IoU strictly above it are suppressed.

    Returns:
        ``(K,)`` int64 indices of the kept boxes, in decreasing score order.

    Raises:
        TypeError: Non-tensor or non-float ``boxes``/``scores``.
        ValueError: Bad shapes, different devices, non-numeric threshold.

    Example:
        >>> boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0],
        ...                       [20.0, 20.0, 30.0, 30.0]])
        >>> nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
        tensor([0, 2])
    """
    thr = _check_nms_args("nms", boxes, scores, iou_threshold)
    return _batched_nms_impl(boxes, scores, None, thr)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    r"""Greedy NMS applied independently to each category ``idxs``.

    Boxes of different categories never suppress each other; within a category the
    result is exactly :func:`nms`. The output lists the kept boxes by decreasing
    score, equal scores by increasing index. This is ``torchvision.ops.batched_nms``
    index for index on its small-input path (``boxes.numel() <= 4000`` on CPU), and
    the same kept set and score sequence on its per-class path, whose final sort is
    not stable (kept boxes with equal scores may come in another order).
    Two further torchvision quirks are not reproduced: its small-input path shifts
    boxes by a per-category offset, which can move an IoU by one rounding step at an
    exact threshold tie, and with ``iou_threshold < 0`` lets boxes of different
    categories suppress each other. All categories are processed together in a
    padded ``(C, L, 4)`` layout (``C`` categories, ``L`` boxes in the largest), see
    :func:`nms`.

    Shape:
        boxes: ``(N, 4)``.
        scores: ``(N,)``.
        idxs: ``(N,)``.
        output: ``(K,)`` indices, ``K <= N``.

    Args:
        boxes: ``(N, 4)`` in ``(x1, y1, x2, y2)``.
        scores: ``(N,)`` scores.
        idxs: ``(N,)`` integer category of each box.
        iou_threshold: Boxes with IoU strictly above it are suppressed.

    Returns:
        ``(K,)`` int64 indices of the kept boxes, in decreasing score order (ties:
        lower index first; NaN scores last, see :func:`nms`).

    Raises:
        TypeError: Non-tensor arguments or non-integer ``idxs``.
        ValueError: Bad shapes, different devices, non-numeric threshold.

    Example:
        >>> boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0],
        ...                       [1.0, 1.0, 11.0, 11.0]])
        >>> batched_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 0, 1]), 0.5)
        tensor([0, 2])
    """
    fn = "batched_nms"
    thr = _check_nms_args(fn, boxes, scores, iou_threshold)
    idxs = check_tensor(fn, "idxs", idxs)
    if idxs.is_floating_point() or idxs.is_complex() or idxs.dtype == torch.bool:
        raise TypeError(f"{fn}: idxs must be an integer tensor, got dtype {idxs.dtype}")
    if idxs.ndim != 1 or idxs.shape[0] != boxes.shape[0]:
        raise ValueError(
            f"{fn}: idxs must have shape (N,) with N = {boxes.shape[0]} (from boxes), got {tuple(idxs.shape)}"
        )
    check_same_device(fn, boxes=boxes, idxs=idxs)
    return _batched_nms_impl(boxes, scores, idxs, thr)
