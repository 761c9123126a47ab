r"""Online hard example mining (OHEM) for a dense detector, the paper's Table 1d baseline.

The focal loss paper (Sec. 5.1, "Online Hard Example Mining") compares FL with OHEM
(Shrivastava et al. 2016) adapted to a one-stage detector: every anchor is scored by
its current loss, and each image's minibatch is made of the highest-loss anchors,
optionally after non-maximum suppression with the loss as the score and optionally
with at most a 1:3 foreground:background ratio. Only the selected anchors contribute
to the classification loss; all the others get weight 0.

:func:`ohem_sample` does the selection; it returns a boolean mask that is passed, cast
to float, as the ``weights`` of :func:`~focal_detect.losses.sigmoid_focal_loss_from_labels`
(use ``gamma=0`` and ``alpha=None`` for the plain cross entropy the paper trains OHEM
with).

Example:
    >>> import torch
    >>> from focal_detect import BACKGROUND, sigmoid_focal_loss_from_labels
    >>> logits = torch.tensor([[[2.0], [-3.0], [1.0], [0.5]]])      # (B=1, N=4, K=1)
    >>> labels = torch.tensor([[0, BACKGROUND, BACKGROUND, BACKGROUND]])
    >>> per_anchor = sigmoid_focal_loss_from_labels(logits, labels, alpha=None, gamma=0.0).sum(-1)
    >>> mask = ohem_sample(per_anchor, labels, batch_size_per_image=2, positive_fraction=0.5)
    >>> mask
    tensor([[ True, False,  True, False]])
    >>> sigmoid_focal_loss_from_labels(logits, labels, weights=mask.float(),
    ...                                alpha=None, gamma=0.0, reduction="sum")
    tensor(1.4402)
"""

from __future__ import annotations

import torch
from torch import Tensor

from focal_detect._checks import (
    check_boxes,
    check_float_tensor,
    check_number,
    check_same_device,
    check_tensor,
)
from focal_detect.boxes import batched_nms
from focal_detect.constants import BACKGROUND, IGNORE

__all__ = ["ohem_sample"]


def _top(scores: Tensor, eligible: Tensor, k: Tensor | int) -> Tensor:
    """Per row, the ``k`` (per row, ``(B, 1)``, or one int) highest-scoring eligible
    entries; ties keep the lower index first (stable sort), so the result is
    deterministic."""
    n = scores.shape[-1]
    key = torch.where(eligible, scores, torch.full_like(scores, -torch.inf))
    order = torch.sort(key, dim=-1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(n, device=scores.device).expand_as(order))
    # Losses are >= 0, so eligible entries (key > -inf) rank before ineligible ones.
    return eligible & (rank < k)


def ohem_sample(
    losses: Tensor,
    labels: Tensor,
    batch_size_per_image: int = 128,
    positive_fraction: float | None = 0.25,
    boxes: Tensor | None = None,
    nms_threshold: float | None = None,
) -> Tensor:
    r"""Choose each image's highest-loss anchors, with at most a given foreground share.

    For every image :math:`b` (one row), with :math:`S` = ``batch_size_per_image`` and
    :math:`f` = ``positive_fraction``:

    1. Candidates are the anchors whose label is not ``IGNORE``; with ``boxes`` and
       ``nms_threshold`` given, only the candidates kept by NMS with the loss as the
       score (per image, foreground and background together, as OHEM does with RoIs).
    2. Foreground (label :math:`\ge 0`): the
       :math:`n^{fg}_b = \min(\#\mathrm{fg}_b, \lfloor f S \rfloor)` of highest loss.
    3. Background (label ``BACKGROUND``): the
       :math:`n^{bg}_b = \min(\#\mathrm{bg}_b, S - n^{fg}_b)` of highest loss.

    With ``f = 0.25`` the foreground is at most a quarter of the minibatch, so when an
    image has enough background the ratio is at most 1:3 (the paper's "OHEM 1:3"); an
    image with few foreground anchors fills its minibatch with background (as Fast
    R-CNN's sampler), and an image without foreground gets :math:`S` background
    anchors. With ``positive_fraction=None`` there is no ratio constraint: the
    :math:`S` highest-loss candidates whatever their label (the paper's plain OHEM).
    Ties are broken towards the lower anchor index. The selection is not
    differentiable and reads no value back to the host unless NMS is used.

    Shape:
        losses: ``(B, N)`` or ``(N,)``.
        labels: as ``losses``.
        boxes: ``(B, N, 4)`` or ``(N, 4)``.
        output: as ``labels`` (bool).

    Args:
        losses: Per-anchor loss ``(B, N)`` or ``(N,)`` (e.g. the cross entropy summed
            over the ``K`` classes, computed without gradient). Higher is harder.
        labels: Integer ``(B, N)`` or ``(N,)``: class ``>= 0`` for foreground,
            ``BACKGROUND`` (-1), ``IGNORE`` (-2), as
            :func:`~focal_detect.matching.assign_anchors` returns them.
        batch_size_per_image: :math:`S`, anchors chosen per image at most (the paper
            tried 128, 256 and 512); any int ``>= 1``, ``S >= 2N`` selects as ``2N`` does.
        positive_fraction: :math:`f` in ``[0, 1]``, or ``None`` for no constraint.
        boxes: Optional boxes ``(B, N, 4)`` or ``(N, 4)`` in ``(x1, y1, x2, y2)`` for
            the NMS step (anchors or decoded predictions).
        nms_threshold: IoU threshold of the NMS step (the paper: 0.5 or 0.7);
            ``None`` skips it. Requires ``boxes``.

    Returns:
        Boolean mask of the shape of ``labels``: ``True`` for the chosen anchors.

    Raises:
        TypeError: Non-tensor inputs, non-float ``losses`` or non-integer ``labels``.
        ValueError: Shapes that disagree, ``batch_size_per_image < 1``,
            ``positive_fraction`` outside ``[0, 1]``, ``nms_threshold`` outside
            ``[0, 1]`` or given without ``boxes``.

    Example:
        >>> import torch
        >>> from focal_detect.constants import BACKGROUND, IGNORE
        >>> losses = torch.tensor([[0.1, 5.0, 0.3, 4.0, 2.0, 9.0]])
        >>> labels = torch.tensor([[0, BACKGROUND, 1, BACKGROUND, BACKGROUND, IGNORE]])
        >>> ohem_sample(losses, labels, batch_size_per_image=4, positive_fraction=0.25)
        tensor([[False,  True,  True,  True,  True, False]])
        >>> ohem_sample(losses, labels, batch_size_per_image=2, positive_fraction=None)
        tensor([[False,  True, False,  True, False, False]])
    """
    fn = "ohem_sample"
    check_float_tensor(fn, "losses", losses)
    check_tensor(fn, "labels", labels)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{fn}: labels must be an integer tensor, got dtype {labels.dtype}")
    if labels.ndim not in (1, 2):
        raise ValueError(f"{fn}: labels must have shape (B, N) or (N,), got {tuple(labels.shape)}")
    if losses.shape != labels.shape:
        raise ValueError(
            f"{fn}: losses must have the shape of labels {tuple(labels.shape)}, got {tuple(losses.shape)}"
        )
    if (
        isinstance(batch_size_per_image, bool)
        or not isinstance(batch_size_per_image, int)
        or batch_size_per_image < 1
    ):
        raise ValueError(f"{fn}: batch_size_per_image must be a positive int, got {batch_size_per_image!r}")
    frac = (
        None
        if positive_fraction is None
        else check_number(fn, "positive_fraction", positive_fraction, low=0.0, high=1.0)
    )
    if nms_threshold is not None:
        nms_t = check_number(fn, "nms_threshold", nms_threshold, low=0.0, high=1.0)
        if boxes is None:
            raise ValueError(f"{fn}: boxes must be given with nms_threshold, got None")
        check_boxes(fn, "boxes", boxes, batched=labels.ndim == 2)
        if boxes.shape[:-1] != labels.shape:
            raise ValueError(
                f"{fn}: boxes must have shape {tuple(labels.shape)} + (4,), got {tuple(boxes.shape)}"
            )
    check_same_device(fn, losses=losses, labels=labels, boxes=boxes)

    squeeze = labels.ndim == 1
    if squeeze:
        losses, labels = losses[None], labels[None]
        if boxes is not None:
            boxes = boxes[None]
    b, n = labels.shape
    scores = losses.detach().float()
    candidate = labels != IGNORE
    if nms_threshold is not None and n:
        assert boxes is not None
        img = torch.arange(b, device=labels.device)[:, None].expand(b, n)
        flat = candidate.reshape(-1).nonzero().squeeze(1)
        kept = batched_nms(
            boxes.detach().reshape(-1, 4)[flat].float(),
            scores.reshape(-1)[flat],
            img.reshape(-1)[flat],
            nms_t,
        )
        survived = torch.zeros(b * n, dtype=torch.bool, device=labels.device)
        survived[flat[kept]] = True
        candidate = candidate & survived.view(b, n)

    # A budget of 2N per image or more selects the same anchors as 2N (each of the
    # fg/bg counts is at most N): cap it so that huge ints (>= 2**63) stay exact.
    size = min(batch_size_per_image, 2 * n)
    if frac is None:
        return _finish(_top(scores, candidate, size), squeeze)

    fg = candidate & (labels >= 0)
    bg = candidate & (labels == BACKGROUND)
    max_fg = min(int(frac * batch_size_per_image), n)
    num_fg = fg.sum(dim=1).clamp(max=max_fg)  # (B,)
    num_bg = (size - num_fg)[:, None]
    chosen_fg = _top(scores, fg, num_fg[:, None])
    chosen_bg = _top(scores, bg, num_bg)
    return _finish(chosen_fg | chosen_bg, squeeze)


def _finish(mask: Tensor, squeeze: bool) -> Tensor:
    return mask[0] if squeeze else mask
