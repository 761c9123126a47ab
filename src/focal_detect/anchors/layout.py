r"""The anchors as a value: the ``(N, 4)`` boxes and the grid layout that made them.

:class:`Anchors` is what :class:`~focal_detect.anchors.AnchorGenerator` returns and what
:func:`~focal_detect.matching.assign_anchors` takes: the boxes and, per level, an
:class:`AnchorLevel` saying where its anchors sit in the boxes and how they are made.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["AnchorLevel", "Anchors"]


@dataclass(frozen=True, eq=False)
class AnchorLevel:
    r"""Layout of one pyramid level's anchors inside the concatenated ``(N, 4)`` tensor.

    For every ``0 <= y < height``, ``0 <= x < width``, ``0 <= a < A``:

    .. math::

        \mathrm{anchors}[\mathrm{start} + (y W + x) A + a] = \mathrm{cell\_anchors}[a]
        + (x s_x + \delta_x,\; y s_y + \delta_y,\; x s_x + \delta_x,\; y s_y + \delta_y)

    bit-exactly, where :math:`s_y, s_x` are ``stride_h``, ``stride_w``,
    :math:`\delta_y, \delta_x` are ``shift_y``, ``shift_x`` and each translation is
    rounded to the anchors' dtype before the addition (exact for float32/float64 at any
    practical image size).

    Attributes:
        height: Feature-map height ``H``.
        width: Feature-map width ``W``.
        stride_h: Pixel distance between vertically neighbouring locations.
        stride_w: Pixel distance between horizontally neighbouring locations.
        shift_y: Pixels added to ``y * stride_h`` (the convention's offset).
        shift_x: Pixels added to ``x * stride_w``.
        cell_anchors: ``(A, 4)`` cell anchors in ``(x1, y1, x2, y2)``, dtype and device of
            the anchors.
        start: Flat index of this level's first anchor in the concatenated tensor.

    Example:
        >>> from focal_detect.anchors import AnchorGenerator
        >>> gen = AnchorGenerator()
        >>> lv = gen([(2, 3), (1, 2), (1, 1), (1, 1), (1, 1)]).levels[1]
        >>> (lv.height, lv.width, lv.stride, lv.shift, lv.start, lv.num_anchors)
        (1, 2, 16, 0.0, 54, 18)
        >>> tv = AnchorGenerator(convention="torchvision", derive_strides=True)
        >>> sizes = tv.feature_sizes_for((800, 1088))
        >>> lv = tv(sizes, image_size=(800, 1088)).levels[4]  # P7: 7 x 9 cells
        >>> (lv.height, lv.width, lv.stride_h, lv.stride_w)
        (7, 9, 114, 120)
    """

    height: int
    width: int
    stride_h: int
    stride_w: int
    shift_y: float
    shift_x: float
    cell_anchors: Tensor
    start: int

    @property
    def stride(self) -> int:
        """The stride of a level whose two strides are equal.

        Raises:
            ValueError: ``stride_h != stride_w`` (use those two instead).

        Example:
            >>> from focal_detect.anchors import AnchorGenerator
            >>> AnchorGenerator()([(1, 1)] * 5).levels[3].stride
            64
        """
        if self.stride_h != self.stride_w:
            raise ValueError(
                f"AnchorLevel.stride: stride_h and stride_w must be equal, got "
                f"{self.stride_h} and {self.stride_w} (use stride_h / stride_w)"
            )
        return self.stride_h

    @property
    def shift(self) -> float:
        """The shift of a level whose two shifts are equal.

        Raises:
            ValueError: ``shift_y != shift_x`` (use those two instead).

        Example:
            >>> from focal_detect.anchors import AnchorGenerator
            >>> AnchorGenerator(convention="keras-retinanet")([(1, 1)] * 5).levels[0].shift
            4.0
        """
        if self.shift_y != self.shift_x:
            raise ValueError(
                f"AnchorLevel.shift: shift_y and shift_x must be equal, got "
                f"{self.shift_y} and {self.shift_x} (use shift_y / shift_x)"
            )
        return self.shift_y

    @property
    def num_anchors_per_location(self) -> int:
        """``A``, the number of cell anchors.

        Example:
            >>> from focal_detect.anchors import AnchorGenerator
            >>> AnchorGenerator()([(1, 1)] * 5).levels[0].num_anchors_per_location
            9
        """
        return int(self.cell_anchors.shape[0])

    @property
    def num_anchors(self) -> int:
        """``H * W * A``, the number of anchors of this level.

        Example:
            >>> from focal_detect.anchors import AnchorGenerator
            >>> AnchorGenerator()([(4, 4), (2, 2), (1, 1), (1, 1), (1, 1)]).levels[0].num_anchors
            144
        """
        return self.height * self.width * self.num_anchors_per_location

    @property
    def end(self) -> int:
        """One past the flat index of this level's last anchor.

        Example:
            >>> from focal_detect.anchors import AnchorGenerator
            >>> AnchorGenerator()([(4, 4), (2, 2), (1, 1), (1, 1), (1, 1)]).levels[1].end
            180
        """
        return self.start + self.num_anchors


def level_boxes(
    height: int,
    width: int,
    stride_h: int,
    stride_w: int,
    shift_y: float,
    shift_x: float,
    cells: Tensor,
) -> Tensor:
    """The ``(H * W * A, 4)`` anchors of one level: ``cells`` translated to every location.

    The translations ``x * stride_w + shift_x`` (and ``y``) are computed exactly in float64
    (as Python computes them), rounded once to the cells' dtype and then added in that
    dtype: the :class:`AnchorLevel` identity, bit for bit.
    """
    dtype, dev = cells.dtype, cells.device
    xs = (torch.arange(width, dtype=torch.float64) * stride_w + shift_x).to(dtype=dtype).to(device=dev)
    ys = (torch.arange(height, dtype=torch.float64) * stride_h + shift_y).to(dtype=dtype).to(device=dev)
    sx = xs.view(1, width).expand(height, width)
    sy = ys.view(height, 1).expand(height, width)
    shifts = torch.stack((sx, sy, sx, sy), dim=-1)  # (H, W, 4)
    return (shifts.view(height, width, 1, 4) + cells.view(1, 1, -1, 4)).reshape(-1, 4)


@dataclass(frozen=True, eq=False)
class Anchors:
    r"""Anchor boxes of a feature pyramid together with their grid layout.

    ``boxes[lv.start + (y * lv.width + x) * A + a]`` equals ``lv.cell_anchors[a]``
    translated by ``(x * lv.stride_w + lv.shift_x, y * lv.stride_h + lv.shift_y)`` bit for
    bit, for every level ``lv`` of ``levels`` (see :class:`AnchorLevel`); the levels tile
    the boxes in order, P3 first. :func:`~focal_detect.matching.assign_anchors` uses the
    layout to evaluate only the (box, anchor) pairs that can matter; a plain ``(N, 4)``
    tensor there means "not a grid" (the dense fallback).

    An :class:`Anchors` made by :class:`~focal_detect.anchors.AnchorGenerator` is trusted
    as it is (no check, no device synchronisation). One built by hand is checked once,
    here: the levels must tile ``boxes`` and reproduce them bit for bit (one device
    synchronisation). Do not modify ``boxes`` in place (the generator caches them).

    Shape:
        boxes: ``(N, 4)`` with :math:`N = \sum_l H_l W_l A`.

    Attributes:
        boxes: ``(N, 4)`` anchors ``(x1, y1, x2, y2)``, levels concatenated.
        levels: One :class:`AnchorLevel` per pyramid level.

    Raises:
        TypeError: ``boxes`` not a floating ``(N, 4)`` tensor or a level not an
            :class:`AnchorLevel`.
        ValueError: The levels do not tile ``boxes`` or do not reproduce them.

    Example:
        >>> from focal_detect.anchors import AnchorGenerator
        >>> anchors = AnchorGenerator()([(2, 2), (1, 1), (1, 1), (1, 1), (1, 1)])
        >>> anchors.boxes.shape, len(anchors.levels), [t.shape[0] for t in anchors.per_level()]
        (torch.Size([72, 4]), 5, [36, 9, 9, 9, 9])
        >>> again = Anchors(anchors.boxes.clone(), anchors.levels)  # checked: it holds
        >>> Anchors(anchors.boxes + 1, anchors.levels)
        Traceback (most recent call last):
        ...
        ValueError: Anchors: levels must reproduce boxes bit for bit, got a mismatch at level 0
    """

    boxes: Tensor
    levels: tuple[AnchorLevel, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", tuple(self.levels))
        _check_layout("Anchors", self.boxes, self.levels)

    @property
    def num_anchors(self) -> int:
        """``N``, the number of anchors.

        Example:
            >>> from focal_detect.anchors import AnchorGenerator
            >>> AnchorGenerator()([(1, 1)] * 5).num_anchors
            45
        """
        return int(self.boxes.shape[0])

    def per_level(self) -> tuple[Tensor, ...]:
        """The anchors of each level, ``(H_l * W_l * A, 4)`` views of :attr:`boxes`.

        Example:
            >>> from focal_detect.anchors import AnchorGenerator
            >>> gen = AnchorGenerator(sizes=(8,), scales=(1.0,), ratios=(1.0,), strides=(8,))
            >>> gen([(2, 2)]).per_level()[0]
            tensor([[-4., -4.,  4.,  4.],
                    [ 4., -4., 12.,  4.],
                    [-4.,  4.,  4., 12.],
                    [ 4.,  4., 12., 12.]])
        """
        return tuple(self.boxes[lv.start : lv.end] for lv in self.levels)


def trusted_anchors(boxes: Tensor, levels: tuple[AnchorLevel, ...]) -> Anchors:
    """An :class:`Anchors` without the check (for the generator, whose layout holds by
    construction)."""
    out = object.__new__(Anchors)
    object.__setattr__(out, "boxes", boxes)
    object.__setattr__(out, "levels", levels)
    return out


def _check_layout(fn: str, boxes: object, levels: tuple[object, ...]) -> None:
    if (
        not isinstance(boxes, Tensor)
        or not boxes.is_floating_point()
        or boxes.ndim != 2
        or boxes.shape[-1] != 4
    ):
        raise TypeError(f"{fn}: boxes must be a floating-point (N, 4) tensor, got {boxes!r:.80}")
    expect = 0
    for k, lv in enumerate(levels):
        if not isinstance(lv, AnchorLevel):
            raise TypeError(f"{fn}: levels[{k}] must be an AnchorLevel, got {type(lv).__name__}")
        if lv.start != expect:
            raise ValueError(f"{fn}: levels[{k}] must start at {expect}, got start={lv.start}")
        expect = lv.end
    if expect != boxes.shape[0]:
        raise ValueError(f"{fn}: levels must cover the {boxes.shape[0]} boxes, got {expect}")
    for k, lv in enumerate(levels):
        assert isinstance(lv, AnchorLevel)
        cells = lv.cell_anchors.to(dtype=boxes.dtype, device=boxes.device)
        want = level_boxes(lv.height, lv.width, lv.stride_h, lv.stride_w, lv.shift_y, lv.shift_x, cells)
        if not torch.equal(boxes[lv.start : lv.end], want):
            raise ValueError(f"{fn}: levels must reproduce boxes bit for bit, got a mismatch at level {k}")
