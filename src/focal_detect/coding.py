r"""Box coding: boxes as offsets ``(dx, dy, dw, dh)`` from their anchors (R-CNN).

With an anchor of centre :math:`(x_a, y_a)` and size :math:`(w_a, h_a)` and a box of
centre :math:`(x, y)` and size :math:`(w, h)`, and weights :math:`(w_x, w_y, w_w, w_h)`:

.. math::

    d_x = w_x \frac{x - x_a}{w_a}, \quad d_y = w_y \frac{y - y_a}{h_a}, \quad
    d_w = w_w \log\frac{w}{w_a}, \quad d_h = w_h \log\frac{h}{h_a}.

Widths are ``x2 - x1`` (no ``+ 1``) and centres ``x1 + 0.5 * w``; the operations are
the same, in the same order, as torchvision's ``BoxCoder`` (``encode_single`` /
``decode_single``), so ``float32``/``float64`` results are bit-identical to it.

Differences from torchvision: ``float16``/``bfloat16`` inputs are computed in
``float32`` and returned in the input dtype (torchvision computes in half
precision); ``symmetric_clamp=True`` also clamps :math:`d_w, d_h` from below, as
mmdetection; the clamp can be switched off with ``clamp=None``.

Anchors must have positive width and height (every anchor generator guarantees it);
this is not checked, as checking values would synchronise the device. A zero-width
anchor gives infinite or NaN codes, a zero-width box gives :math:`d_w = -\infty`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from focal_detect._checks import check_float_tensor, check_number, check_same_device

__all__ = ["MAX_LOG_SCALE", "encode_boxes", "decode_boxes", "BoxCoder"]

#: A 16 px anchor may grow to 1000 px, no further: the largest :math:`d_w, d_h`
#: passed to ``exp`` when decoding (torchvision's and detectron2's
#: ``bbox_xform_clip``, mmdetection's ``wh_ratio_clip = 16 / 1000``).
MAX_LOG_SCALE: float = math.log(1000.0 / 16)


def _upcast(t: Tensor) -> Tensor:
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.float()
    return t


def _check_weights(fn: str, weights: object) -> tuple[float, float, float, float]:
    if isinstance(weights, Tensor):
        weights = weights.tolist()
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence) or len(weights) != 4:
        raise ValueError(f"{fn}: weights must be a sequence of 4 positive numbers, got {weights!r}")
    wx, wy, ww, wh = (
        check_number(fn, f"weights[{i}]", w, low=0, low_open=True) for i, w in enumerate(weights)
    )
    return wx, wy, ww, wh


def _check_pair(fn: str, name: str, value: object, anchors: object) -> tuple[Tensor, Tensor]:
    t = check_float_tensor(fn, name, value)
    a = check_float_tensor(fn, "anchors", anchors)
    if t.ndim < 1 or t.shape[-1] != 4:
        raise ValueError(f"{fn}: {name} must have shape (..., N, 4), got {tuple(t.shape)}")
    if a.ndim < 1 or a.shape[-1] != 4:
        raise ValueError(f"{fn}: anchors must have shape (..., N, 4), got {tuple(a.shape)}")
    check_same_device(fn, **{name: t, "anchors": a})
    try:
        torch.broadcast_shapes(t.shape, a.shape)
    except RuntimeError:
        raise ValueError(
            f"{fn}: anchors must broadcast with {name} {tuple(t.shape)}, got {tuple(a.shape)}"
        ) from None
    if t.ndim >= 2 and a.ndim >= 2 and t.shape[-2] != a.shape[-2]:
        # Only the batch dimensions broadcast: one anchor per box, never (1, 4) vs (N, 4).
        raise ValueError(
            f"{fn}: anchors and {name} must have the same number of boxes N (only batch "
            f"dimensions broadcast), got anchors {tuple(a.shape)} and {name} {tuple(t.shape)}"
        )
    return t, a


def _out_dtype(a: Tensor, b: Tensor) -> torch.dtype:
    return torch.promote_types(a.dtype, b.dtype)


def encode_boxes(
    boxes: Tensor,
    anchors: Tensor,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
) -> Tensor:
    r"""Regression targets of ``boxes`` relative to ``anchors``.

    .. math::

        d_x = w_x \frac{x - x_a}{w_a}, \quad d_y = w_y \frac{y - y_a}{h_a}, \quad
        d_w = w_w \log\frac{w}{w_a}, \quad d_h = w_h \log\frac{h}{h_a}

    Equal to torchvision's ``BoxCoder(weights).encode_single(reference_boxes=boxes,
    proposals=anchors)``.

    Shape:
        boxes: ``(N, 4)`` or ``(B, N, 4)``.
        anchors: ``(N, 4)`` or ``(B, N, 4)``.
        output: ``(..., N, 4)``, the broadcast shape.

    Args:
        boxes: ``(N, 4)`` or ``(B, N, 4)`` target boxes in ``(x1, y1, x2, y2)``.
        anchors: ``(N, 4)`` or ``(B, N, 4)``, broadcast against ``boxes``; positive
            width and height.
        weights: :math:`(w_x, w_y, w_w, w_h)`, positive; RetinaNet uses ones.

    Returns:
        Deltas ``(dx, dy, dw, dh)`` of the broadcast shape ``(..., N, 4)``, in the
        promoted dtype of the inputs (half precision is computed in ``float32``).

    Raises:
        TypeError: Non-tensor or non-float input.
        ValueError: Bad or non-broadcastable shapes, a different number of boxes
            ``N`` in ``boxes`` and ``anchors`` (only batch dimensions broadcast), bad
            weights, or an inverted box (``x2 < x1`` or ``y2 < y1``; checking it reads
            two flags from the device in one synchronisation).

    Example:
        >>> anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
        >>> encode_boxes(torch.tensor([[5.0, 0.0, 15.0, 20.0]]), anchors)
        tensor([[0.5000, 0.5000, 0.0000, 0.6931]])
    """
    fn = "encode_boxes"
    wx, wy, ww, wh = _check_weights(fn, weights)
    boxes, anchors = _check_pair(fn, "boxes", boxes, anchors)
    out_dtype = _out_dtype(boxes, anchors)
    b, a = _upcast(boxes), _upcast(anchors)
    ax1, ay1, ax2, ay2 = a.unbind(-1)
    bx1, by1, bx2, by2 = b.unbind(-1)
    ex_w = ax2 - ax1
    ex_h = ay2 - ay1
    ex_cx = ax1 + 0.5 * ex_w
    ex_cy = ay1 + 0.5 * ex_h
    gt_w = bx2 - bx1
    gt_h = by2 - by1
    if not b.is_meta and not a.is_meta:
        # An inverted box (x2 < x1 or y2 < y1) would give log of a negative: NaN.
        bad_box, bad_anchor = torch.stack(  # both flags in one synchronisation
            (((gt_w < 0) | (gt_h < 0)).any(), ((ex_w < 0) | (ex_h < 0)).any())
        ).tolist()
        if bad_box or bad_anchor:
            name = "boxes" if bad_box else "anchors"
            raise ValueError(f"{fn}: {name} must have x1 <= x2 and y1 <= y2, got an inverted box")
    gt_cx = bx1 + 0.5 * gt_w
    gt_cy = by1 + 0.5 * gt_h
    dx = wx * (gt_cx - ex_cx) / ex_w
    dy = wy * (gt_cy - ex_cy) / ex_h
    dw = ww * torch.log(gt_w / ex_w)
    dh = wh * torch.log(gt_h / ex_h)
    return torch.stack((dx, dy, dw, dh), dim=-1).to(out_dtype)


def decode_boxes(
    deltas: Tensor,
    anchors: Tensor,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    clamp: float | None = MAX_LOG_SCALE,
    symmetric_clamp: bool = False,
) -> Tensor:
    r"""Boxes from regression ``deltas`` relative to ``anchors`` (inverse of
    :func:`encode_boxes`).

    .. math::

        x = x_a + w_a d_x / w_x, \quad w = w_a \exp(\min(d_w / w_w, c)), \quad
        (x_1, x_2) = (x - w / 2, x + w / 2)

    and likewise for :math:`y, h`, with :math:`c` = ``clamp``. Equal to torchvision's
    ``BoxCoder(weights, bbox_xform_clip=clamp).decode_single(deltas, anchors)``.

    Shape:
        deltas: ``(N, 4)`` or ``(B, N, 4)``.
        anchors: ``(N, 4)`` or ``(B, N, 4)``.
        output: ``(..., N, 4)``, the broadcast shape.

    Args:
        deltas: ``(N, 4)`` or ``(B, N, 4)`` as ``(dx, dy, dw, dh)``.
        anchors: ``(N, 4)`` or ``(B, N, 4)``, broadcast against ``deltas``.
        weights: :math:`(w_x, w_y, w_w, w_h)`, positive.
        clamp: Upper bound of :math:`d_w / w_w` and :math:`d_h / w_h` before ``exp``
            (keeps ``exp`` finite); ``None`` disables it.
        symmetric_clamp: Also clamp from below at ``-clamp`` (mmdetection), so a box
            shrinks at most as much as it may grow.

    Returns:
        Boxes ``(..., N, 4)`` in ``(x1, y1, x2, y2)``, in the promoted dtype of the
        inputs (half precision is computed in ``float32``).

    Raises:
        TypeError: Non-tensor or non-float input.
        ValueError: Bad or non-broadcastable shapes, bad weights or clamp.

    Example:
        >>> anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
        >>> decode_boxes(torch.tensor([[0.5, 0.5, 0.0, math.log(2.0)]]), anchors)
        tensor([[ 5.,  0., 15., 20.]])
        >>> decode_boxes(torch.tensor([[0.0, 0.0, 100.0, -100.0]]), anchors, symmetric_clamp=True)
        tensor([[-307.5000,    4.9200,  317.5000,    5.0800]])
    """
    fn = "decode_boxes"
    wx, wy, ww, wh = _check_weights(fn, weights)
    if clamp is not None:
        clamp = check_number(fn, "clamp", clamp, low=0)
    if not isinstance(symmetric_clamp, bool):
        raise TypeError(f"{fn}: symmetric_clamp must be a bool, got {type(symmetric_clamp).__name__}")
    deltas, anchors = _check_pair(fn, "deltas", deltas, anchors)
    out_dtype = _out_dtype(deltas, anchors)
    d = _upcast(deltas).to(torch.promote_types(_upcast(deltas).dtype, _upcast(anchors).dtype))
    a = _upcast(anchors).to(d.dtype)
    ax1, ay1, ax2, ay2 = a.unbind(-1)
    widths = ax2 - ax1
    heights = ay2 - ay1
    ctr_x = ax1 + 0.5 * widths
    ctr_y = ay1 + 0.5 * heights
    ddx, ddy, ddw, ddh = d.unbind(-1)
    dx = ddx / wx
    dy = ddy / wy
    dw = ddw / ww
    dh = ddh / wh
    if clamp is not None:
        low = -clamp if symmetric_clamp else None
        dw = torch.clamp(dw, min=low, max=clamp)
        dh = torch.clamp(dh, min=low, max=clamp)
    pred_cx = dx * widths + ctr_x
    pred_cy = dy * heights + ctr_y
    half_w = 0.5 * (torch.exp(dw) * widths)
    half_h = 0.5 * (torch.exp(dh) * heights)
    out = torch.stack((pred_cx - half_w, pred_cy - half_h, pred_cx + half_w, pred_cy + half_h), dim=-1)
    return out.to(out_dtype)


class BoxCoder(nn.Module):
    r"""Module form of :func:`encode_boxes` / :func:`decode_boxes`.

    Holds the weights and the clamp; a drop-in for torchvision's
    ``det_utils.BoxCoder`` (``encode`` = ``encode_single(reference_boxes=boxes,
    proposals=anchors)``, ``decode`` = ``decode_single``) on ``(..., N, 4)``
    tensors. It has no parameters or buffers.

    Args:
        weights: :math:`(w_x, w_y, w_w, w_h)`, positive; RetinaNet uses ones.
        clamp: Upper bound of the scale deltas before ``exp``; ``None`` disables it.
        symmetric_clamp: Also clamp from below (mmdetection).

    Example:
        >>> coder = BoxCoder()
        >>> anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
        >>> boxes = torch.tensor([[2.0, 1.0, 8.0, 12.0]])
        >>> coder.decode(coder.encode(boxes, anchors), anchors)
        tensor([[ 2.,  1.,  8., 12.]])
    """

    def __init__(
        self,
        weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        clamp: float | None = MAX_LOG_SCALE,
        symmetric_clamp: bool = False,
    ) -> None:
        super().__init__()
        fn = "BoxCoder"
        self.weights = _check_weights(fn, weights)
        self.clamp = None if clamp is None else check_number(fn, "clamp", clamp, low=0)
        if not isinstance(symmetric_clamp, bool):
            raise TypeError(f"{fn}: symmetric_clamp must be a bool, got {type(symmetric_clamp).__name__}")
        self.symmetric_clamp = symmetric_clamp

    def encode(self, boxes: Tensor, anchors: Tensor) -> Tensor:
        """Deltas of ``boxes`` relative to ``anchors``, see :func:`encode_boxes`.

        Shape:
            boxes: ``(N, 4)`` or ``(B, N, 4)``.
            anchors: ``(N, 4)`` or ``(B, N, 4)``.
            output: ``(..., N, 4)``, the broadcast shape.

        Example:
            >>> BoxCoder(weights=(10.0, 10.0, 5.0, 5.0)).encode(
            ...     torch.tensor([[1.0, 0.0, 11.0, 10.0]]), torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
            tensor([[1., 0., 0., 0.]])
        """
        return encode_boxes(boxes, anchors, self.weights)

    def decode(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """Boxes from ``deltas`` relative to ``anchors``, see :func:`decode_boxes`.

        Shape:
            deltas: ``(N, 4)`` or ``(B, N, 4)``.
            anchors: ``(N, 4)`` or ``(B, N, 4)``.
            output: ``(..., N, 4)``, the broadcast shape.

        Example:
            >>> BoxCoder().decode(torch.zeros(2, 1, 4), torch.tensor([[0.0, 0.0, 4.0, 2.0]]))
            tensor([[[0., 0., 4., 2.]],
            <BLANKLINE>
                    [[0., 0., 4., 2.]]])
        """
        return decode_boxes(deltas, anchors, self.weights, self.clamp, self.symmetric_clamp)

    def forward(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """Same as :meth:`decode`.

        Shape:
            deltas: ``(N, 4)`` or ``(B, N, 4)``.
            anchors: ``(N, 4)`` or ``(B, N, 4)``.
            output: ``(..., N, 4)``, the broadcast shape.

        Example:
            >>> BoxCoder()(torch.zeros(1, 4), torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
            tensor([[1., 2., 3., 4.]])
        """
        return self.decode(deltas, anchors)

    def extra_repr(self) -> str:
        return f"weights={self.weights}, clamp={self.clamp}, symmetric_clamp={self.symmetric_clamp}"
