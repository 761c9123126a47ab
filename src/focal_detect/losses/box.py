r"""Box-regression losses of RetinaNet: smooth L1 (the paper's), L1 and GIoU.

Arguments are ``inputs``/``targets`` (predicted and target deltas) as in the focal
losses; :func:`giou_loss` takes ``boxes1``/``boxes2`` like torchvision's box losses.
"""

from __future__ import annotations

import torch
from torch import Tensor

from focal_detect._checks import (
    check_choice,
    check_float_tensor,
    check_number,
    check_same_shape,
    check_tensor,
)
from focal_detect.losses._reference import REDUCTIONS, reduce

__all__ = ["smooth_l1_loss", "l1_loss", "giou_loss"]


def _check_not_bool(fn: str, name: str, t: Tensor) -> None:
    if t.dtype == torch.bool:
        raise TypeError(f"{fn}: {name} must be a numeric tensor, got dtype torch.bool")


def smooth_l1_loss(inputs: Tensor, targets: Tensor, beta: float = 0.11, reduction: str = "none") -> Tensor:
    r"""Smooth L1 (Huber-like) box loss; ``beta = 0`` is L1.

    .. math::
        \ell(d) = \begin{cases} 0.5\,d^2/\beta & |d| < \beta \\
        |d| - 0.5\,\beta & \text{otherwise} \end{cases}, \qquad d = \mathrm{inputs} - \mathrm{targets}.

    ``beta = 0.11`` (1/9) is Detectron's RetinaNet setting.

    Shape:
        inputs: ``(*)``, e.g. ``(B, N, 4)``.
        targets: ``(*)``, as ``inputs``.
        output: ``(*)`` for ``reduction="none"``, else ``()``.

    Args:
        inputs: Predicted deltas ``(*)``, e.g. ``(B, N, 4)``.
        targets: Same shape.
        beta: Transition point ``>= 0``.
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.

    Returns:
        ``(*)`` for ``"none"``, else a scalar.

    Raises:
        TypeError: Non-tensor arguments, non-float ``inputs`` or bool ``targets``.
        ValueError: Shape mismatch, ``beta < 0`` or unknown ``reduction``.

    Example:
        >>> smooth_l1_loss(torch.tensor([0.0, 0.1, 1.0]), torch.zeros(3), beta=0.5)
        tensor([0.0000, 0.0100, 0.7500])
    """
    fn = "smooth_l1_loss"
    check_float_tensor(fn, "inputs", inputs)
    check_tensor(fn, "targets", targets)
    _check_not_bool(fn, "targets", targets)
    check_same_shape(fn, "inputs", inputs, "targets", targets)
    b = check_number(fn, "beta", beta, low=0.0)
    check_choice(fn, "reduction", reduction, REDUCTIONS)
    d = (inputs - targets).abs()
    if b == 0.0:
        loss = d
    else:
        loss = torch.where(d < b, 0.5 * d * d / b, d - 0.5 * b)
    return reduce(loss, reduction)


def l1_loss(inputs: Tensor, targets: Tensor, reduction: str = "none") -> Tensor:
    r"""L1 box loss :math:`|\mathrm{inputs} - \mathrm{targets}|`.

    Shape:
        inputs: ``(*)``, e.g. ``(B, N, 4)``.
        targets: ``(*)``, as ``inputs``.
        output: ``(*)`` for ``reduction="none"``, else ``()``.

    Args:
        inputs: ``(*)``.
        targets: Same shape.
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.

    Returns:
        ``(*)`` for ``"none"``, else a scalar.

    Raises:
        TypeError: Non-tensor arguments, non-float ``inputs`` or bool ``targets``.
        ValueError: Shape mismatch or unknown ``reduction``.

    Example:
        >>> l1_loss(torch.tensor([1.0, -2.0]), torch.zeros(2), reduction="sum")
        tensor(3.)
    """
    fn = "l1_loss"
    check_float_tensor(fn, "inputs", inputs)
    check_tensor(fn, "targets", targets)
    _check_not_bool(fn, "targets", targets)
    check_same_shape(fn, "inputs", inputs, "targets", targets)
    check_choice(fn, "reduction", reduction, REDUCTIONS)
    return reduce((inputs - targets).abs(), reduction)


def giou_loss(boxes1: Tensor, boxes2: Tensor, reduction: str = "none", eps: float = 1e-7) -> Tensor:
    r"""Generalized-IoU loss :math:`1 - \mathrm{GIoU}` of paired boxes.

    .. math::
        \mathrm{GIoU} = \frac{I}{U + \epsilon} - \frac{C - U}{C + \epsilon},

    with intersection :math:`I`, union :math:`U` and smallest enclosing box area
    :math:`C` (same numbers as ``torchvision.ops.generalized_box_iou_loss``).

    Shape:
        boxes1: ``(..., 4)``.
        boxes2: ``(..., 4)``, as ``boxes1``.
        output: ``(...)`` for ``reduction="none"``, else ``()``.

    Args:
        boxes1: ``(..., 4)`` in ``(x1, y1, x2, y2)``.
        boxes2: Same shape.
        reduction: ``"none"``, ``"mean"`` or ``"sum"`` (mean of no boxes is 0).
        eps: Added to the denominators.

    Returns:
        ``(...)`` for ``"none"``, else a scalar, in the promoted input dtype (half
        precision is computed in float32).

    Raises:
        TypeError: Non-tensor arguments, non-float ``boxes1`` or bool ``boxes2``.
        ValueError: Shapes other than ``(..., 4)`` or mismatched, unknown
            ``reduction``, ``eps < 0``.

    Example:
        >>> b = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
        >>> giou_loss(b, torch.tensor([[1.0, 1.0, 3.0, 3.0]]))
        tensor([1.0794])
    """
    fn = "giou_loss"
    check_float_tensor(fn, "boxes1", boxes1)
    check_tensor(fn, "boxes2", boxes2)
    if boxes1.ndim < 1 or boxes1.shape[-1] != 4:
        raise ValueError(f"{fn}: boxes1 must have shape (..., 4), got {tuple(boxes1.shape)}")
    check_same_shape(fn, "boxes1", boxes1, "boxes2", boxes2)
    check_choice(fn, "reduction", reduction, REDUCTIONS)
    check_number(fn, "eps", eps, low=0.0)
    _check_not_bool(fn, "boxes2", boxes2)
    out_dtype = (
        torch.promote_types(boxes1.dtype, boxes2.dtype) if boxes2.is_floating_point() else boxes1.dtype
    )
    # Half precision is computed in float32 (areas of boxes above ~256 px overflow
    # float16), like the other box ops; the result has the input dtype.
    b1 = boxes1 if boxes1.dtype in (torch.float32, torch.float64) else boxes1.float()
    b2 = boxes2.to(b1.dtype) if boxes2.dtype != torch.float64 else boxes2
    x1, y1, x2, y2 = b1.unbind(-1)
    u1, v1, u2, v2 = b2.unbind(-1)
    iw = (torch.minimum(x2, u2) - torch.maximum(x1, u1)).clamp(min=0)
    ih = (torch.minimum(y2, v2) - torch.maximum(y1, v1)).clamp(min=0)
    inter = iw * ih
    union = (x2 - x1) * (y2 - y1) + (u2 - u1) * (v2 - v1) - inter
    iou = inter / (union + eps)
    cw = torch.maximum(x2, u2) - torch.minimum(x1, u1)
    ch = torch.maximum(y2, v2) - torch.minimum(y1, v1)
    area_c = cw * ch
    loss = 1 - (iou - (area_c - union) / (area_c + eps))
    if reduction == "mean":
        loss = loss.mean() if loss.numel() else loss.sum() * 0.0
    else:
        loss = reduce(loss, reduction)
    return loss.to(out_dtype)
