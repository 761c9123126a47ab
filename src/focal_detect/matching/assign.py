"""Batched assignment: :func:`assign_anchors` and :class:`AnchorAssigner` (targets for the loss)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from focal_detect._checks import check_boxes, check_number, check_same_device, check_tensor
from focal_detect.anchors import AnchorLevel, Anchors
from focal_detect.constants import BACKGROUND
from focal_detect.matching.dense import Batch, dense_codes
from focal_detect.matching.rules import MatchRules, check_rules
from focal_detect.matching.windowed import Grid, probe_iou, windowed_codes

__all__ = ["CROWD_IOA_THRESHOLD", "AnchorAssignment", "assign_anchors", "AnchorAssigner", "BoxEncoder"]

#: Default crowd threshold: an anchor at least half inside a crowd box is not a negative.
CROWD_IOA_THRESHOLD = 0.5


class BoxEncoder(Protocol):
    """What :func:`assign_anchors` needs of a box coder (e.g.
    :class:`~focal_detect.coding.BoxCoder`): regression targets of boxes w.r.t. anchors."""

    def encode(self, boxes: Tensor, anchors: Tensor) -> Tensor: ...


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


def assign_anchors(
    anchors: Tensor | Anchors,
    gt_boxes: Sequence[Tensor],
    gt_labels: Sequence[Tensor],
    *,
    crowd_boxes: Sequence[Tensor] | None = None,
    box_coder: BoxEncoder | None = None,
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

    Given :class:`~focal_detect.anchors.Anchors` (what
    :class:`~focal_detect.anchors.AnchorGenerator` returns), the grid layout is used to
    evaluate only the (box, anchor) pairs that can decide the result (see
    ``focal_detect.matching.windowed``); the layout is trusted, nothing is checked
    against the coordinates. Given a plain ``(N, 4)`` tensor ("not a grid"), each image's
    dense IoU is evaluated in anchor chunks within ``max_memory_bytes``
    (``focal_detect.matching.dense``). Both paths produce evidence for the same rules
    (:func:`~focal_detect.matching.rules.decide_matches`) and give the same result, bit
    for bit. The dense path serves the images the windowed one cannot decide: every image
    when ``low_threshold=0`` (every anchor is decided by its IoU), and with the guard off
    (``min_low_quality_iou=None``) the images holding a box that may overlap no anchor.

    Shape:
        anchors: ``(N, 4)``.
        gt_boxes: ``B`` tensors ``(M_i, 4)``.
        gt_labels: ``B`` tensors ``(M_i,)``.
        crowd_boxes: ``B`` tensors ``(C_i, 4)``.
        output: ``labels``, ``foreground``, ``matched_gt`` ``(B, N)``; ``box_targets`` ``(B, N, 4)``.

    Args:
        anchors: :class:`~focal_detect.anchors.Anchors` (the grid path) or a plain
            ``(N, 4)`` tensor of anchors in ``(x1, y1, x2, y2)``, shared by the images.
        gt_boxes: ``B`` tensors ``(M_i, 4)`` in ``(x1, y1, x2, y2)`` (``M_i`` may be 0);
            finite with ``x1 <= x2`` and ``y1 <= y2``.
        gt_labels: ``B`` int64 tensors ``(M_i,)`` of class indices ``>= 0``.
        crowd_boxes: Optional ``B`` tensors ``(C_i, 4)`` of crowd regions (not matched).
        box_coder: Object with ``encode(boxes, anchors)``; default
            :class:`~focal_detect.coding.BoxCoder` with unit weights.
        high_threshold: Foreground IoU threshold (paper: 0.5).
        low_threshold: Background IoU threshold (paper: 0.4).
        allow_low_quality_matches: Let each box claim its best anchors.
        low_quality: ``"torchvision"`` or ``"mmdetection"``.
        min_low_quality_iou: Guard in ``[0, 1]`` (default on); ``None`` turns it off.
        crowd_ioa_threshold: IoA in ``(0, 1]`` above which a background anchor inside
            a crowd box is ignored; ``None`` disables crowd handling.
        max_memory_bytes: Byte budget of the evaluation's working set. The dense path
            writes each image's IoU into one preallocated workspace (three float buffers
            and a bool mask per (box, anchor) pair), in anchor chunks sized so that it
            and the batch-wide per-anchor arrays fit the budget
            (``matching.dense.plan_dense``); the windowed path gives half
            of it to its candidate groups and half to the arg-max of the low-quality
            claims. Not counted: the inputs, the outputs and the candidate pairs kept
            (a few per box on the dense path; about 20 bytes per pair with IoU above its
            threshold on the windowed one). ``benchmarks/bench_assignment_memory.py``
            measures the real peak resident growth. If the per-anchor arrays alone exceed
            it, chunks shrink to one anchor.

    Returns:
        :class:`AnchorAssignment` with ``labels``, ``box_targets`` (float32 for
        half-precision input, else the promoted input dtype), ``foreground`` and
        ``matched_gt``.

    Raises:
        TypeError: Non-tensor or non-float boxes, labels not int64.
        ValueError: Wrong shapes or lengths, devices differ, non-finite or inverted
            boxes, negative labels, arguments out of range.

    Example:
        >>> from focal_detect.anchors import AnchorGenerator
        >>> anchors = AnchorGenerator()([(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)])
        >>> gt = [torch.tensor([[10.0, 12.0, 50.0, 40.0]]), torch.zeros(0, 4)]
        >>> lab = [torch.tensor([7]), torch.zeros(0, dtype=torch.int64)]
        >>> fast = assign_anchors(anchors, gt, lab)  # Anchors: the windowed grid path
        >>> dense = assign_anchors(anchors.boxes, gt, lab)  # a plain tensor: dense
        >>> bool((fast.matched_gt == dense.matched_gt).all())
        True
        >>> fast.labels.shape, int(fast.foreground.sum(1)[1])
        (torch.Size([2, 774]), 0)
        >>> sorted(set(fast.labels[0].tolist()))
        [-2, -1, 7]
    """
    fn = "assign_anchors"
    rules = check_rules(
        fn, high_threshold, low_threshold, allow_low_quality_matches, low_quality, min_low_quality_iou
    )
    levels = anchors.levels if isinstance(anchors, Anchors) else None
    boxes_in = check_boxes(fn, "anchors", anchors.boxes if isinstance(anchors, Anchors) else anchors)
    boxes, labels, crowds = _check_targets(fn, boxes_in, gt_boxes, gt_labels, crowd_boxes)
    crowd_thr = None
    if crowd_ioa_threshold is not None:
        crowd_thr = check_number(
            fn, "crowd_ioa_threshold", crowd_ioa_threshold, low=0.0, high=1.0, low_open=True
        )
    if isinstance(max_memory_bytes, bool) or not isinstance(max_memory_bytes, int) or max_memory_bytes <= 0:
        raise ValueError(f"{fn}: max_memory_bytes must be a positive int, got {max_memory_bytes!r}")
    ctx, lab_cat = _batch(
        fn, boxes_in, boxes, labels, crowds if crowd_thr is not None else None, max_memory_bytes
    )
    keys, codes = _match(ctx, levels, rules, crowd_thr)
    return _finish(ctx, keys, codes, lab_cat, box_coder)


def _check_targets(
    fn: str,
    anchors: Tensor,
    gt_boxes: object,
    gt_labels: object,
    crowd_boxes: object,
) -> tuple[list[Tensor], list[Tensor], list[Tensor] | None]:
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
    return boxes, labels_list, crowds


def _batch(
    fn: str,
    anchors: Tensor,
    boxes: list[Tensor],
    labels: list[Tensor],
    crowds: list[Tensor] | None,
    budget: int,
) -> tuple[Batch, Tensor]:
    """Promote to one float dtype, concatenate, check the values (one sync)."""
    dt = torch.promote_types(anchors.dtype, torch.float32)
    for t in boxes + (crowds or []):
        dt = torch.promote_types(dt, t.dtype)
    anc = anchors.to(dt)
    counts = [t.shape[0] for t in boxes]
    gt = torch.cat([t.to(dt) for t in boxes]) if boxes else anchors.new_zeros((0, 4), dtype=dt)
    lab_cat = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.int64, device=anchors.device)
    crowd_cat = None
    crowd_counts = [0] * len(boxes)
    if crowds is not None and any(t.shape[0] for t in crowds):
        crowd_counts = [t.shape[0] for t in crowds]
        crowd_cat = torch.cat([t.to(dt) for t in crowds])
    _check_values(fn, anc, gt, lab_cat, crowd_cat)
    return Batch(anc, gt, counts, crowd_cat, crowd_counts, budget), lab_cat


def _match(
    ctx: Batch, levels: tuple[AnchorLevel, ...] | None, rules: MatchRules, crowd_thr: float | None
) -> tuple[Tensor, Tensor]:
    """Keys ``b * N + n`` and global codes of the non-``BACKGROUND`` anchors: windowed
    where the layout allows it, dense for the rest."""
    if levels is None or ctx.g == 0 or rules.low <= 0.0:
        return dense_codes(ctx, range(ctx.b), rules, crowd_thr)
    grid = Grid(ctx.anc, levels)
    lower = probe_iou(grid, ctx.anc, ctx.gt) if rules.low_quality else None
    dense_img = torch.zeros(ctx.b, dtype=torch.bool, device=ctx.device)
    if lower is not None and rules.guard is None:
        # guard off: a box overlapping no anchor claims its whole image (evaluate densely)
        dense_img[ctx.img_of_gt[lower <= 0]] = True
    rows = (~dense_img[ctx.img_of_gt]).nonzero().flatten()
    crowd_rows = None
    if ctx.crowd is not None:
        counts = torch.tensor(ctx.crowd_counts, dtype=torch.int64, device=ctx.device)
        img_of_crowd = torch.repeat_interleave(torch.arange(ctx.b, device=ctx.device), counts)
        crowd_rows = (~dense_img[img_of_crowd]).nonzero().flatten()
    lb = None if lower is None else lower[rows]
    keys, codes = windowed_codes(ctx, grid, rules, rows, lb, crowd_rows, crowd_thr)
    hard = dense_img.nonzero().flatten().tolist()
    if hard:
        dkeys, dcodes = dense_codes(ctx, hard, rules, crowd_thr)
        keys, codes = torch.cat((keys, dkeys)), torch.cat((codes, dcodes))
    return keys, codes


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


def _finish(
    ctx: Batch, keys: Tensor, codes: Tensor, lab_cat: Tensor, box_coder: BoxEncoder | None
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
        box_coder: BoxEncoder | None = None,
        max_memory_bytes: int = 512 * 2**20,
    ) -> None:
        fn = "AnchorAssigner"
        check_rules(
            fn, high_threshold, low_threshold, allow_low_quality_matches, low_quality, min_low_quality_iou
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
        anchors: Tensor | Anchors,
        gt_boxes: Sequence[Tensor],
        gt_labels: Sequence[Tensor],
        crowd_boxes: Sequence[Tensor] | None = None,
    ) -> AnchorAssignment:
        """Run :func:`assign_anchors` with the stored hyper-parameters.

        Shape:
            anchors: :class:`~focal_detect.anchors.Anchors` or ``(N, 4)``.
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
