r"""Anchor-to-ground-truth matching (RetinaNet, Lin et al. 2017, Section 4).

An anchor is *foreground* for the ground-truth box it overlaps most when that IoU is
at least ``high_threshold`` (0.5), *background* when its best IoU is below
``low_threshold`` (0.4) and *ignored* in between. With low-quality matching (on by
default, as in torchvision, detectron2 and mmdetection) every ground-truth box also
claims the anchors it overlaps most, even below 0.5, so no object goes unmatched.

Three levels of API:

* :func:`match_anchors` / :class:`Matcher` work on a given IoU matrix ``(M, N)`` (a
  drop-in for torchvision's ``det_utils.Matcher``) or a padded batch ``(B, M, N)``
  with a validity mask.
* :func:`assign_anchors` / :class:`AnchorAssigner` go from anchors and per-image
  ground truth to focal-loss labels and box-regression targets for the whole batch.
  Given the anchor grid's layout (``levels=`` from
  :meth:`focal_detect.anchors.AnchorGenerator.levels`) it evaluates only the
  (box, anchor) pairs that can matter, found analytically on the grid; without it, it
  evaluates the dense IoU matrix in chunks bounded by ``max_memory_bytes``. Both give
  the same result, bit for bit.

Semantics (documented choices):

* Codes: a matched index ``>= 0``, :data:`~focal_detect.constants.BACKGROUND` (-1)
  below ``low_threshold``, :data:`~focal_detect.constants.IGNORE` (-2) in between,
  exactly torchvision's ``BELOW_LOW_THRESHOLD`` / ``BETWEEN_THRESHOLDS``. Ties in an
  anchor's best IoU go to the lowest ground-truth index (as ``Tensor.max(dim)``).
* ``low_quality="torchvision"`` (also detectron2): for each box, the anchors with its
  highest IoU (ties included) become foreground, matched to *their own* best box
  (the arg-max over boxes), which may be another box.
  ``low_quality="mmdetection"`` (``MaxIoUAssigner`` with ``gt_max_assign_all=True``):
  those anchors are matched to the box they are best for; when several boxes claim one
  anchor, the highest box index wins (mmdetection loops over boxes in order and later
  ones overwrite), and this may override an anchor's ``>= high_threshold`` match.
* Minimum-IoU guard, ``min_low_quality_iou=0.0`` (default): a box makes low-quality
  matches only when its highest IoU is *strictly greater* than this value. With the
  guard off (``None``) a box that overlaps no anchor has highest IoU 0, so *every*
  anchor with IoU 0 ties for its best and is turned into a match (torchvision: to its
  arg-max box, usually box 0; mmdetection with ``min_pos_iou=0``: to that box), i.e.
  almost the whole image becomes foreground. ``None`` reproduces that exactly.
* No ground truth (``M = 0``): every anchor is ``BACKGROUND`` (torchvision raises).
* Crowd regions (COCO ``iscrowd``) are not matched. An anchor whose intersection
  over its own area (IoA) with some crowd box is ``>= crowd_ioa_threshold``
  (default 0.5: at least half the anchor lies inside the crowd) becomes ``IGNORE``
  if it would otherwise be ``BACKGROUND``; foreground and already ignored anchors are
  unchanged (a clearly visible object inside a crowd still trains its anchors).
* NaN quality never produces a match. An anchor whose quality against any (valid)
  box is NaN is ``IGNORE`` (neither foreground nor background: its best box is
  unknown), also after low-quality matching; a box with a NaN quality against some
  anchor has no defined highest quality and makes no low-quality matches (its
  ``>= high_threshold`` matches of other anchors stand). Costs nothing extra: the
  NaN propagates through the maxima that are computed anyway. :func:`assign_anchors`
  rejects non-finite boxes, and its IoU of finite boxes whose areas overflow is 0
  (as for a non-positive union), so the rule applies to :func:`match_anchors` on a
  given matrix.
* Half-precision quality is compared in float32: a float16 IoU of 0.39990234375 is
  below ``low_threshold=0.4`` (``BACKGROUND``), not rounded to the threshold.
  (Tested for the dense, padded-batch, chunked and windowed paths in
  ``tests/test_bad_input.py``; see also the conventions page, "Bad input".)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from focal_detect._checks import (
    check_boxes,
    check_choice,
    check_float_tensor,
    check_number,
    check_same_device,
    check_tensor,
)
from focal_detect.constants import BACKGROUND, IGNORE

__all__ = [
    "LOW_QUALITY_MODES",
    "CROWD_IOA_THRESHOLD",
    "match_anchors",
    "Matcher",
    "AnchorAssignment",
    "assign_anchors",
    "AnchorAssigner",
]

#: Low-quality matching flavours: ``"torchvision"`` (= detectron2) and ``"mmdetection"``.
LOW_QUALITY_MODES = ("torchvision", "mmdetection")

#: Default crowd threshold: an anchor at least half inside a crowd box is not a negative.
CROWD_IOA_THRESHOLD = 0.5

# Planned bytes per (box, anchor) element of a crowd IoA chunk, as a multiple of the
# float item size: _ioa_pairs peaks at three float temporaries and a bool mask.
_DENSE_FLOATS_PER_PAIR = 5
# Planned bytes per candidate (box, anchor) pair of the windowed path: a dozen int64 /
# float temporaries per pair while the candidates of one group are evaluated.
_SPARSE_BYTES_PER_PAIR = 256
# Safety margins of the analytic windows. Coordinates are rounded to the anchors'
# dtype (float32 error < 1e-3 px below 10^4 px), so a quarter of a stride and a
# relative 1e-4 on the IoU threshold are far more than needed; the exact IoU of every
# candidate is then computed and tested, so a wider window never changes the result.
_WINDOW_MARGIN = 0.25
_THRESHOLD_SLACK = 1e-4


# --------------------------------------------------------------------------- checks


def _check_matching_args(
    fn: str,
    high_threshold: object,
    low_threshold: object,
    allow_low_quality_matches: object,
    low_quality: object,
    min_low_quality_iou: object,
) -> tuple[float, float, bool, str, float | None]:
    high = check_number(fn, "high_threshold", high_threshold, low=0.0, high=1.0)
    low = check_number(fn, "low_threshold", low_threshold, low=0.0, high=1.0)
    if low > high:
        raise ValueError(f"{fn}: low_threshold must be <= high_threshold ({high}), got {low}")
    if not isinstance(allow_low_quality_matches, bool):
        raise TypeError(
            f"{fn}: allow_low_quality_matches must be a bool, got {type(allow_low_quality_matches).__name__}"
        )
    mode = check_choice(fn, "low_quality", low_quality, LOW_QUALITY_MODES)
    guard = None
    if min_low_quality_iou is not None:
        guard = check_number(fn, "min_low_quality_iou", min_low_quality_iou, low=0.0, high=1.0)
    return high, low, allow_low_quality_matches, mode, guard


# ------------------------------------------------------------------ matrix matching


def match_anchors(
    quality: Tensor,
    valid: Tensor | None = None,
    *,
    high_threshold: float = 0.5,
    low_threshold: float = 0.4,
    allow_low_quality_matches: bool = True,
    low_quality: str = "torchvision",
    min_low_quality_iou: float | None = 0.0,
) -> Tensor:
    r"""Match each anchor (column) to a ground-truth box (row) of a quality matrix.

    With :math:`q_{mn}` the quality (IoU) of box :math:`m` and anchor :math:`n`,
    :math:`v_n = \max_m q_{mn}` and :math:`j_n = \operatorname{argmax}_m q_{mn}`
    (lowest :math:`m` on ties):

    .. math::

        \mathrm{match}_n = \begin{cases}
            j_n & v_n \ge t_\mathrm{high} \\
            \mathrm{IGNORE} & t_\mathrm{low} \le v_n < t_\mathrm{high} \\
            \mathrm{BACKGROUND} & v_n < t_\mathrm{low}
        \end{cases}

    then, with low-quality matching, for every box :math:`m` whose highest quality
    :math:`h_m = \max_n q_{mn}` passes the guard (:math:`h_m >` ``min_low_quality_iou``),
    each anchor :math:`n` with :math:`q_{mn} = h_m` gets :math:`j_n` (``"torchvision"``)
    or the largest such :math:`m` (``"mmdetection"``). See the module notes for why
    the guard is on by default; ``min_low_quality_iou=None`` with the defaults is
    exactly ``torchvision.models.detection._utils.Matcher(high, low, True)``.

    Shape:
        quality: ``(M, N)`` or ``(B, M, N)``.
        valid: ``(M,)`` or ``(B, M)``.
        output: ``(N,)`` or ``(B, N)``.

    Args:
        quality: ``(M, N)`` or ``(B, M, N)`` float matrix, boxes along ``M``.
        valid: Optional bool mask ``(M,)`` / ``(B, M)``: ``False`` rows are padding
            and never matched.
        high_threshold: Foreground threshold in ``[0, 1]``.
        low_threshold: Background threshold in ``[0, high_threshold]``.
        allow_low_quality_matches: Let each box claim its best anchors.
        low_quality: ``"torchvision"`` or ``"mmdetection"`` (see module notes).
        min_low_quality_iou: Guard in ``[0, 1]``; ``None`` turns it off.

    Returns:
        ``(N,)`` or ``(B, N)`` int64: a box index in ``[0, M)``, ``BACKGROUND`` or
        ``IGNORE``. With no (valid) box every anchor is ``BACKGROUND``. An anchor with
        a NaN quality against a valid box is ``IGNORE``, and a box with a NaN quality
        makes no low-quality matches (see the module notes). Half-precision quality is
        compared in float32.

    Raises:
        TypeError: ``quality`` is not a float tensor, ``valid`` is not bool.
        ValueError: Wrong shapes, thresholds out of range or ``low > high``.

    Example:
        >>> iou = torch.tensor([[0.9, 0.45, 0.1, 0.0],
        ...                     [0.2, 0.30, 0.3, 0.0]])
        >>> match_anchors(iou)  # anchors 1, 2 hold box 1's best IoU; 1 keeps its argmax
        tensor([ 0,  0,  1, -1])
        >>> match_anchors(iou, low_quality="mmdetection")  # both go to box 1
        tensor([ 0,  1,  1, -1])
        >>> match_anchors(iou, allow_low_quality_matches=False)
        tensor([ 0, -2, -1, -1])
    """
    fn = "match_anchors"
    high, low, lq, mode, guard = _check_matching_args(
        fn,
        high_threshold,
        low_threshold,
        allow_low_quality_matches,
        low_quality,
        min_low_quality_iou,
    )
    q = check_float_tensor(fn, "quality", quality)
    if q.ndim not in (2, 3):
        raise ValueError(f"{fn}: quality must have shape (M, N) or (B, M, N), got {tuple(q.shape)}")
    if valid is not None:
        valid = check_tensor(fn, "valid", valid)
        if valid.dtype != torch.bool:
            raise TypeError(f"{fn}: valid must be a bool tensor, got dtype {valid.dtype}")
        if valid.shape != q.shape[:-1]:
            raise ValueError(
                f"{fn}: valid must have shape {tuple(q.shape[:-1])} (quality without its "
                f"last dimension), got {tuple(valid.shape)}"
            )
        check_same_device(fn, quality=q, valid=valid)
    if q.dtype in (torch.float16, torch.bfloat16):
        q = q.float()  # thresholds are compared exactly, not rounded to half precision
    unbatched = q.ndim == 2
    if unbatched:
        q = q.unsqueeze(0)
        valid = None if valid is None else valid.unsqueeze(0)
    out = _match_dense_matrix(q, valid, high, low, lq, mode, guard)
    return out[0] if unbatched else out


def _match_dense_matrix(
    q: Tensor,
    valid: Tensor | None,
    high: float,
    low: float,
    lq: bool,
    mode: str,
    guard: float | None,
) -> Tensor:
    b, m, n = q.shape
    if m == 0 or n == 0:
        return torch.full((b, n), BACKGROUND, dtype=torch.int64, device=q.device)
    if valid is not None:
        q = q.masked_fill(~valid[:, :, None], -math.inf)
    vals, matches = q.max(dim=1)  # a NaN in a column propagates to vals
    unknown = vals.isnan()
    best = matches.clone() if lq and mode == "torchvision" else matches
    matches = matches.masked_fill(vals < low, BACKGROUND)
    matches = matches.masked_fill(((vals >= low) & (vals < high)) | unknown, IGNORE)
    if not lq:
        return matches
    highest = q.amax(dim=2)  # (B, M)
    ok = torch.ones_like(highest, dtype=torch.bool) if valid is None else valid
    if guard is not None:
        ok = ok & (highest > guard)
    claims = (q == highest[:, :, None]) & ok[:, :, None]  # (B, M, N)
    # A NaN row has a NaN highest: it equals nothing, so that box claims no anchor.
    if mode == "torchvision":
        out = torch.where(claims.any(dim=1), best, matches)
    else:
        rows = torch.arange(1, m + 1, dtype=torch.int32, device=q.device)
        last = (claims.to(torch.int32) * rows[:, None]).amax(dim=1).to(torch.int64) - 1
        out = torch.where(last >= 0, last, matches)
    return out.masked_fill_(unknown, IGNORE)


class Matcher:
    r"""Stores matching hyper-parameters; calling it runs :func:`match_anchors`.

    ``Matcher(0.5, 0.4, True, min_low_quality_iou=None)`` behaves like
    ``torchvision.models.detection._utils.Matcher(0.5, 0.4, True)`` (same codes, same
    ties), except that no ground truth gives all ``BACKGROUND`` instead of raising.
    The class attributes ``BELOW_LOW_THRESHOLD`` / ``BETWEEN_THRESHOLDS`` are kept for
    code written against torchvision.

    Args:
        high_threshold: Foreground threshold in ``[0, 1]``.
        low_threshold: Background threshold in ``[0, high_threshold]``.
        allow_low_quality_matches: Let each box claim its best anchors.
        low_quality: ``"torchvision"`` or ``"mmdetection"``.
        min_low_quality_iou: Guard (see module notes); ``None`` turns it off.

    Example:
        >>> m = Matcher(0.5, 0.4)
        >>> m(torch.tensor([[0.6, 0.2], [0.1, 0.45]]))
        tensor([0, 1])
        >>> m(torch.tensor([[[0.6, 0.2], [0.9, 0.9]]]), valid=torch.tensor([[True, False]]))
        tensor([[ 0, -1]])
    """

    BELOW_LOW_THRESHOLD = BACKGROUND
    BETWEEN_THRESHOLDS = IGNORE

    def __init__(
        self,
        high_threshold: float = 0.5,
        low_threshold: float = 0.4,
        allow_low_quality_matches: bool = True,
        low_quality: str = "torchvision",
        min_low_quality_iou: float | None = 0.0,
    ) -> None:
        (
            self.high_threshold,
            self.low_threshold,
            self.allow_low_quality_matches,
            self.low_quality,
            self.min_low_quality_iou,
        ) = _check_matching_args(
            "Matcher",
            high_threshold,
            low_threshold,
            allow_low_quality_matches,
            low_quality,
            min_low_quality_iou,
        )

    def __call__(self, match_quality_matrix: Tensor, valid: Tensor | None = None) -> Tensor:
        """Match the columns of ``match_quality_matrix`` ``(M, N)`` / ``(B, M, N)``.

        Shape:
            match_quality_matrix: ``(M, N)`` or ``(B, M, N)``.
            valid: ``(M,)`` or ``(B, M)``.
            output: ``(N,)`` or ``(B, N)``.
        """
        return match_anchors(
            match_quality_matrix,
            valid,
            high_threshold=self.high_threshold,
            low_threshold=self.low_threshold,
            allow_low_quality_matches=self.allow_low_quality_matches,
            low_quality=self.low_quality,
            min_low_quality_iou=self.min_low_quality_iou,
        )

    def __repr__(self) -> str:
        return (
            f"Matcher(high_threshold={self.high_threshold}, low_threshold={self.low_threshold}, "
            f"allow_low_quality_matches={self.allow_low_quality_matches}, "
            f"low_quality={self.low_quality!r}, min_low_quality_iou={self.min_low_quality_iou})"
        )


# --------------------------------------------------------------- pairwise overlaps


def _iou_pairs(a: Tensor, b: Tensor) -> Tensor:
    """IoU of ``a[..., i, :]`` with ``b[..., i, :]`` (broadcasting).

    Same operations in the same order as :func:`focal_detect.boxes.box_iou` (and
    torchvision's), so a pair gets the same bits here as in the dense matrix; in-place
    steps keep the peak at three full-size float temporaries plus two bool masks.
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


def _ioa_pairs(anchor: Tensor, region: Tensor) -> Tensor:
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


# ------------------------------------------------------------- high-level assignment


class AnchorAssignment(NamedTuple):
    r"""Per-anchor training targets for a batch, from :func:`assign_anchors`.

    Attributes:
        labels: ``(B, N)`` int64: the class index of the matched box for foreground
            anchors, else ``BACKGROUND`` or ``IGNORE`` — the ``labels`` argument of
            :func:`focal_detect.losses.sigmoid_focal_loss_from_labels`.
        box_targets: ``(B, N, 4)`` box-coder deltas of the matched box w.r.t. the
            anchor for foreground anchors; exactly ``0`` elsewhere.
        foreground: ``(B, N)`` bool, ``matched_gt >= 0``.
        matched_gt: ``(B, N)`` int64 index into the image's ``gt_boxes``, or
            ``BACKGROUND`` / ``IGNORE``.

    Example:
        >>> a = assign_anchors(torch.tensor([[0.0, 0.0, 10.0, 10.0]]),
        ...                    [torch.tensor([[0.0, 0.0, 10.0, 10.0]])], [torch.tensor([3])])
        >>> a.labels, a.foreground, a.matched_gt
        (tensor([[3]]), tensor([[True]]), tensor([[0]]))
    """

    labels: Tensor
    box_targets: Tensor
    foreground: Tensor
    matched_gt: Tensor


def _check_box_list(fn: str, name: str, value: object, b: int | None, anchors: Tensor) -> list[Tensor]:
    if isinstance(value, Tensor) or not isinstance(value, Sequence):
        raise TypeError(f"{fn}: {name} must be a list of tensors (one per image), got {type(value).__name__}")
    if b is not None and len(value) != b:
        raise ValueError(f"{fn}: {name} must have one entry per image ({b}), got {len(value)}")
    out = []
    for i, t in enumerate(value):
        t = check_boxes(fn, f"{name}[{i}]", t)
        check_same_device(fn, anchors=anchors, **{f"{name}[{i}]": t})
        out.append(t)
    return out


def _check_levels(fn: str, levels: object, n: int) -> list[tuple[int, int, int, float, float, int]]:
    """``levels`` as ``(start, height, width, stride_h, stride_w, A)`` rows; layout must
    tile ``N``. A level gives ``stride_h``/``stride_w`` (AnchorLevel) or one ``stride``."""
    if isinstance(levels, Tensor) or not isinstance(levels, Sequence) or len(levels) == 0:
        raise TypeError(f"{fn}: levels must be a non-empty list of AnchorLevel, got {levels!r:.80}")
    rows = []
    expect = 0
    for i, lv in enumerate(levels):
        try:
            start, h, w = int(lv.start), int(lv.height), int(lv.width)
            if hasattr(lv, "stride_h") and hasattr(lv, "stride_w"):
                sy, sx = float(lv.stride_h), float(lv.stride_w)
            else:
                sy = sx = float(lv.stride)
            a = int(lv.cell_anchors.shape[0])
        except (AttributeError, TypeError, IndexError) as e:
            raise TypeError(
                f"{fn}: levels[{i}] must be an AnchorLevel (start, height, width, stride, "
                f"cell_anchors), got {type(lv).__name__}"
            ) from e
        if start != expect or h <= 0 or w <= 0 or a <= 0 or not (sy > 0 and sx > 0):
            raise ValueError(
                f"{fn}: levels[{i}] must start at {expect} with positive sizes and strides, "
                f"got start={start}, height={h}, width={w}, stride_h={sy}, stride_w={sx}, A={a}"
            )
        expect = start + h * w * a
        rows.append((start, h, w, sy, sx, a))
    if expect != n:
        raise ValueError(f"{fn}: levels must cover the {n} anchors, got {expect}")
    return rows


def assign_anchors(
    anchors: Tensor,
    gt_boxes: Sequence[Tensor],
    gt_labels: Sequence[Tensor],
    *,
    crowd_boxes: Sequence[Tensor] | None = None,
    levels: Sequence[Any] | None = None,
    box_coder: Any | None = None,
    high_threshold: float = 0.5,
    low_threshold: float = 0.4,
    allow_low_quality_matches: bool = True,
    low_quality: str = "torchvision",
    min_low_quality_iou: float | None = 0.0,
    crowd_ioa_threshold: float | None = CROWD_IOA_THRESHOLD,
    max_memory_bytes: int = 512 * 2**20,
) -> AnchorAssignment:
    r"""Focal-loss labels and box targets for a batch of images, in one pass.

    Each anchor is matched as :func:`match_anchors` does on the IoU matrix
    ``box_iou(gt_boxes[i], anchors)`` of its image (same codes, ties and low-quality
    rules; see the module notes), crowd regions then turn covered background anchors
    into ``IGNORE``, and each foreground anchor gets its box's class and
    ``box_coder.encode(gt_box, anchor)``.

    With ``levels`` (from :meth:`~focal_detect.anchors.AnchorGenerator.levels` for the
    same feature sizes as ``anchors``) only the pairs that can decide the result are
    evaluated: for each box and cell anchor the grid window where the IoU can reach
    :math:`t = \min(t_\mathrm{low}, \ell)` — :math:`\ell` is the IoU of a probe
    anchor, a lower bound of the box's best IoU — follows from
    :math:`\mathrm{IoU} \ge t \iff I \ge \tfrac{t}{1+t}(|a| + |g|)` with the
    intersection :math:`I = I_x I_y`, :math:`I_x \le \min(w_a, w_g)`,
    :math:`I_y \le \min(h_a, h_g)`. Candidate IoUs are computed exactly (same formula
    and operation order as :func:`~focal_detect.boxes.box_iou`, on the coordinates in
    ``anchors``), so the result equals the dense path. Without ``levels`` the dense
    IoU is evaluated for all images at once in anchor chunks whose working set stays
    within ``max_memory_bytes``. No Python loop over images in either path. (With
    ``low_threshold=0`` every anchor of an image with boxes is decided by its IoU, so
    the dense path is used even when ``levels`` is given.)

    Shape:
        anchors: ``(N, 4)``.
        gt_boxes: ``B`` tensors ``(M_i, 4)``.
        gt_labels: ``B`` tensors ``(M_i,)``.
        crowd_boxes: ``B`` tensors ``(C_i, 4)``.
        output: ``labels``, ``foreground``, ``matched_gt`` ``(B, N)``; ``box_targets`` ``(B, N, 4)``.

    Args:
        anchors: ``(N, 4)`` anchors in ``(x1, y1, x2, y2)``, shared by the images.
        gt_boxes: ``B`` tensors ``(M_i, 4)`` in ``(x1, y1, x2, y2)`` (``M_i`` may be 0);
            finite with ``x1 <= x2`` and ``y1 <= y2``.
        gt_labels: ``B`` int64 tensors ``(M_i,)`` of class indices ``>= 0``.
        crowd_boxes: Optional ``B`` tensors ``(C_i, 4)`` of crowd regions (not matched).
        levels: Optional anchor layout (list of ``AnchorLevel``) for the fast path;
            per-axis strides (``stride_h != stride_w``, e.g. torchvision's derived
            strides from ``AnchorGenerator(derive_strides=True)``) are supported.
        box_coder: Object with ``encode(boxes, anchors)``; default
            :class:`~focal_detect.coding.BoxCoder` with unit weights.
        high_threshold: Foreground IoU threshold (paper: 0.5).
        low_threshold: Background IoU threshold (paper: 0.4).
        allow_low_quality_matches: Let each box claim its best anchors.
        low_quality: ``"torchvision"`` or ``"mmdetection"``.
        min_low_quality_iou: Guard in ``[0, 1]`` (default on); ``None`` turns it off.
        crowd_ioa_threshold: IoA in ``(0, 1]`` above which a background anchor inside
            a crowd box is ignored; ``None`` disables crowd handling.
        max_memory_bytes: Byte budget of the evaluation's working set. The dense
            chunks (and the windowed path's arg-max over all boxes) reuse one
            preallocated workspace (three float buffers and a bool mask per
            (box, anchor) pair) sized so that it, the ``(B, N)`` outputs and every
            other array held meanwhile fit the budget; the windowed path gives half
            of it to its candidate groups. Not counted: the inputs, the returned
            targets, and the candidate pairs the windowed path keeps (about 20 bytes
            per pair with IoU above its threshold). Measured (5000 boxes, 120,087
            anchors, 512 MiB, 10 fresh processes per path): peak resident growth
            436-476 MiB dense, 412-439 MiB windowed
            (``benchmarks/bench_assignment_memory.py``).
            If the ``(B, N)`` outputs alone exceed it, chunks shrink to one anchor.

    Returns:
        :class:`AnchorAssignment` with ``labels``, ``box_targets`` (float32 for
        half-precision input, else the promoted input dtype), ``foreground`` and
        ``matched_gt``.

    Raises:
        TypeError: Non-tensor or non-float boxes, labels not int64, bad ``levels``.
        ValueError: Wrong shapes or lengths, devices differ, non-finite or inverted
            boxes, negative labels, arguments out of range.

    Example:
        >>> from focal_detect.anchors import AnchorGenerator
        >>> gen = AnchorGenerator()
        >>> sizes = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
        >>> anchors = gen(sizes)
        >>> gt = [torch.tensor([[10.0, 12.0, 50.0, 40.0]]), torch.zeros(0, 4)]
        >>> lab = [torch.tensor([7]), torch.zeros(0, dtype=torch.int64)]
        >>> fast = assign_anchors(anchors, gt, lab, levels=gen.levels(sizes))
        >>> dense = assign_anchors(anchors, gt, lab)
        >>> bool((fast.matched_gt == dense.matched_gt).all())
        True
        >>> fast.labels.shape, int(fast.foreground.sum(1)[1])
        (torch.Size([2, 774]), 0)
        >>> sorted(set(fast.labels[0].tolist()))
        [-2, -1, 7]
    """
    fn = "assign_anchors"
    high, low, lq, mode, guard = _check_matching_args(
        fn,
        high_threshold,
        low_threshold,
        allow_low_quality_matches,
        low_quality,
        min_low_quality_iou,
    )
    anchors = check_boxes(fn, "anchors", anchors)
    boxes = _check_box_list(fn, "gt_boxes", gt_boxes, None, anchors)
    bsz = len(boxes)
    if isinstance(gt_labels, Tensor) or not isinstance(gt_labels, Sequence):
        raise TypeError(
            f"{fn}: gt_labels must be a list of tensors (one per image), got {type(gt_labels).__name__}"
        )
    if len(gt_labels) != bsz:
        raise ValueError(f"{fn}: gt_labels must have one entry per image ({bsz}), got {len(gt_labels)}")
    labels_list = []
    for i, (lab, box) in enumerate(zip(gt_labels, boxes)):
        lab = check_tensor(fn, f"gt_labels[{i}]", lab)
        if lab.dtype != torch.int64:
            raise TypeError(f"{fn}: gt_labels[{i}] must have dtype torch.int64, got {lab.dtype}")
        if lab.shape != box.shape[:1]:
            raise ValueError(
                f"{fn}: gt_labels[{i}] must have shape ({box.shape[0]},) like gt_boxes[{i}], "
                f"got {tuple(lab.shape)}"
            )
        check_same_device(fn, anchors=anchors, **{f"gt_labels[{i}]": lab})
        labels_list.append(lab)
    crowds = None
    if crowd_boxes is not None:
        crowds = _check_box_list(fn, "crowd_boxes", crowd_boxes, bsz, anchors)
    crowd_thr = None
    if crowd_ioa_threshold is not None:
        crowd_thr = check_number(
            fn, "crowd_ioa_threshold", crowd_ioa_threshold, low=0.0, high=1.0, low_open=True
        )
    if isinstance(max_memory_bytes, bool) or not isinstance(max_memory_bytes, int) or max_memory_bytes <= 0:
        raise ValueError(f"{fn}: max_memory_bytes must be a positive int, got {max_memory_bytes!r}")
    n = anchors.shape[0]
    rows = None if levels is None else _check_levels(fn, levels, n)

    device = anchors.device
    dt = torch.promote_types(anchors.dtype, torch.float32)
    for t in boxes + (crowds or []):
        dt = torch.promote_types(dt, t.dtype)
    anc = anchors.to(dt)
    counts = [t.shape[0] for t in boxes]
    g = sum(counts)
    gt = torch.cat([t.to(dt) for t in boxes]) if bsz else anchors.new_zeros((0, 4), dtype=dt)
    lab_cat = torch.cat(labels_list) if bsz else torch.zeros(0, dtype=torch.int64, device=device)
    crowd_cat = None
    crowd_counts: list[int] = []
    if crowds is not None and crowd_thr is not None:
        crowd_counts = [t.shape[0] for t in crowds]
        if sum(crowd_counts):
            crowd_cat = torch.cat([t.to(dt) for t in crowds])
    _check_values(fn, anc, gt, lab_cat, crowd_cat)

    counts_t = torch.tensor(counts, dtype=torch.int64, device=device)
    offsets = torch.cumsum(counts_t, 0) - counts_t  # first global box index per image
    img_of_gt = torch.repeat_interleave(torch.arange(bsz, device=device), counts_t, output_size=g)
    ctx = _Batch(anc, gt, img_of_gt, offsets, counts, max_memory_bytes)

    grid = None
    if rows is not None and g and low > 0.0:
        grid = _Grid(anc, rows, fn)
        keys, codes = _match_windowed(ctx, grid, high, low, lq, mode, guard)
    else:  # no layout, no boxes, or low_threshold 0 (every anchor of an image is decided)
        keys, codes = _compact(_match_chunked(ctx, high, low, lq, mode, guard))

    if crowd_cat is not None:
        c_counts_t = torch.tensor(crowd_counts, dtype=torch.int64, device=device)
        img_of_crowd = torch.repeat_interleave(
            torch.arange(bsz, device=device), c_counts_t, output_size=crowd_cat.shape[0]
        )
        if rows is not None:
            grid = grid or _Grid(anc, rows, fn)
            covered = _crowd_windowed(ctx, grid, crowd_cat, img_of_crowd, crowd_thr)
        else:
            covered = _crowd_chunked(ctx, crowd_cat, crowd_counts, crowd_thr).view(-1)
            covered = covered.nonzero().flatten()
        # only background anchors change: drop those already foreground or ignored
        covered = covered[~torch.isin(covered, keys)]
        keys = torch.cat((keys, covered))
        codes = torch.cat((codes, torch.full_like(covered, IGNORE)))

    return _finish(ctx, keys, codes, lab_cat, box_coder)


def _compact(matched: Tensor) -> tuple[Tensor, Tensor]:
    """Flat keys ``b * N + n`` and codes of the anchors that are not ``BACKGROUND``."""
    flat = matched.reshape(-1)
    keys = (flat != BACKGROUND).nonzero().flatten()
    return keys, flat[keys]


def _check_values(fn: str, anc: Tensor, gt: Tensor, labels: Tensor, crowd: Tensor | None) -> None:
    """One device sync for all value checks; find the culprit only on failure."""

    def boxes_ok(t: Tensor) -> Tensor:
        return torch.isfinite(t).all() & (t[:, 2] >= t[:, 0]).all() & (t[:, 3] >= t[:, 1]).all()

    ok = boxes_ok(gt) & (labels >= 0).all() & torch.isfinite(anc).all()
    if crowd is not None:
        ok = ok & boxes_ok(crowd)
    if bool(ok):
        return
    if not bool(torch.isfinite(anc).all()):
        raise ValueError(f"{fn}: anchors must be finite, got NaN or infinity")
    if not bool(torch.isfinite(gt).all()):
        raise ValueError(f"{fn}: gt_boxes must be finite, got NaN or infinity")
    if not bool(boxes_ok(gt)):
        raise ValueError(f"{fn}: gt_boxes must satisfy x1 <= x2 and y1 <= y2, got an inverted box")
    if not bool((labels >= 0).all()):
        raise ValueError(f"{fn}: gt_labels must be class indices >= 0, got a negative label")
    raise ValueError(f"{fn}: crowd_boxes must be finite with x1 <= x2 and y1 <= y2")


def _pad(cat: Tensor, counts: list[int], m: int) -> tuple[Tensor, Tensor]:
    """Concatenated per-image boxes to ``(B, m, 4)`` zeros-padded boxes and a mask."""
    b, dev = len(counts), cat.device
    counts_t = torch.tensor(counts, dtype=torch.int64, device=dev)
    img = torch.repeat_interleave(torch.arange(b, device=dev), counts_t, output_size=cat.shape[0])
    slot = torch.arange(cat.shape[0], device=dev) - (torch.cumsum(counts_t, 0) - counts_t)[img]
    boxes = cat.new_zeros((b, m, 4))
    valid = torch.zeros((b, m), dtype=torch.bool, device=dev)
    boxes[img, slot] = cat
    valid[img, slot] = True
    return boxes, valid


class _Batch:
    """The concatenated ground truth of a batch (boxes of image ``b`` are consecutive)."""

    def __init__(
        self,
        anc: Tensor,
        gt: Tensor,
        img_of_gt: Tensor,
        offsets: Tensor,
        counts: list[int],
        budget: int,
    ) -> None:
        self.anc, self.gt, self.img_of_gt, self.offsets = anc, gt, img_of_gt, offsets
        self.counts, self.budget = counts, budget
        self.b, self.n, self.g = len(counts), anc.shape[0], gt.shape[0]
        self.m = max(counts, default=0)
        self.device = anc.device
        self._padded: tuple[Tensor, Tensor] | None = None

    def padded(self) -> tuple[Tensor, Tensor]:
        """``(B, M_max, 4)`` boxes and ``(B, M_max)`` validity, built once."""
        if self._padded is None:
            self._padded = _pad(self.gt, self.counts, self.m)
        return self._padded

    def dense_argmax(self, keys: Tensor, reserved: int = 0) -> Tensor:
        """Global index of the best box (lowest on ties) of flat anchors ``b * N + n``.

        ``reserved``: bytes the caller already holds, subtracted from the budget.
        """
        boxes, valid = self.padded()
        out = torch.empty_like(keys)
        if keys.numel() == 0:
            return out
        coords = [boxes[..., j].contiguous() for j in range(4)]  # (B, M) each
        area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
        plan = _plan_argmax_chunks(
            self.m,
            keys.numel(),
            self.anc.element_size(),
            self.budget,
            reserved + sum(t.nbytes for t in (*coords, area, out)),
        )
        ws = _Workspace(plan.per * self.m, self.anc.dtype, self.device)
        for s in range(0, keys.numel(), plan.per):
            k = keys[s : s + plan.per]
            img = torch.div(k, self.n, rounding_mode="floor")
            a = self.anc[k - img * self.n]  # (K, 4)
            w, h, g, mask = ws.views((k.numel(), self.m))
            # _iou_pairs(boxes[img], a[:, None, :]) without materialising boxes[img]:
            # the same operations in the same order, into reused buffers (same bits).
            torch.index_select(coords[2], 0, img, out=g)
            torch.minimum(g, a[:, 2, None], out=w)
            torch.index_select(coords[0], 0, img, out=g)
            w.sub_(torch.maximum(g, a[:, 0, None], out=g)).clamp_(min=0)
            torch.index_select(coords[3], 0, img, out=g)
            torch.minimum(g, a[:, 3, None], out=h)
            torch.index_select(coords[1], 0, img, out=g)
            h.sub_(torch.maximum(g, a[:, 1, None], out=g)).clamp_(min=0)
            inter = w.mul_(h)
            union = torch.index_select(area, 0, img, out=h)
            union.add_(((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None]).sub_(inter)
            torch.gt(union, 0, out=mask)
            iou = inter.div_(union).masked_fill_(mask.logical_not_(), 0)
            torch.index_select(valid, 0, img, out=mask)
            iou.masked_fill_(mask.logical_not_(), -1.0)
            out[s : s + plan.per] = iou.max(dim=1).indices + self.offsets[img]
        return out


# ------------------------------------------------------------------ memory planning
#
# The dense evaluations (the chunked path, and the arg-max over all boxes of the
# anchors the windowed path needs it for) write every (box, anchor) pair of a chunk
# into one preallocated workspace of three float buffers and one bool mask, reused by
# every chunk: the loop allocates nothing of pair size, so the peak is the plan, and
# the allocator cannot fragment it (0.1.0 allocated ~100 MB temporaries per chunk;
# its peak RSS varied 2-6x between identical runs). The chunk size is planned in
# bytes from everything alive during the loop: the workspace, the per-anchor outputs
# and their temporaries, and what the caller holds.


# Bytes of the per-anchor arrays of _match_chunked: vmax (float), arg, the threshold
# codes and their where/compare temporaries (int64 x 4, bool x 2), claim_any (bool),
# claim_box (int64), as a function of the float item size.
def _chunked_fixed_bytes_per_anchor(itemsize: int) -> int:
    return itemsize + 8 * 4 + 2 + 1 + 8


class _Plan(NamedTuple):
    per: int  # anchors (or keys) per chunk
    workspace_bytes: int  # the preallocated buffers
    total_bytes: int  # planned peak: workspace + everything else counted


def _pair_bytes(itemsize: int) -> int:
    """Workspace bytes per (box, anchor) pair: three float buffers and a bool mask."""
    return 3 * itemsize + 1


def _plan_dense_chunks(b: int, m: int, n: int, itemsize: int, budget: int) -> _Plan:
    """Anchors per chunk of _match_chunked so that everything it holds fits ``budget``.

    Counted: the workspace (``b * m * per`` pairs), per chunk column the max values and
    indices ``(B, per)``, the per-anchor arrays ``(B, N)`` and the per-chunk box maxima
    ``(chunks, B, M)``. ``per >= 1`` even if the outputs alone exceed the budget.
    """
    fixed = b * n * _chunked_fixed_bytes_per_anchor(itemsize)
    per_col = b * (m * _pair_bytes(itemsize) + itemsize + 8)
    # per chunk: its box maxima (listed, then stacked: two floats), `holds` and a compare
    per_chunk = b * m * (2 * itemsize + 2)

    def total(per: int) -> int:
        best = ((n + per - 1) // per) * per_chunk
        return b * m * per * _pair_bytes(itemsize) + fixed + best + b * per * (itemsize + 8)

    per = max(1, min(n, (budget - fixed) // per_col))
    for _ in range(3):  # the chunk maxima depend on the chunk count
        best = ((n + per - 1) // per) * per_chunk
        per = max(1, min(n, (budget - fixed - best) // per_col))
    while per > 1 and total(per) > budget:
        per -= per // 64 + 1
    per = max(1, per)
    return _Plan(per, b * m * per * _pair_bytes(itemsize), total(per))


def _plan_argmax_chunks(m: int, k: int, itemsize: int, budget: int, reserved: int) -> _Plan:
    """Keys per chunk of _Batch.dense_argmax: the workspace (``per * m`` pairs) plus,
    per key, its index, image, anchor coordinates and area and the arg-max output."""
    per_key = m * _pair_bytes(itemsize) + 8 * 4 + itemsize * 6
    per = max(1, min(k, (budget - reserved) // per_key))
    ws = per * m * _pair_bytes(itemsize)
    return _Plan(per, ws, reserved + per * per_key)


class _Workspace:
    """Three float buffers and a bool mask for ``capacity`` pairs, viewed per chunk."""

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


def _iou_into(a: Tensor, b: Tensor, ws: _Workspace, shape: tuple[int, ...]) -> Tensor:
    """:func:`_iou_pairs` of broadcasting ``a``, ``b`` written into the workspace.

    Same operations in the same order (same bits); returns a view of its first buffer.
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


def _thresholds(vmax: Tensor, arg: Tensor, high: float, low: float) -> Tensor:
    # NaN (not produced by _iou_pairs on checked boxes; kept safe) -> IGNORE
    code = torch.where((vmax >= low) | vmax.isnan(), IGNORE, BACKGROUND)
    return torch.where(vmax >= high, arg, code)


# --------------------------------------------------------------- dense, chunked path


def _match_chunked(ctx: _Batch, high: float, low: float, lq: bool, mode: str, guard: float | None) -> Tensor:
    """Exact matching from the dense IoU, evaluated in anchor chunks for all images."""
    b, n, m = ctx.b, ctx.n, ctx.m
    if m == 0 or n == 0:
        return torch.full((b, n), BACKGROUND, dtype=torch.int64, device=ctx.device)
    boxes, valid = ctx.padded()
    plan = _plan_dense_chunks(b, m, n, ctx.anc.element_size(), ctx.budget)
    per = plan.per
    ws = _Workspace(b * m * per, ctx.anc.dtype, ctx.device)
    chunks = [(s, min(s + per, n)) for s in range(0, n, per)]
    vmax = ctx.anc.new_empty((b, n))
    arg = torch.empty((b, n), dtype=torch.int64, device=ctx.device)
    chunk_best = []
    inval = ~valid[:, :, None]

    def iou_chunk(s: int, e: int, sub: Tensor | None = None) -> Tensor:
        bx = boxes if sub is None else boxes[:, sub]
        iou = _iou_into(bx[:, :, None, :], ctx.anc[None, None, s:e, :], ws, (b, bx.shape[1], e - s))
        return iou.masked_fill_(inval if sub is None else inval[:, sub], -1.0)

    for s, e in chunks:
        iou = iou_chunk(s, e)
        v, i = iou.max(dim=1)
        vmax[:, s:e] = v
        arg[:, s:e] = i
        if lq:
            chunk_best.append(iou.amax(dim=2))
        del iou
    arg += ctx.offsets[:, None]
    matched = _thresholds(vmax, arg, high, low)
    if not lq:
        return matched
    best = torch.stack(chunk_best)  # (chunks, B, M)
    highest = best.amax(dim=0)
    ok = valid if guard is None else valid & (highest > guard)
    # Only chunks holding some box's best IoU, and only those boxes, are revisited.
    claim_any = torch.zeros((b, n), dtype=torch.bool, device=ctx.device)
    claim_box = torch.full((b, n), -1, dtype=torch.int64, device=ctx.device)
    holds = (best == highest) & ok  # (chunks, B, M)
    active = holds.any(dim=1).any(dim=1).nonzero().flatten().tolist()
    for c in active:
        s, e = chunks[c]
        cols = holds[c].any(dim=0).nonzero().flatten()
        iou = iou_chunk(s, e, cols)
        _, scratch, _, claims = ws.views(iou.shape)  # the IoU is in the first buffer
        torch.eq(iou, highest[:, cols, None], out=claims).logical_and_(holds[c][:, cols, None])
        if mode == "torchvision":
            claim_any[:, s:e] |= claims.any(dim=1)
        else:  # the highest claiming box index + 1, in an integer view of a float buffer
            as_int = torch.int32 if scratch.element_size() == 4 else torch.int64
            rank = (cols + 1).to(as_int)[None, :, None]
            last = torch.mul(claims, rank, out=scratch.view(as_int)).amax(dim=1).to(torch.int64) - 1
            claim_box[:, s:e] = torch.maximum(claim_box[:, s:e], last)
    if mode == "torchvision":
        return torch.where(claim_any, arg, matched)
    return torch.where(claim_box >= 0, claim_box + ctx.offsets[:, None], matched)


def _crowd_chunked(ctx: _Batch, crowd: Tensor, counts: list[int], thr: float) -> Tensor:
    b, n = ctx.b, ctx.n
    c = max(counts)
    padded, _ = _pad(crowd, counts, c)  # zero-size padding boxes have IoA 0
    per = max(1, ctx.budget // (b * c * _DENSE_FLOATS_PER_PAIR * ctx.anc.element_size()))
    out = torch.empty((b, n), dtype=torch.bool, device=ctx.device)
    for s in range(0, n, per):
        ioa = _ioa_pairs(ctx.anc[None, None, s : s + per, :], padded[:, :, None, :])
        out[:, s : s + per] = (ioa >= thr).any(dim=1)
    return out


# ------------------------------------------------------------------ windowed path


class _Grid:
    """The cells (level, cell anchor) of an anchor grid, as device tensors."""

    def __init__(self, anc: Tensor, rows: list[tuple[int, int, int, float, float, int]], fn: str) -> None:
        dev = anc.device
        starts, hs, ws, sys_, sxs, an = [], [], [], [], [], []
        for start, h, w, sy, sx, a in rows:
            for j in range(a):
                starts.append(start + j)
                hs.append(h)
                ws.append(w)
                sys_.append(sy)
                sxs.append(sx)
                an.append(a)
        self.start = torch.tensor(starts, dtype=torch.int64, device=dev)
        self.h = torch.tensor(hs, dtype=torch.int64, device=dev)
        self.w = torch.tensor(ws, dtype=torch.int64, device=dev)
        self.a = torch.tensor(an, dtype=torch.int64, device=dev)
        # per-axis strides (torchvision derives e.g. 61 x 64 at P6 for 800 x 1088)
        self.stride_y = torch.tensor(sys_, dtype=anc.dtype, device=dev)
        self.stride_x = torch.tensor(sxs, dtype=anc.dtype, device=dev)
        self.base = anc[self.start]  # anchor at (y, x) = (0, 0) of each cell
        # Layout check (one sync): the last location must sit (W-1, H-1) strides away.
        last = anc[self.start + ((self.h - 1) * self.w + self.w - 1) * self.a]
        dy = (self.h - 1).to(anc.dtype) * self.stride_y
        dx = (self.w - 1).to(anc.dtype) * self.stride_x
        want = self.base + torch.stack((dx, dy, dx, dy), dim=1)
        tol = 0.1 * torch.stack((self.stride_x, self.stride_y) * 2, dim=1)
        if not bool(((last - want).abs() <= tol).all()):
            raise ValueError(
                f"{fn}: levels must describe anchors (strides, sizes, order), "
                "got a layout that does not match the anchor coordinates"
            )

    def windows(self, boxes: Tensor, need: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Grid windows, per (box, cell), of anchors whose intersection with the box can
        reach ``need`` (``(K, P)`` required intersection area; 0 means "any overlap").

        Returns ``x_lo``, ``y_lo``, ``nx``, ``ny`` of shape ``(K, P)`` (``nx * ny`` = 0
        for an empty window).
        """
        base, sx, sy = self.base[None], self.stride_x[None], self.stride_y[None]
        bw = base[..., 2] - base[..., 0]
        bh = base[..., 3] - base[..., 1]
        gw = (boxes[:, 2] - boxes[:, 0])[:, None]
        gh = (boxes[:, 3] - boxes[:, 1])[:, None]
        mx = torch.minimum(bw, gw)
        my = torch.minimum(bh, gh)
        pos = need > 0
        # Minimum overlap along x (y) so that I_x * I_y >= need with I_y <= my (I_x <= mx).
        cx = torch.where(pos, need / my, torch.zeros_like(need))
        cy = torch.where(pos, need / mx, torch.zeros_like(need))
        slack = 1.0 + _THRESHOLD_SLACK
        feasible = (cx <= mx * slack + 1e-6) & (cy <= my * slack + 1e-6)
        gx1, gy1, gx2, gy2 = (boxes[:, k, None] for k in range(4))
        w_max = (self.w - 1).to(boxes.dtype)[None]
        h_max = (self.h - 1).to(boxes.dtype)[None]
        # anchor x-range at column x: [bx1 + x sx, bx2 + x sx]; need x-overlap >= cx.
        x_lo = ((gx1 + cx - base[..., 2]) / sx - _WINDOW_MARGIN).ceil().clamp(min=0).minimum(w_max + 1)
        x_hi = ((gx2 - cx - base[..., 0]) / sx + _WINDOW_MARGIN).floor().clamp(min=-1).minimum(w_max)
        y_lo = ((gy1 + cy - base[..., 3]) / sy - _WINDOW_MARGIN).ceil().clamp(min=0).minimum(h_max + 1)
        y_hi = ((gy2 - cy - base[..., 1]) / sy + _WINDOW_MARGIN).floor().clamp(min=-1).minimum(h_max)
        # NaN (0/0 from a zero-size box with need > 0) is infeasible: IoU is 0 there.
        feasible &= ~(cx.isnan() | cy.isnan())
        x_lo = torch.nan_to_num(x_lo).to(torch.int64)
        y_lo = torch.nan_to_num(y_lo).to(torch.int64)
        nx = (torch.nan_to_num(x_hi, nan=-1.0).to(torch.int64) - x_lo + 1).clamp_(min=0)
        ny = (torch.nan_to_num(y_hi, nan=-1.0).to(torch.int64) - y_lo + 1).clamp_(min=0)
        nx = nx.masked_fill_(~feasible, 0)
        return x_lo, y_lo, nx, ny

    def probe(self, boxes: Tensor) -> Tensor:
        """Flat index ``(K, P)`` of each cell's anchor whose centre is nearest the box's."""
        base = self.base[None]
        sx, sy = self.stride_x[None], self.stride_y[None]
        gcx = ((boxes[:, 0] + boxes[:, 2]) / 2)[:, None]
        gcy = ((boxes[:, 1] + boxes[:, 3]) / 2)[:, None]
        acx = (base[..., 0] + base[..., 2]) / 2
        acy = (base[..., 1] + base[..., 3]) / 2
        w_max = (self.w - 1).to(boxes.dtype)[None]
        h_max = (self.h - 1).to(boxes.dtype)[None]
        x = ((gcx - acx) / sx).round().clamp(min=0).minimum(w_max).to(torch.int64)
        y = ((gcy - acy) / sy).round().clamp(min=0).minimum(h_max).to(torch.int64)
        return self.start[None] + (y * self.w[None] + x) * self.a[None]

    def candidates(self, x_lo: Tensor, y_lo: Tensor, nx: Tensor, ny: Tensor, budget_pairs: int):
        """Yield ``(row, anchor)`` index pairs of every window, in bounded groups."""
        p = self.start.numel()
        count = (nx * ny).flatten()
        combo = count.nonzero().flatten()
        if combo.numel() == 0:
            return
        cnt = count[combo]
        ends = torch.cumsum(cnt, 0)
        total = int(ends[-1])
        # group boundaries so that each group evaluates <= budget_pairs candidates
        if total <= budget_pairs:
            bounds = [(0, combo.numel())]
        else:
            cuts = torch.searchsorted(
                ends, torch.arange(budget_pairs, total, budget_pairs, device=ends.device), right=True
            ).tolist()
            edges = sorted(set([0] + [c for c in cuts if 0 < c < combo.numel()] + [combo.numel()]))
            bounds = list(zip(edges[:-1], edges[1:]))
        # Per non-empty window: its box row, first anchor index, row stride (W * A),
        # column stride (A) and width; each candidate then costs a few gathers.
        row_c = torch.div(combo, p, rounding_mode="floor")
        cell = combo - row_c * p
        a_c = self.a[cell]
        wa_c = self.w[cell] * a_c
        nx_c = nx.flatten()[combo]
        base_c = self.start[cell] + y_lo.flatten()[combo] * wa_c + x_lo.flatten()[combo] * a_c
        for c0, c1 in bounds:
            cn = cnt[c0:c1]
            tg = int(ends[c1 - 1] - (ends[c0 - 1] if c0 else 0))
            local = torch.repeat_interleave(torch.arange(c0, c1, device=cn.device), cn, output_size=tg)
            first = (ends[c0:c1] - cn)[local - c0]
            off = torch.arange(tg, device=cn.device).add_(ends[c0 - 1] if c0 else 0).sub_(first)
            w = nx_c[local]
            q = torch.div(off, w, rounding_mode="floor")
            idx = base_c[local] + q * wa_c[local] + (off - q * w) * a_c[local]
            yield row_c[local], idx


def _match_windowed(
    ctx: _Batch, grid: _Grid, high: float, low: float, lq: bool, mode: str, guard: float | None
) -> tuple[Tensor, Tensor]:
    """Exact matching from the (box, anchor) pairs that can decide it; returns the flat
    keys ``b * N + n`` and global codes of the anchors that are not ``BACKGROUND``."""
    anc, gt, n, b = ctx.anc, ctx.gt, ctx.n, ctx.b
    dev = ctx.device
    gw = gt[:, 2] - gt[:, 0]
    gh = gt[:, 3] - gt[:, 1]
    area_g = (gw * gh)[:, None]
    base = grid.base
    area_a = ((base[:, 2] - base[:, 0]) * (base[:, 3] - base[:, 1]))[None]
    # Per-box IoU target t: every pair with IoU >= low decides a label; with low-quality
    # matching the box's best anchors must be found too, and a probe anchor's IoU is a
    # lower bound of the best. t = 0 means "all pairs with a positive IoU".
    thr = torch.full((ctx.g,), low, dtype=gt.dtype, device=dev)
    if lq:
        probe = grid.probe(gt)
        lb = _iou_pairs(gt[:, None, :], anc[probe]).amax(dim=1)
        thr = torch.minimum(thr, lb)
    t = (thr * (1.0 - _THRESHOLD_SLACK))[:, None]
    need = t / (1.0 + t) * (area_a + area_g)
    x_lo, y_lo, nx, ny = grid.windows(gt, need)
    # Half the budget for the candidate groups, half for the arg-max below: memory the
    # allocator keeps from the groups' many temporaries cannot serve its one workspace.
    budget_pairs = max(1, ctx.budget // 2 // _SPARSE_BYTES_PER_PAIR)
    largest = 0
    keys, rows, vals = [], [], []
    for row, idx in grid.candidates(x_lo, y_lo, nx, ny, budget_pairs):
        largest = max(largest, row.numel())
        iou = _iou_pairs(gt[row], anc[idx])
        keep = (iou > 0) & (iou >= thr[row])
        row, idx, iou = row[keep], idx[keep], iou[keep]
        keys.append(ctx.img_of_gt[row] * n + idx)
        rows.append(row)
        vals.append(iou)
    if keys:
        key, row, iou = torch.cat(keys), torch.cat(rows), torch.cat(vals)
    else:
        key = torch.zeros(0, dtype=torch.int64, device=dev)
        row = torch.zeros(0, dtype=torch.int64, device=dev)
        iou = gt.new_zeros(0)
    # Per-anchor best IoU and arg-max over the kept pairs, on the distinct anchors only.
    # An anchor without a kept pair has best IoU < low_threshold: BACKGROUND.
    ukey, inv = torch.unique(key, return_inverse=True)
    vmax = iou.new_zeros(ukey.numel()).scatter_reduce_(0, inv, iou, "amax")
    win = iou == vmax[inv]
    arg = torch.full_like(ukey, ctx.g).scatter_reduce_(0, inv[win], row[win], "amin")
    codes = _thresholds(vmax, arg, high, low)
    if not lq:
        return _drop_background(ukey, codes)

    highest = gt.new_zeros(ctx.g).scatter_reduce_(0, row, iou, "amax")
    ok = torch.ones_like(highest, dtype=torch.bool) if guard is None else highest > guard
    claim = (iou == highest[row]) & ok[row]
    if mode == "torchvision":
        claimed = torch.zeros_like(ukey, dtype=torch.bool)
        claimed[inv[claim]] = True
        cidx = claimed.nonzero().flatten()
        held = sum(
            t.nbytes for t in (key, row, iou, ukey, inv, vmax, win, arg, codes, highest, claim, claimed)
        )
        held += largest * _SPARSE_BYTES_PER_PAIR  # the groups' peak, possibly still resident
        codes[cidx] = ctx.dense_argmax(ukey[cidx], reserved=held)
    else:
        last = torch.full_like(ukey, -1).scatter_reduce_(0, inv[claim], row[claim], "amax")
        codes = torch.where(last >= 0, last, codes)
    keys, codes = _drop_background(ukey, codes)
    # A box with no positive IoU anywhere (possible only with the guard off) ties at 0
    # with every anchor of its image, so the whole image is claimed: match it densely.
    nothing = (highest == 0) & ok
    if guard is None and bool(nothing.any()):
        zero_img = torch.zeros(b, dtype=torch.bool, device=dev)
        zero_img[ctx.img_of_gt[nothing]] = True
        zimgs = zero_img.nonzero().flatten()
        sel = zero_img[ctx.img_of_gt]
        sub_counts = [c for c, z in zip(ctx.counts, zero_img.tolist()) if z]
        sub_off = torch.cumsum(torch.tensor(sub_counts, device=dev), 0) - torch.tensor(sub_counts, device=dev)
        sub_img = torch.repeat_interleave(
            torch.arange(len(sub_counts), device=dev),
            torch.tensor(sub_counts, device=dev),
            output_size=int(sel.sum()),
        )
        sub = _Batch(anc, gt[sel], sub_img, sub_off, sub_counts, ctx.budget)
        sub_keys, sub_codes = _compact(_match_chunked(sub, high, low, lq, mode, guard))
        sub_b = torch.div(sub_keys, n, rounding_mode="floor")
        sub_codes = torch.where(
            sub_codes >= 0, sub_codes - sub_off[sub_b] + ctx.offsets[zimgs[sub_b]], sub_codes
        )
        sub_keys = sub_keys + (zimgs[sub_b] - sub_b) * n
        rest = ~zero_img[torch.div(keys, n, rounding_mode="floor")]
        keys = torch.cat((keys[rest], sub_keys))
        codes = torch.cat((codes[rest], sub_codes))
    return keys, codes


def _drop_background(keys: Tensor, codes: Tensor) -> tuple[Tensor, Tensor]:
    keep = codes != BACKGROUND
    return keys[keep], codes[keep]


def _crowd_windowed(ctx: _Batch, grid: _Grid, crowd: Tensor, img_of_crowd: Tensor, thr: float) -> Tensor:
    """Distinct flat keys of the anchors with IoA >= ``thr`` with a crowd box."""
    anc, n = ctx.anc, ctx.n
    base = grid.base
    area_a = ((base[:, 2] - base[:, 0]) * (base[:, 3] - base[:, 1]))[None]
    need = (thr * (1.0 - _THRESHOLD_SLACK)) * area_a.expand(crowd.shape[0], -1)
    x_lo, y_lo, nx, ny = grid.windows(crowd, need)
    hits = [torch.zeros(0, dtype=torch.int64, device=ctx.device)]
    budget_pairs = max(1, ctx.budget // _SPARSE_BYTES_PER_PAIR)
    for row, idx in grid.candidates(x_lo, y_lo, nx, ny, budget_pairs):
        hit = _ioa_pairs(anc[idx], crowd[row]) >= thr
        hits.append(img_of_crowd[row[hit]] * n + idx[hit])
    return torch.unique(torch.cat(hits))


# ------------------------------------------------------------------------ outputs


def _finish(
    ctx: _Batch, keys: Tensor, codes: Tensor, lab_cat: Tensor, box_coder: Any | None
) -> AnchorAssignment:
    """Write the outputs from the non-background anchors (flat keys, global codes)."""
    b, n = ctx.b, ctx.n
    if box_coder is None:
        from focal_detect.coding import BoxCoder

        box_coder = BoxCoder()
    dev = ctx.device
    fgm = codes >= 0
    img = torch.div(keys, n, rounding_mode="floor")
    gidx = codes.clamp(min=0)
    matched = torch.full((b * n,), BACKGROUND, dtype=torch.int64, device=dev)
    matched[keys] = torch.where(fgm, codes - ctx.offsets[img], codes)
    labels = torch.full((b * n,), BACKGROUND, dtype=torch.int64, device=dev)
    labels[keys] = torch.where(fgm, lab_cat[gidx] if ctx.g else codes, codes)
    fkeys = keys[fgm]
    foreground = torch.zeros(b * n, dtype=torch.bool, device=dev)
    foreground[fkeys] = True
    targets = ctx.anc.new_zeros((b * n, 4))
    if fkeys.numel():
        enc = box_coder.encode(ctx.gt[codes[fgm]], ctx.anc[fkeys - img[fgm] * n])
        targets[fkeys] = enc.to(targets.dtype)
    return AnchorAssignment(
        labels.view(b, n), targets.view(b, n, 4), foreground.view(b, n), matched.view(b, n)
    )


class AnchorAssigner:
    r"""Stores the assignment hyper-parameters; calling it runs :func:`assign_anchors`.

    Args:
        high_threshold: Foreground IoU threshold (paper: 0.5).
        low_threshold: Background IoU threshold (paper: 0.4).
        allow_low_quality_matches: Let each box claim its best anchors.
        low_quality: ``"torchvision"`` or ``"mmdetection"``.
        min_low_quality_iou: Guard (see module notes); ``None`` turns it off.
        crowd_ioa_threshold: See :func:`assign_anchors`; ``None`` disables crowds.
        box_coder: Object with ``encode(boxes, anchors)``; default unit-weight
            :class:`~focal_detect.coding.BoxCoder`.
        max_memory_bytes: Byte budget of the working set (see :func:`assign_anchors`).

    Example:
        >>> assigner = AnchorAssigner()
        >>> anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
        >>> out = assigner(anchors, [torch.tensor([[1.0, 0.0, 11.0, 10.0]])], [torch.tensor([2])])
        >>> out.labels
        tensor([[ 2, -1]])
        >>> out.box_targets[0, 0]
        tensor([0.1000, 0.0000, 0.0000, 0.0000])
    """

    def __init__(
        self,
        high_threshold: float = 0.5,
        low_threshold: float = 0.4,
        allow_low_quality_matches: bool = True,
        low_quality: str = "torchvision",
        min_low_quality_iou: float | None = 0.0,
        crowd_ioa_threshold: float | None = CROWD_IOA_THRESHOLD,
        box_coder: Any | None = None,
        max_memory_bytes: int = 512 * 2**20,
    ) -> None:
        fn = "AnchorAssigner"
        _check_matching_args(
            fn,
            high_threshold,
            low_threshold,
            allow_low_quality_matches,
            low_quality,
            min_low_quality_iou,
        )
        if crowd_ioa_threshold is not None:
            check_number(fn, "crowd_ioa_threshold", crowd_ioa_threshold, low=0.0, high=1.0, low_open=True)
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches
        self.low_quality = low_quality
        self.min_low_quality_iou = min_low_quality_iou
        self.crowd_ioa_threshold = crowd_ioa_threshold
        self.box_coder = box_coder
        self.max_memory_bytes = max_memory_bytes

    def __call__(
        self,
        anchors: Tensor,
        gt_boxes: Sequence[Tensor],
        gt_labels: Sequence[Tensor],
        crowd_boxes: Sequence[Tensor] | None = None,
        levels: Sequence[Any] | None = None,
    ) -> AnchorAssignment:
        """Run :func:`assign_anchors` with the stored hyper-parameters.

        Shape:
            anchors: ``(N, 4)``.
            gt_boxes: ``B`` tensors ``(M_i, 4)``.
            gt_labels: ``B`` tensors ``(M_i,)``.
            crowd_boxes: ``B`` tensors ``(C_i, 4)``.
            output: as :func:`assign_anchors`.
        """
        return assign_anchors(
            anchors,
            gt_boxes,
            gt_labels,
            crowd_boxes=crowd_boxes,
            levels=levels,
            box_coder=self.box_coder,
            high_threshold=self.high_threshold,
            low_threshold=self.low_threshold,
            allow_low_quality_matches=self.allow_low_quality_matches,
            low_quality=self.low_quality,
            min_low_quality_iou=self.min_low_quality_iou,
            crowd_ioa_threshold=self.crowd_ioa_threshold,
            max_memory_bytes=self.max_memory_bytes,
        )

    def __repr__(self) -> str:
        return (
            f"AnchorAssigner(high_threshold={self.high_threshold}, "
            f"low_threshold={self.low_threshold}, "
            f"allow_low_quality_matches={self.allow_low_quality_matches}, "
            f"low_quality={self.low_quality!r}, min_low_quality_iou={self.min_low_quality_iou}, "
            f"crowd_ioa_threshold={self.crowd_ioa_threshold})"
        )
