r"""The matching rules, in one place: from per-anchor and per-box reductions to codes.

Every matching path of this package (:func:`~focal_detect.matching.match_anchors` on a
given matrix, the dense fallback of :func:`~focal_detect.matching.assign_anchors` and
its windowed grid path) only *produces evidence* (per-anchor best quality and arg-max,
per-box highest quality, candidate (box, anchor) pairs, crowd IoA) and calls
:func:`decide_matches`, which owns the semantics written down in
:mod:`focal_detect.matching`: thresholds, the low-quality rule in both modes, the
minimum-IoU guard, NaN -> ``IGNORE`` and the crowd rule.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from focal_detect._checks import check_choice, check_number
from focal_detect.constants import BACKGROUND, IGNORE

__all__ = ["LOW_QUALITY_MODES", "MatchRules", "decide_matches", "ExactArgmax"]

#: Low-quality matching flavours: ``"torchvision"`` (= detectron2) and ``"mmdetection"``.
LOW_QUALITY_MODES = ("torchvision", "mmdetection")


class MatchRules(NamedTuple):
    """Validated matching hyper-parameters (see ``check_rules``)."""

    high: float
    low: float
    low_quality: bool
    mode: str
    guard: float | None


def check_rules(
    fn: str,
    high_threshold: object,
    low_threshold: object,
    allow_low_quality_matches: object,
    low_quality: object,
    min_low_quality_iou: object,
) -> MatchRules:
    """The hyper-parameters as :class:`MatchRules`; errors name ``fn`` and the argument."""
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
    return MatchRules(high, low, allow_low_quality_matches, mode, guard)


class ExactArgmax(Protocol):
    """Returns the exact arg-max box (lowest index on ties) of the given anchors."""

    def __call__(self, anchors: Tensor) -> Tensor: ...


def claiming_boxes(rules: MatchRules, box_best: Tensor, box_valid: Tensor | None = None) -> Tensor:
    """``(G,)`` bool: the boxes allowed to make low-quality matches.

    A (valid) box claims only when its highest quality is strictly above the guard
    (``min_low_quality_iou``; ``None``: every valid box). A NaN highest quality fails the
    comparison here and equals no quality in :func:`decide_matches`: such a box claims
    nothing. Producers use it to skip candidate pairs that cannot claim.
    """
    ok = torch.ones_like(box_best, dtype=torch.bool) if box_valid is None else box_valid
    if rules.guard is not None:
        ok = ok & (box_best > rules.guard)
    return ok


def decide_matches(
    rules: MatchRules,
    best: Tensor,
    best_box: Tensor,
    box_best: Tensor,
    pair_box: Tensor,
    pair_anchor: Tensor,
    pair_quality: Tensor,
    *,
    box_valid: Tensor | None = None,
    crowd_ioa: Tensor | None = None,
    crowd_ioa_threshold: float | None = None,
    exact_argmax: ExactArgmax | None = None,
) -> Tensor:
    r"""Match codes of ``K`` anchors from the evidence a matching path produced.

    1. Thresholds: ``best_box`` where ``best >= high``, ``IGNORE`` where
       ``low <= best < high``, ``BACKGROUND`` below ``low``.
    2. Low-quality matches (if on): a pair ``(g, k)`` *claims* anchor ``k`` when
       ``pair_quality == box_best[g]`` and box ``g`` passes ``claiming_boxes``;
       a claimed anchor becomes its own ``best_box`` (``"torchvision"``) or the largest
       claiming box index (``"mmdetection"``).
    3. ``IGNORE`` where ``best`` is NaN (its best box is unknown).
    4. Crowds: a ``BACKGROUND`` anchor with ``crowd_ioa >= crowd_ioa_threshold`` becomes
       ``IGNORE``.

    Contract of the evidence: ``best`` / ``best_box`` are exact (arg-max lowest on ties)
    where ``best >= low``; below ``low`` ``best`` need only be known to be below, and
    ``best_box`` is then taken from ``exact_argmax`` for the claimed anchors that need it
    (a producer whose ``best_box`` is exact everywhere passes ``None``). The pairs must
    contain every ``(g, k)`` whose quality equals ``box_best[g]`` for every box that may
    claim; extra pairs are harmless.

    Shape:
        best: ``(K,)`` float.
        best_box: ``(K,)`` int64 box indices.
        box_best: ``(G,)`` float, each box's highest quality.
        pair_box: ``(P,)`` int64 indices into ``box_best``.
        pair_anchor: ``(P,)`` int64 indices into ``best``.
        pair_quality: ``(P,)`` float.
        box_valid: ``(G,)`` bool; ``False`` boxes never claim.
        crowd_ioa: ``(K,)`` float, each anchor's largest IoA with a crowd box.
        output: ``(K,)`` int64.

    Returns:
        ``(K,)`` int64: a box index, ``BACKGROUND`` or ``IGNORE``.

    Example:
        >>> rules = MatchRules(0.5, 0.4, True, "torchvision", 0.0)
        >>> best, best_box = torch.tensor([0.9, 0.35, 0.0]), torch.tensor([0, 0, 0])
        >>> box_best = torch.tensor([0.9, 0.3])  # box 1's best anchor is anchor 1 (0.3)
        >>> pairs = torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([0.9, 0.3])
        >>> decide_matches(rules, best, best_box, box_best, *pairs)
        tensor([ 0,  0, -1])
        >>> decide_matches(rules._replace(mode="mmdetection"), best, best_box, box_best, *pairs)
        tensor([ 0,  1, -1])
    """
    unknown = best.isnan()
    code = torch.where((best >= rules.low) | unknown, IGNORE, BACKGROUND)
    codes = torch.where(best >= rules.high, best_box, code)
    if rules.low_quality and pair_box.numel():
        ok = claiming_boxes(rules, box_best, box_valid)
        claim = (pair_quality == box_best[pair_box]) & ok[pair_box]
        if rules.mode == "torchvision":
            claimed = torch.zeros_like(codes, dtype=torch.bool)
            claimed[pair_anchor[claim]] = True
            if exact_argmax is not None:
                fix = (claimed & ~(best >= rules.low)).nonzero().flatten()
                best_box = best_box.index_put((fix,), exact_argmax(fix))
            codes = torch.where(claimed, best_box, codes)
        else:
            last = torch.full_like(codes, -1).scatter_reduce_(0, pair_anchor[claim], pair_box[claim], "amax")
            codes = torch.where(last >= 0, last, codes)
    codes = codes.masked_fill_(unknown, IGNORE)
    if crowd_ioa is not None and crowd_ioa_threshold is not None:
        covered = (codes == BACKGROUND) & (crowd_ioa >= crowd_ioa_threshold)
        codes = codes.masked_fill_(covered, IGNORE)
    return codes
