"""Matching on a given quality matrix: :func:`match_anchors` and :class:`Matcher`."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from focal_detect._checks import check_float_tensor, check_same_device, check_tensor
from focal_detect.constants import BACKGROUND, IGNORE
from focal_detect.matching.rules import MatchRules, check_rules, claiming_boxes, decide_matches

__all__ = ["match_anchors", "Matcher"]


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
    rules = check_rules(
        fn, high_threshold, low_threshold, allow_low_quality_matches, low_quality, min_low_quality_iou
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
    out = _match_matrix(q, valid, rules)
    return out[0] if unbatched else out


def _match_matrix(q: Tensor, valid: Tensor | None, rules: MatchRules) -> Tensor:
    """The evidence of a dense ``(B, M, N)`` matrix, decided by :func:`decide_matches`."""
    b, m, n = q.shape
    if m == 0 or n == 0:
        return torch.full((b, n), BACKGROUND, dtype=torch.int64, device=q.device)
    if valid is not None:
        q = q.masked_fill(~valid[:, :, None], -math.inf)
    best, arg = q.max(dim=1)  # a NaN in a column propagates to best
    first = torch.arange(b, device=q.device) * m  # flat index of each image's box 0
    best_box = (arg + first[:, None]).flatten()
    box_valid = None if valid is None else valid.flatten()
    if rules.low_quality:
        box_best = q.amax(dim=2)  # (B, M); a NaN row has a NaN highest and equals nothing
        may = claiming_boxes(rules, box_best, valid)
        img, row, col = ((q == box_best[:, :, None]) & may[:, :, None]).nonzero(as_tuple=True)
        pair_box, pair_anchor = img * m + row, img * n + col
        pair_quality = box_best[img, row]
        box_best = box_best.flatten()
    else:
        box_best = q.new_zeros(b * m)
        pair_box = pair_anchor = torch.zeros(0, dtype=torch.int64, device=q.device)
        pair_quality = q.new_zeros(0)
    codes = decide_matches(
        rules, best.flatten(), best_box, box_best, pair_box, pair_anchor, pair_quality, box_valid=box_valid
    ).view(b, n)
    return torch.where(codes >= 0, codes - first[:, None], codes)


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
        ) = check_rules(
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
