r"""Analysis: the paper's Figure 4 (loss distribution) and anchor coverage of a dataset.

Figure 4 of the focal loss paper shows, for a converged model, how the loss is
distributed over the positive and the negative examples at several focusing
parameters :math:`\gamma`: the examples of each kind are sorted by loss from low to
high, and the cumulative sum of the loss, normalised to 1, is plotted against the
fraction of examples. For positives the curves barely move with :math:`\gamma`; for
negatives, at :math:`\gamma = 2` nearly all of the loss comes from a small fraction of
hard examples. :func:`focal_loss_cdf` computes those curves and
:func:`plot_focal_loss_cdf` draws them (matplotlib is imported only there).

:func:`anchor_coverage` measures, before any training, whether a set of anchors can
serve a dataset at all: the share of ground-truth boxes that have at least one anchor
with IoU at or above the foreground threshold (:func:`best_anchor_iou` gives each box's
best IoU). A box without such an anchor is only ever learnt through low-quality
matches.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

from focal_detect._checks import check_boxes, check_float_tensor, check_number, check_tensor
from focal_detect.boxes import box_iou
from focal_detect.constants import IGNORE

__all__ = ["HasBoxes", "anchor_coverage", "best_anchor_iou", "focal_loss_cdf", "plot_focal_loss_cdf"]

# Largest IoU block computed at once (anchors x boxes, float32: 16 MiB): bounds the
# memory of best_anchor_iou whatever the number of anchors and boxes.
_IOU_BLOCK_ELEMENTS = 1 << 22
# Boxes per block, so that one block of boxes still leaves a useful anchor chunk.
_BOX_BLOCK = 4096


def _cdf_on_grid(sorted_losses: Tensor, fractions: Tensor) -> Tensor:
    """Cumulative normalised loss of ascending ``sorted_losses`` at each fraction."""
    n = sorted_losses.numel()
    if n == 0:
        return torch.full_like(fractions, math.nan)
    cum = torch.cumsum(sorted_losses, 0)
    total = cum[-1]
    if not bool(total > 0):
        # Every loss is zero: the loss is spread evenly, the CDF is the diagonal.
        return fractions.clone()
    # The first round(f * n) examples, i.e. cum[k - 1] for k >= 1 and 0 for k = 0.
    k = torch.round(fractions * n).long()
    padded = torch.cat([cum.new_zeros(1), cum])
    return padded[k] / total


def focal_loss_cdf(
    logits: Tensor,
    labels: Tensor,
    gammas: Sequence[float] = (0.0, 0.5, 1.0, 2.0),
    num_points: int = 1001,
) -> dict[str, Any]:
    r"""Cumulative distribution of the normalised focal loss (the paper's Figure 4).

    Every (anchor, class) pair of a non-ignored anchor is one binary example: positive
    if the anchor's label is that class, negative otherwise (background anchors give
    ``K`` negatives, foreground anchors one positive and ``K - 1`` negatives). With
    :math:`x_t = x` for a positive and :math:`-x` for a negative,
    :math:`p_t = \sigma(x_t)` and, for each :math:`\gamma`,

    .. math::

        \mathrm{FL}_\gamma(p_t) = -(1 - p_t)^\gamma \log p_t
        = \sigma(-x_t)^\gamma \, \mathrm{softplus}(-x_t).

    Separately for positives and negatives the :math:`n` losses are sorted from low to
    high, :math:`\ell_{(1)} \le \dots \le \ell_{(n)}`, and the curve at the fraction
    :math:`f` of examples is

    .. math::

        C_\gamma(f) = \frac{\sum_{i \le \mathrm{round}(f n)} \ell_{(i)}}{\sum_{i \le n} \ell_{(i)}},

    non-decreasing from :math:`C(0) = 0` to :math:`C(1) = 1`. The constant
    :math:`\alpha_t` of the α-balanced loss cancels in this normalisation, so there is
    no ``alpha``. Since :math:`\mathrm{FL}_\gamma` decreases in :math:`x_t` for every
    :math:`\gamma`, one sort by :math:`x_t` serves all :math:`\gamma`; the sums are
    accumulated in float64. A group without examples gives NaN curves; a group whose
    losses are all zero gives the diagonal :math:`C(f) = f`.

    Shape:
        logits: ``(..., K)``, e.g. ``(B, N, K)``.
        labels: ``(...)``, e.g. ``(B, N)``.
        output: curves ``(P,)``, ``P = num_points``.

    Args:
        logits: Classification logits ``(..., K)``, e.g. ``(B, N, K)`` of a trained
            detector on held-out images.
        labels: Integer ``(...)`` = ``logits.shape[:-1]``: class ``0 .. K-1``,
            ``BACKGROUND`` (-1) or ``IGNORE`` (-2) (ignored anchors are left out).
        gammas: The :math:`\gamma \ge 0` to evaluate (the paper's 0, 0.5, 1, 2).
        num_points: Points of the fraction grid, evenly spaced in ``[0, 1]``
            (at least 2).

    Returns:
        A dict with ``"fraction"`` (``(P,)`` float64 grid), ``"positive"`` and
        ``"negative"`` (each a dict from every ``gamma`` (float) to its ``(P,)``
        float64 curve), ``"num_positive"`` and ``"num_negative"`` (ints).

    Raises:
        TypeError: Non-tensor inputs, non-float ``logits`` or non-integer ``labels``.
        ValueError: Shapes that disagree, a negative ``gamma`` or ``num_points < 2``.

    Example:
        >>> import torch
        >>> from focal_detect.constants import BACKGROUND
        >>> logits = torch.tensor([[0.0], [-4.0], [-2.0], [2.0]])
        >>> labels = torch.tensor([0, BACKGROUND, BACKGROUND, BACKGROUND])
        >>> out = focal_loss_cdf(logits, labels, gammas=(0.0, 2.0), num_points=4)
        >>> out["num_positive"], out["num_negative"], [round(f, 3) for f in out["fraction"].tolist()]
        (1, 3, [0.0, 0.333, 0.667, 1.0])
        >>> [round(v, 4) for v in out["negative"][0.0].tolist()]  # CE: 0.0181, 0.1269, 2.1269
        [0.0, 0.008, 0.0639, 1.0]
        >>> [round(v, 4) for v in out["negative"][2.0].tolist()]  # the hard one dominates more
        [0.0, 0.0, 0.0011, 1.0]
    """
    fn = "focal_loss_cdf"
    check_float_tensor(fn, "logits", logits)
    check_tensor(fn, "labels", labels)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{fn}: labels must be an integer tensor, got dtype {labels.dtype}")
    if logits.ndim < 1 or labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"{fn}: labels must have shape logits.shape[:-1] = {tuple(logits.shape[:-1])}, "
            f"got {tuple(labels.shape)}"
        )
    if isinstance(gammas, (str, bytes)) or not isinstance(gammas, Sequence):
        raise TypeError(
            f"{fn}: gammas must be a sequence of numbers such as (2.0,), got {type(gammas).__name__}"
        )
    gs = [check_number(fn, "gammas", g, low=0.0) for g in gammas]
    if not gs:
        raise ValueError(f"{fn}: gammas must not be empty, got {gammas!r}")
    if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 2:
        raise ValueError(f"{fn}: num_points must be an int >= 2, got {num_points!r}")

    k = logits.shape[-1]
    keep = labels != IGNORE
    x = logits.detach()[keep].double()  # (n_anchors, K)
    lab = labels[keep]
    positive = lab[:, None] == torch.arange(k, device=lab.device)  # (n_anchors, K)
    x_t = torch.where(positive, x, -x)
    fractions = torch.linspace(0.0, 1.0, num_points, dtype=torch.float64, device=x.device)
    out: dict[str, Any] = {"fraction": fractions}
    for name, mask in (("positive", positive), ("negative", ~positive)):
        # Highest x_t = easiest = lowest loss first, for every gamma.
        xt = torch.sort(x_t[mask], descending=True).values
        ce = torch.nn.functional.softplus(-xt)  # -log p_t
        q = torch.sigmoid(-xt)  # 1 - p_t
        out[name] = {g: _cdf_on_grid(ce if g == 0 else q.pow(g) * ce, fractions) for g in gs}
        out[f"num_{name}"] = int(xt.numel())
    return out


def plot_focal_loss_cdf(
    result: Mapping[str, Any], path: str | os.PathLike[str], title: str | None = None
) -> None:
    r"""Draw :func:`focal_loss_cdf`'s curves as the paper's Figure 4 and save them.

    Two panels (positives, negatives), one curve per :math:`\gamma`; the x-axis is the
    fraction of examples sorted by loss, the y-axis the cumulative normalised loss.
    Uses matplotlib's ``Agg`` backend (no display needed).

    Args:
        result: The dict returned by :func:`focal_loss_cdf`.
        path: Output image path (e.g. ``.png``).
        title: Optional figure title.

    Raises:
        ValueError: ``result`` lacks the keys of :func:`focal_loss_cdf`.

    Example:
        >>> import os, tempfile, torch
        >>> res = focal_loss_cdf(torch.randn(100, 3), torch.randint(-1, 3, (100,)))
        >>> path = os.path.join(tempfile.mkdtemp(), "cdf.png")
        >>> plot_focal_loss_cdf(res, path)
        >>> os.path.getsize(path) > 0
        True
    """
    for key in ("fraction", "positive", "negative"):
        if key not in result:
            raise ValueError(
                f"plot_focal_loss_cdf: result must have key {key!r} (from focal_loss_cdf), got {sorted(result)}"
            )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frac = torch.as_tensor(result["fraction"]).cpu().numpy()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, name in zip(axes, ("positive", "negative")):
        for g, curve in result[name].items():
            ax.plot(frac, torch.as_tensor(curve).cpu().numpy(), label=f"γ = {g:g}")
        count = result.get(f"num_{name}")
        ax.set_title(f"{name} samples" + (f" (n = {count:,})" if count is not None else ""))
        ax.set_xlabel("fraction of samples")
        ax.grid(alpha=0.3)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("cumulative normalized loss")
    axes[1].legend(loc="upper left")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=120)
    plt.close(fig)


class HasBoxes(Protocol):
    r"""Anything that carries anchors as an ``(N, 4)`` tensor attribute ``boxes``.

    Such as the value an anchor generator returns; :func:`anchor_coverage` and
    :func:`best_anchor_iou` accept it in place of the tensor.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class Anchors:
        ...     boxes: torch.Tensor
        >>> anchor_coverage(Anchors(torch.tensor([[0.0, 0.0, 8.0, 8.0]])), torch.tensor([[0.0, 0.0, 8.0, 6.0]]))
        1.0
    """

    @property
    def boxes(self) -> Tensor: ...


def _anchor_tensor(fn: str, anchors: Tensor | HasBoxes) -> Tensor:
    if not isinstance(anchors, Tensor):
        if not hasattr(anchors, "boxes"):
            raise TypeError(
                f"{fn}: anchors must be an (N, 4) tensor or have a .boxes (N, 4) tensor, "
                f"got {type(anchors).__name__}"
            )
        return check_boxes(fn, "anchors.boxes", anchors.boxes)
    return check_boxes(fn, "anchors", anchors)


def _gt_tensor(fn: str, boxes: Tensor | Sequence[Tensor], like: Tensor) -> Tensor:
    if isinstance(boxes, Tensor):
        gt = check_boxes(fn, "boxes", boxes)
    elif isinstance(boxes, Sequence) and not isinstance(boxes, (str, bytes)):
        parts = [check_boxes(fn, f"boxes[{i}]", b) for i, b in enumerate(boxes)]
        gt = torch.cat(parts) if parts else like.new_zeros(0, 4)
    else:
        raise TypeError(
            f"{fn}: boxes must be an (M, 4) tensor or a list of (M_i, 4) tensors, got {type(boxes).__name__}"
        )
    return gt.detach().to(device=like.device, dtype=like.dtype)


@torch.no_grad()
def best_anchor_iou(anchors: Tensor | HasBoxes, boxes: Tensor | Sequence[Tensor]) -> Tensor:
    r"""Each ground-truth box's highest IoU with any anchor.

    .. math:: q_j = \max_{i} \mathrm{IoU}(a_i, g_j)

    computed block by block (at most :math:`2^{22}` IoU values at a time, 16 MiB in
    float32), so 100k anchors against thousands of boxes need little memory. IoU is
    :func:`~focal_detect.boxes.box_iou` (0 for zero-area boxes).

    Shape:
        anchors: ``(N, 4)``.
        boxes: ``(M, 4)``, or per image ``(M_i, 4)`` with :math:`M = \sum_i M_i`.
        output: ``(M,)``.

    Args:
        anchors: ``(N, 4)`` anchors in ``(x1, y1, x2, y2)``, or an object with such a
            ``.boxes`` attribute (an anchor generator's output).
        boxes: Ground truth: one ``(M, 4)`` tensor or a list of per-image tensors,
            concatenated in order. Moved to the anchors' device and dtype.

    Returns:
        ``(M,)`` best IoU per box, in ``[0, 1]``; 0 for every box when ``N = 0``.

    Raises:
        TypeError: Non-tensor or non-float input.
        ValueError: A tensor not of shape ``(*, 4)``.

    Example:
        >>> anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0]])
        >>> best_anchor_iou(anchors, [torch.tensor([[0.0, 0.0, 10.0, 12.0]]),
        ...                           torch.tensor([[20.0, 20.0, 30.0, 30.0]])])
        tensor([0.8333, 0.2500])
    """
    fn = "best_anchor_iou"
    a = _anchor_tensor(fn, anchors).detach()
    gt = _gt_tensor(fn, boxes, a)
    out = gt.new_zeros(gt.shape[0], dtype=torch.float32 if gt.dtype == torch.float16 else gt.dtype)
    if a.shape[0] == 0:
        return out
    for j in range(0, gt.shape[0], _BOX_BLOCK):
        block = gt[j : j + _BOX_BLOCK]
        step = max(1, _IOU_BLOCK_ELEMENTS // block.shape[0])
        best = out[j : j + _BOX_BLOCK]
        for i in range(0, a.shape[0], step):
            torch.maximum(best, box_iou(a[i : i + step], block).amax(0), out=best)
    return out


def anchor_coverage(
    anchors: Tensor | HasBoxes, boxes: Tensor | Sequence[Tensor], high_threshold: float = 0.5
) -> float:
    r"""Share of ground-truth boxes that some anchor matches as foreground.

    .. math::

        \mathrm{coverage} = \frac{1}{M} \sum_{j=1}^{M}
        \mathbb{1}\Big[\max_i \mathrm{IoU}(a_i, g_j) \ge t\Big]

    with :math:`t` = ``high_threshold`` (the matcher's foreground threshold, 0.5 in the
    paper). Low-quality matches, which give every box its best anchor anyway, are not
    counted: the number says how many boxes get a proper positive anchor. Works for any
    anchor generator (pass its ``(N, 4)`` anchors for one image size); memory-bounded
    as :func:`best_anchor_iou`, which also gives the per-box IoUs for a report.

    Shape:
        anchors: ``(N, 4)``.
        boxes: ``(M, 4)``, or per image ``(M_i, 4)``.

    Args:
        anchors: ``(N, 4)`` anchors, or an object with a ``.boxes`` ``(N, 4)`` tensor.
        boxes: Ground truth: one ``(M, 4)`` tensor or a list of per-image tensors.
        high_threshold: Foreground IoU threshold :math:`t \in (0, 1]`.

    Returns:
        Coverage in ``[0, 1]``; ``nan`` when there are no boxes (nothing to cover).

    Raises:
        TypeError: Non-tensor or non-float input.
        ValueError: Bad shapes or ``high_threshold`` outside ``(0, 1]``.

    Example:
        >>> anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 40.0, 40.0]])
        >>> gt = torch.tensor([[0.0, 0.0, 10.0, 12.0],    # IoU 0.83 with the first anchor
        ...                    [20.0, 20.0, 30.0, 30.0],  # IoU 0.25 at best
        ...                    [22.0, 22.0, 40.0, 40.0]]) # IoU 0.81
        >>> round(anchor_coverage(anchors, gt), 4), anchor_coverage(anchors, gt, high_threshold=0.2)
        (0.6667, 1.0)
    """
    t = check_number("anchor_coverage", "high_threshold", high_threshold, low=0.0, high=1.0, low_open=True)
    best = best_anchor_iou(anchors, boxes)
    if best.numel() == 0:
        return math.nan
    return float((best >= t).double().mean())
