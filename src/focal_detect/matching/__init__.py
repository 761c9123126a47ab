r"""Anchor-to-ground-truth matching (RetinaNet, Lin et al. 2017, Section 4).

An anchor is *foreground* for the ground-truth box it overlaps most when that IoU is
at least ``high_threshold`` (0.5), *background* when its best IoU is below
``low_threshold`` (0.4) and *ignored* in between. With low-quality matching (on by
default, as in torchvision, detectron2 and mmdetection) every ground-truth box also
claims the anchors it overlaps most, even below 0.5, so no object goes unmatched.

Two levels of API:

* :func:`match_anchors` / :class:`Matcher` work on a given IoU matrix ``(M, N)`` (a
  drop-in for torchvision's ``det_utils.Matcher``) or a padded batch ``(B, M, N)``
  with a validity mask.
* :func:`assign_anchors` / :class:`AnchorAssigner` go from anchors and per-image
  ground truth to focal-loss labels and box-regression targets for the whole batch.
  Given :class:`~focal_detect.anchors.Anchors` (boxes + grid layout, as
  :class:`~focal_detect.anchors.AnchorGenerator` returns them) they evaluate only the
  (box, anchor) pairs that can matter, found analytically on the grid; given a plain
  ``(N, 4)`` tensor they evaluate each image's dense IoU in chunks bounded by
  ``max_memory_bytes``. Both give the same result, bit for bit.

One semantic core: every path only produces evidence (per-anchor best IoU and arg-max,
per-box highest IoU, candidate pairs, crowd IoA) and
:func:`~focal_detect.matching.rules.decide_matches` turns it into codes. Package map:
:mod:`~focal_detect.matching.rules` (the rules), ``focal_detect.matching.pairs``
(pairwise IoU / IoA, bit-identical to :func:`~focal_detect.boxes.box_iou`),
``focal_detect.matching.matrix`` (given matrices), ``focal_detect.matching.dense``
(the non-grid fallback), ``focal_detect.matching.windowed`` (the grid path),
``focal_detect.matching.assign`` (targets for a batch).

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
  (Tested for the matrix, padded-batch, dense and windowed paths in
  ``tests/test_bad_input.py``; see also the conventions page, "Bad input".)
"""

from focal_detect.matching.assign import CROWD_IOA_THRESHOLD, AnchorAssigner, AnchorAssignment, assign_anchors
from focal_detect.matching.matrix import Matcher, match_anchors
from focal_detect.matching.rules import LOW_QUALITY_MODES

__all__ = [
    "LOW_QUALITY_MODES",
    "CROWD_IOA_THRESHOLD",
    "match_anchors",
    "Matcher",
    "AnchorAssignment",
    "assign_anchors",
    "AnchorAssigner",
]
