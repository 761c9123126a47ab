r"""Anchor boxes on a feature pyramid (Lin et al. 2017, Section 4).

At pyramid level :math:`P_l` (stride :math:`s_l = 2^l`) every feature-map location
:math:`(y, x)` carries the same :math:`A` cell anchors, translated to the location:

.. math::

    \mathrm{anchor}(y, x, a) = \mathrm{cell}_a + (x s_l + \delta_l,\; y s_l + \delta_l,\;
    x s_l + \delta_l,\; y s_l + \delta_l)

where :math:`\delta_l` is the convention's shift (``offset * stride`` for most). The paper
uses levels P3-P7 (strides 8-128), base sizes 32-512, octave scales
:math:`\{2^0, 2^{1/3}, 2^{2/3}\}` and aspect ratios (height / width) :math:`\{1/2, 1, 2\}`,
i.e. :math:`A = 9`; a cell anchor of size :math:`S` and ratio :math:`r` has width
:math:`S / \sqrt r` and height :math:`S \sqrt r` (area :math:`S^2`).

Flat order of the anchors of one level: location-major (row ``y``, then column ``x``),
then the ``A`` cell anchors, i.e. ``index = (y * W + x) * A + a``, as torchvision. All
levels are concatenated, P3 first.

Conventions (``convention=`` / :meth:`AnchorGenerator.from_preset`) reproduce other
implementations bit-exactly (see ``docs`` "conventions" page):

========================  ======================  =========  ==========================
convention                cell order within A      offset     rounding / precision
========================  ======================  =========  ==========================
``"paper"`` (default)     ratio-major              0          none, float64 then cast
``"torchvision"``         ratio-major              0          sizes ``int()``, ``round()``
``"detectron2"``          scale-major              0          none, Python floats
``"mmdetection"``         ratio-major              0          none, float32
``"detectron"``           scale-major              (s-1)/2    ``round`` ratio sides,
                                                              inclusive pixel corners
``"keras-retinanet"``     ratio-major              s/2        none, float32 scales
========================  ======================  =========  ==========================

"ratio-major" means ``a = ratio_index * len(scales) + scale_index``; "scale-major" means
``a = scale_index * len(ratios) + ratio_index``.

Strides are nominal (``2**level``). torchvision instead derives them per batch as
``padded_image_size // feature_size``; the two agree when the padded image side is a
multiple of the largest stride (128 for P7), and differ otherwise (e.g. an 800 px side
gives a 7-cell P7 map and a torchvision stride of 114).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from focal_detect._checks import check_choice, check_number

__all__ = ["AnchorGenerator", "AnchorLevel", "CONVENTIONS"]

#: Names accepted by ``convention=`` and :meth:`AnchorGenerator.from_preset`.
CONVENTIONS: tuple[str, ...] = (
    "paper",
    "torchvision",
    "detectron2",
    "mmdetection",
    "detectron",
    "keras-retinanet",
)

_ORDERS = ("ratio-major", "scale-major")

# Cell-anchor order each implementation uses (see the module docstring).
_DEFAULT_ORDER = {
    "paper": "ratio-major",  # same as torchvision, so torchvision head weights line up
    "torchvision": "ratio-major",
    "detectron2": "scale-major",
    "mmdetection": "ratio-major",
    "detectron": "scale-major",
    "keras-retinanet": "ratio-major",
}

# Anchor centre inside a cell, as a fraction of the stride, per implementation.
_DEFAULT_OFFSET = {
    "paper": 0.0,
    "torchvision": 0.0,
    "detectron2": 0.0,
    "mmdetection": 0.0,
    "detectron": 0.5,
    "keras-retinanet": 0.5,
}

# Number of distinct feature-size keys kept per generator (oldest evicted first). Training
# with padded batches sees a handful of sizes; a bound keeps multi-scale runs in check.
CACHE_SIZE = 16


@dataclass(frozen=True, eq=False)
class AnchorLevel:
    r"""Layout of one pyramid level's anchors inside the concatenated ``(N, 4)`` tensor.

    For every ``0 <= y < height``, ``0 <= x < width``, ``0 <= a < A``:

    .. math::

        \mathrm{anchors}[\mathrm{start} + (y W + x) A + a] = \mathrm{cell\_anchors}[a]
        + (x s + \delta,\; y s + \delta,\; x s + \delta,\; y s + \delta)

    bit-exactly, where :math:`s` is ``stride``, :math:`\delta` is ``shift`` and the
    translation is rounded to the anchors' dtype before the addition (exact for
    float32/float64 at any practical image size).

    Attributes:
        height: Feature-map height ``H``.
        width: Feature-map width ``W``.
        stride: Pixel distance between neighbouring locations.
        shift: Pixels added to ``x * stride`` and ``y * stride`` (the convention's offset).
        cell_anchors: ``(A, 4)`` cell anchors in ``(x1, y1, x2, y2)``, dtype and device of
            the anchors.
        start: Flat index of this level's first anchor in the concatenated tensor.

    Example:
        >>> gen = AnchorGenerator()
        >>> lv = gen.levels([(2, 3), (1, 2), (1, 1), (1, 1), (1, 1)])[1]
        >>> (lv.height, lv.width, lv.stride, lv.shift, lv.start, lv.num_anchors)
        (1, 2, 16, 0.0, 54, 18)
    """

    height: int
    width: int
    stride: int
    shift: float
    cell_anchors: Tensor
    start: int

    @property
    def num_anchors_per_location(self) -> int:
        """``A``, the number of cell anchors.

        Example:
            >>> AnchorGenerator().levels([(1, 1)] * 5)[0].num_anchors_per_location
            9
        """
        return int(self.cell_anchors.shape[0])

    @property
    def num_anchors(self) -> int:
        """``H * W * A``, the number of anchors of this level.

        Example:
            >>> AnchorGenerator().levels([(4, 4), (2, 2), (1, 1), (1, 1), (1, 1)])[0].num_anchors
            144
        """
        return self.height * self.width * self.num_anchors_per_location

    @property
    def end(self) -> int:
        """One past the flat index of this level's last anchor.

        Example:
            >>> AnchorGenerator().levels([(4, 4), (2, 2), (1, 1), (1, 1), (1, 1)])[1].end
            180
        """
        return self.start + self.num_anchors


# --------------------------------------------------------------------------------------
# Cell anchors per convention. Each returns an (A, 4) tensor on the CPU in the precision
# the implementation computes in, and ``shift`` is applied later by the grid.
# --------------------------------------------------------------------------------------


def _pairs(n_scales: int, n_ratios: int, order: str) -> list[tuple[int, int]]:
    """(scale_index, ratio_index) in the order of the A cell anchors."""
    if order == "ratio-major":
        return [(j, i) for i in range(n_ratios) for j in range(n_scales)]
    return [(j, i) for j in range(n_scales) for i in range(n_ratios)]


def _cells_paper(size, stride, scales, ratios, order, offset):
    # float64: side S = size * scale; width S / sqrt(r), height S * sqrt(r).
    rows = []
    for j, i in _pairs(len(scales), len(ratios), order):
        side = size * scales[j]
        root = math.sqrt(ratios[i])
        w, h = side / root, side * root
        rows.append((-0.5 * w, -0.5 * h, 0.5 * w, 0.5 * h))
    return torch.tensor(rows, dtype=torch.float64)


def _cells_torchvision(size, stride, scales, ratios, order, offset):
    # torchvision retinanet_resnet50_fpn: per-level sizes truncated to int, then
    # AnchorGenerator.generate_anchors in float32: h = sqrt(r), w = 1 / h, corners
    # (+-w * size, +-h * size) / 2 rounded half-to-even.
    sides = torch.tensor([float(int(size * s)) for s in scales], dtype=torch.float32)
    r = torch.tensor([float(x) for x in ratios], dtype=torch.float32)
    h_ratio = torch.sqrt(r)
    w_ratio = 1 / h_ratio
    if order == "ratio-major":
        ws = (w_ratio[:, None] * sides[None, :]).reshape(-1)
        hs = (h_ratio[:, None] * sides[None, :]).reshape(-1)
    else:
        ws = (sides[:, None] * w_ratio[None, :]).reshape(-1)
        hs = (sides[:, None] * h_ratio[None, :]).reshape(-1)
    return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()


def _cells_detectron2(size, stride, scales, ratios, order, offset):
    # detectron2 DefaultAnchorGenerator.generate_cell_anchors, Python floats, then float32.
    rows = []
    for j, i in _pairs(len(scales), len(ratios), order):
        area = (size * scales[j]) ** 2.0
        w = math.sqrt(area / ratios[i])
        h = ratios[i] * w
        rows.append((-w / 2.0, -h / 2.0, w / 2.0, h / 2.0))
    return torch.tensor(rows, dtype=torch.float32)


def _cells_mmdetection(size, stride, scales, ratios, order, offset):
    # mmdet AnchorGenerator (v2/v3): base_size = stride, float32 scales
    # octave_base_scale * 2**(i / scales_per_octave) with octave_base_scale = size / stride,
    # centre = center_offset * base_size inside the cell (the grid adds x * stride only).
    base = stride
    mm_scales = torch.tensor([s * (size / stride) for s in scales], dtype=torch.float32)
    r = torch.tensor([float(x) for x in ratios], dtype=torch.float32)
    h_ratio = torch.sqrt(r)
    w_ratio = 1 / h_ratio
    if order == "ratio-major":  # mmdet's scale_major=True (its default)
        ws = (base * w_ratio[:, None] * mm_scales[None, :]).reshape(-1)
        hs = (base * h_ratio[:, None] * mm_scales[None, :]).reshape(-1)
    else:
        ws = (base * mm_scales[:, None] * w_ratio[None, :]).reshape(-1)
        hs = (base * mm_scales[:, None] * h_ratio[None, :]).reshape(-1)
    c = offset * base
    return torch.stack([c - 0.5 * ws, c - 0.5 * hs, c + 0.5 * ws, c + 0.5 * hs], dim=-1)


def _cells_detectron(size, stride, scales, ratios, order, offset):
    # Detectron (Caffe2) generate_anchors, one (size, ratio) at a time as its RetinaNet
    # code does: round the ratio's sides on the stride x stride box, then scale; corners
    # are inclusive pixels around the centre (stride - 1) / 2, in float64.
    s = float(stride)
    rows = []
    for j, i in _pairs(len(scales), len(ratios), order):
        scale = (size * scales[j]) / s
        ctr = 0.5 * (s - 1.0)
        w0 = float(round(math.sqrt(s * s / ratios[i])))
        h0 = float(round(w0 * ratios[i]))
        x1, y1 = ctr - 0.5 * (w0 - 1.0), ctr - 0.5 * (h0 - 1.0)
        x2, y2 = ctr + 0.5 * (w0 - 1.0), ctr + 0.5 * (h0 - 1.0)
        w1, h1 = x2 - x1 + 1.0, y2 - y1 + 1.0
        cx, cy = x1 + 0.5 * (w1 - 1.0), y1 + 0.5 * (h1 - 1.0)
        w2, h2 = w1 * scale, h1 * scale
        rows.append(
            (cx - 0.5 * (w2 - 1.0), cy - 0.5 * (h2 - 1.0), cx + 0.5 * (w2 - 1.0), cy + 0.5 * (h2 - 1.0))
        )
    return torch.tensor(rows, dtype=torch.float64)


def _f32(x: float) -> float:
    return float(torch.tensor(x, dtype=torch.float32))


def _cells_keras_retinanet(size, stride, scales, ratios, order, offset):
    # keras-retinanet utils.anchors.generate_anchors: float32 scales and ratios
    # (keras floatx), side = float32(size * scale); w = sqrt(side^2 / r), h = w * r in
    # float64; corners -w/2 .. w - w/2.
    rows = []
    for j, i in _pairs(len(scales), len(ratios), order):
        side = float(torch.tensor(float(size), dtype=torch.float32) * _f32(scales[j]))
        r = _f32(ratios[i])
        w = math.sqrt(side * side / r)
        h = w * r
        rows.append((-(w * 0.5), -(h * 0.5), w - w * 0.5, h - h * 0.5))
    return torch.tensor(rows, dtype=torch.float64)


_CELLS = {
    "paper": _cells_paper,
    "torchvision": _cells_torchvision,
    "detectron2": _cells_detectron2,
    "mmdetection": _cells_mmdetection,
    "detectron": _cells_detectron,
    "keras-retinanet": _cells_keras_retinanet,
}


def _shift(convention: str, stride: int, offset: float) -> float:
    """Pixels added to ``x * stride`` by the grid (the rest of the centre is in the cell)."""
    if convention == "mmdetection":
        return 0.0  # mmdet puts center_offset * base_size inside the cell anchors
    if convention == "detectron":
        return (offset - 0.5) * stride  # the cell is already centred on (stride - 1) / 2
    return offset * stride


# --------------------------------------------------------------------------------------


def _positive_numbers(fn: str, name: str, values: object) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{fn}: {name} must be a sequence of numbers, got {type(values).__name__}")
    if len(values) == 0:
        raise ValueError(f"{fn}: {name} must not be empty, got {tuple(values)!r}")
    out = []
    for k, v in enumerate(values):
        x = check_number(fn, f"{name}[{k}]", v, low=0.0, low_open=True)
        if math.isinf(x):
            raise ValueError(f"{fn}: {name}[{k}] must be finite, got {v!r}")
        out.append(x)
    return tuple(out)


def _positive_ints(fn: str, name: str, values: object) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{fn}: {name} must be a sequence of ints, got {type(values).__name__}")
    if len(values) == 0:
        raise ValueError(f"{fn}: {name} must not be empty, got {tuple(values)!r}")
    out = []
    for k, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{fn}: {name}[{k}] must be an int, got {type(v).__name__}")
        if v <= 0:
            raise ValueError(f"{fn}: {name}[{k}] must be positive, got {v!r}")
        out.append(int(v))
    return tuple(out)


def _resolve_device(device: torch.device | str | None) -> torch.device:
    if device is None:
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type != "cpu" and dev.index is None:
        # "cuda" and "cuda:0" must share one cache entry.
        dev = torch.empty(0, device=dev).device
    return dev


class AnchorGenerator:
    r"""Anchors for a feature pyramid: :math:`A` = ``len(scales) * len(ratios)`` per location.

    The cell anchor of base size :math:`S_l`, scale :math:`c` and ratio :math:`r`
    (height / width) has width :math:`S_l c / \sqrt r` and height :math:`S_l c \sqrt r`
    (each convention computes and rounds this its own way, see the module docstring).
    Location :math:`(y, x)` of level :math:`l` translates the cell anchors by
    ``x * stride + shift`` and ``y * stride + shift``.

    Results are cached per ``(feature_sizes, device, dtype)`` in a small dict (at most
    ``CACHE_SIZE`` keys, oldest evicted first): a repeated call returns the *same*
    tensor objects, so do not modify them in place.

    Precision: cell anchors are computed in the precision of the chosen convention
    (float64 for ``"paper"``) and cast to ``dtype``; the translations are computed
    exactly in float64, cast to ``dtype``, and added in ``dtype``, which is what keeps
    :class:`AnchorLevel`'s identity bit-exact. For float16/bfloat16 this means anchors far
    from the origin are rounded to the dtype's spacing (float16: 1 px beyond 1024,
    bfloat16: 4 px beyond 512); ask for float32 anchors if that matters.

    Args:
        sizes: Base anchor size :math:`S_l` per level, in pixels, ``> 0`` (length ``L``).
        scales: Octave scales :math:`c`, shared by all levels, ``> 0``.
        ratios: Aspect ratios height / width, shared by all levels, ``> 0``.
        strides: Stride per level in pixels (positive ints, length ``L``).
        offset: Anchor centre inside a cell as a fraction of the stride, in ``[0, 1]``
            (0: top-left corner, as torchvision; 0.5: cell centre, as keras-retinanet).
        convention: How cell anchors are computed, rounded and ordered; one of
            :data:`CONVENTIONS`.
        order: ``"ratio-major"`` or ``"scale-major"`` cell-anchor order; ``None`` takes
            the convention's own.

    Raises:
        ValueError: Non-positive size/scale/ratio/stride, ``sizes`` and ``strides`` of
            different lengths, offset outside ``[0, 1]``, unknown convention or order.
        TypeError: An argument of the wrong type.

    Example:
        >>> gen = AnchorGenerator()
        >>> gen.num_anchors_per_location, gen.num_levels, gen.strides
        (9, 5, (8, 16, 32, 64, 128))
        >>> sizes = gen.feature_sizes_for((64, 64))
        >>> sizes
        [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
        >>> gen(sizes).shape
        torch.Size([774, 4])
    """

    def __init__(
        self,
        sizes: Sequence[float] = (32, 64, 128, 256, 512),
        scales: Sequence[float] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3)),
        ratios: Sequence[float] = (0.5, 1.0, 2.0),
        strides: Sequence[int] = (8, 16, 32, 64, 128),
        offset: float = 0.0,
        convention: str = "paper",
        *,
        order: str | None = None,
    ) -> None:
        fn = "AnchorGenerator"
        self._sizes = _positive_numbers(fn, "sizes", sizes)
        self._scales = _positive_numbers(fn, "scales", scales)
        self._ratios = _positive_numbers(fn, "ratios", ratios)
        self._strides = _positive_ints(fn, "strides", strides)
        if len(self._strides) != len(self._sizes):
            raise ValueError(
                f"{fn}: strides must have the same length as sizes ({len(self._sizes)}), "
                f"got {len(self._strides)}"
            )
        self._offset = check_number(fn, "offset", offset, low=0.0, high=1.0)
        self._convention = check_choice(fn, "convention", convention, CONVENTIONS)
        if order is None:
            order = _DEFAULT_ORDER[self._convention]
        self._order = check_choice(fn, "order", order, _ORDERS)
        self._cells64: list[Tensor] = [
            _CELLS[self._convention](size, stride, self._scales, self._ratios, self._order, self._offset)
            for size, stride in zip(self._sizes, self._strides)
        ]
        self._shifts = tuple(_shift(self._convention, s, self._offset) for s in self._strides)
        self._cache: OrderedDict[tuple, tuple[list[Tensor], Tensor, list[AnchorLevel]]] = OrderedDict()

    @classmethod
    def from_preset(cls, name: str, **overrides: object) -> AnchorGenerator:
        r"""A generator that reproduces another implementation's RetinaNet anchors.

        All presets use P3-P7 (strides 8-128), base sizes 32-512, scales
        :math:`2^{0, 1/3, 2/3}` and ratios ``(0.5, 1, 2)``; they differ in ``offset``
        (0.5 for ``"detectron"`` and ``"keras-retinanet"``, else 0), cell order and
        rounding. ``overrides`` replace any constructor argument (e.g. a peer test's own
        sizes) while keeping the preset's rules.

        Args:
            name: One of :data:`CONVENTIONS`.
            **overrides: ``sizes``, ``scales``, ``ratios``, ``strides``, ``offset``,
                ``order``.

        Raises:
            ValueError: Unknown ``name``.
            TypeError: Unknown override.

        Example:
            >>> tv = AnchorGenerator.from_preset("torchvision")
            >>> tv.cell_anchors(0)[:3]
            tensor([[-23., -11.,  23.,  11.],
                    [-28., -14.,  28.,  14.],
                    [-35., -18.,  35.,  18.]])
            >>> d2 = AnchorGenerator.from_preset("detectron2", sizes=(32,), scales=(1.0, 2.0),
            ...                                   ratios=(0.25, 1.0, 4.0), strides=(4,))
            >>> d2.grid_anchors([(1, 2)])[0][6]
            tensor([-28.,  -8.,  36.,   8.])
        """
        check_choice("AnchorGenerator.from_preset", "name", name, CONVENTIONS)
        allowed = {"sizes", "scales", "ratios", "strides", "offset", "order"}
        unknown = sorted(set(overrides) - allowed)
        if unknown:
            raise TypeError(
                f"AnchorGenerator.from_preset: overrides must be among {sorted(allowed)}, got {unknown}"
            )
        kwargs: dict = {"offset": _DEFAULT_OFFSET[name]}
        kwargs.update(overrides)
        return cls(convention=name, **kwargs)

    # ---------------------------------------------------------------- properties

    @property
    def num_anchors_per_location(self) -> int:
        """``A = len(scales) * len(ratios)``.

        Example:
            >>> AnchorGenerator(scales=(1.0,)).num_anchors_per_location
            3
        """
        return len(self._scales) * len(self._ratios)

    @property
    def num_levels(self) -> int:
        """``L``, the number of pyramid levels.

        Example:
            >>> AnchorGenerator().num_levels
            5
        """
        return len(self._strides)

    @property
    def strides(self) -> tuple[int, ...]:
        """Nominal stride of each level, in pixels.

        Example:
            >>> AnchorGenerator().strides
            (8, 16, 32, 64, 128)
        """
        return self._strides

    @property
    def sizes(self) -> tuple[float, ...]:
        """Base anchor size of each level, in pixels.

        Example:
            >>> AnchorGenerator().sizes
            (32.0, 64.0, 128.0, 256.0, 512.0)
        """
        return self._sizes

    @property
    def scales(self) -> tuple[float, ...]:
        """Octave scales shared by all levels.

        Example:
            >>> [round(s, 4) for s in AnchorGenerator().scales]
            [1.0, 1.2599, 1.5874]
        """
        return self._scales

    @property
    def ratios(self) -> tuple[float, ...]:
        """Aspect ratios (height / width) shared by all levels.

        Example:
            >>> AnchorGenerator().ratios
            (0.5, 1.0, 2.0)
        """
        return self._ratios

    @property
    def offset(self) -> float:
        """Anchor centre inside a cell, as a fraction of the stride.

        Example:
            >>> AnchorGenerator.from_preset("keras-retinanet").offset
            0.5
        """
        return self._offset

    @property
    def convention(self) -> str:
        """Name of the convention the anchors follow.

        Example:
            >>> AnchorGenerator().convention
            'paper'
        """
        return self._convention

    @property
    def order(self) -> str:
        """``"ratio-major"`` or ``"scale-major"`` order of the ``A`` cell anchors.

        Example:
            >>> AnchorGenerator.from_preset("detectron2").order
            'scale-major'
        """
        return self._order

    def __repr__(self) -> str:
        return (
            f"AnchorGenerator(sizes={self._sizes}, scales={self._scales}, ratios={self._ratios}, "
            f"strides={self._strides}, offset={self._offset}, convention={self._convention!r}, "
            f"order={self._order!r})"
        )

    # ---------------------------------------------------------------- anchors

    def cell_anchors(
        self, level: int, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
    ) -> Tensor:
        r"""The ``A`` cell anchors of one level, before translation to a location.

        Centred at the location origin, except for the ``"mmdetection"`` and
        ``"detectron"`` conventions, which (like those implementations) keep the centre
        offset inside the cell anchor; :class:`AnchorLevel` ``.shift`` says what the grid
        adds.

        Args:
            level: Level index, ``0 <= level < L`` (``0`` is P3 by default).
            dtype: Floating dtype of the result.
            device: Device of the result (default CPU).

        Returns:
            ``(A, 4)`` boxes ``(x1, y1, x2, y2)``.

        Raises:
            ValueError: ``level`` out of range.
            TypeError: ``level`` not an int or ``dtype`` not floating point.

        Example:
            >>> AnchorGenerator(scales=(1.0,)).cell_anchors(0)
            tensor([[-22.6274, -11.3137,  22.6274,  11.3137],
                    [-16.0000, -16.0000,  16.0000,  16.0000],
                    [-11.3137, -22.6274,  11.3137,  22.6274]])
        """
        fn = "AnchorGenerator.cell_anchors"
        if isinstance(level, bool) or not isinstance(level, int):
            raise TypeError(f"{fn}: level must be an int, got {type(level).__name__}")
        if not 0 <= level < self.num_levels:
            raise ValueError(f"{fn}: level must be in [0, {self.num_levels - 1}], got {level}")
        _check_dtype(fn, dtype)
        return self._cells64[level].to(dtype=dtype).to(device=_resolve_device(device))

    def feature_sizes_for(self, image_size: Sequence[int]) -> list[tuple[int, int]]:
        r"""Nominal feature-map sizes of an image: ``ceil(side / stride)`` per level.

        This is what stride-2 convolutions with padding produce from an image of that
        size (and what keras-retinanet's ``guess_shapes`` computes).

        Args:
            image_size: ``(height, width)`` in pixels, positive ints.

        Returns:
            ``[(H_l, W_l)]`` for each level.

        Raises:
            ValueError: ``image_size`` not two positive ints.

        Example:
            >>> AnchorGenerator().feature_sizes_for((800, 1333))
            [(100, 167), (50, 84), (25, 42), (13, 21), (7, 11)]
        """
        fn = "AnchorGenerator.feature_sizes_for"
        h, w = _pair_of_ints(fn, "image_size", image_size)
        return [(-(-h // s), -(-w // s)) for s in self._strides]

    def _build(
        self, feature_sizes: Sequence[Sequence[int]], device: torch.device | str | None, dtype: torch.dtype, fn: str
    ) -> tuple[list[Tensor], Tensor, list[AnchorLevel]]:
        _check_dtype(fn, dtype)
        if isinstance(feature_sizes, (str, bytes)) or not isinstance(feature_sizes, Sequence):
            raise TypeError(
                f"{fn}: feature_sizes must be a sequence of (H, W) pairs, got {type(feature_sizes).__name__}"
            )
        if len(feature_sizes) != self.num_levels:
            raise ValueError(
                f"{fn}: feature_sizes must have one (H, W) per level ({self.num_levels}), "
                f"got {len(feature_sizes)}"
            )
        sizes = tuple(_pair_of_ints(fn, f"feature_sizes[{k}]", fs) for k, fs in enumerate(feature_sizes))
        dev = _resolve_device(device)
        key = (sizes, dev, dtype)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        per_level: list[Tensor] = []
        levels: list[AnchorLevel] = []
        start = 0
        for k, (h, w) in enumerate(sizes):
            stride, shift = self._strides[k], self._shifts[k]
            cells = self._cells64[k].to(dtype=dtype).to(device=dev)
            # Exact translations x * stride + shift in float64 (as Python computes them),
            # rounded once to dtype, then added in dtype.
            xs = (torch.arange(w, dtype=torch.float64) * stride + shift).to(dtype=dtype).to(device=dev)
            ys = (torch.arange(h, dtype=torch.float64) * stride + shift).to(dtype=dtype).to(device=dev)
            sx = xs.view(1, w).expand(h, w)
            sy = ys.view(h, 1).expand(h, w)
            shifts = torch.stack((sx, sy, sx, sy), dim=-1)  # (H, W, 4)
            anchors = (shifts.view(h, w, 1, 4) + cells.view(1, 1, -1, 4)).reshape(-1, 4)
            per_level.append(anchors)
            levels.append(AnchorLevel(h, w, stride, shift, cells, start))
            start += anchors.shape[0]
        flat = torch.cat(per_level, dim=0) if per_level else torch.empty(0, 4, dtype=dtype, device=dev)
        entry = (per_level, flat, levels)
        self._cache[key] = entry
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return entry

    def grid_anchors(
        self,
        feature_sizes: Sequence[Sequence[int]],
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> list[Tensor]:
        r"""Anchors of each level, one ``(H_l * W_l * A, 4)`` tensor per level.

        Row ``(y * W + x) * A + a`` holds cell anchor ``a`` translated to location
        ``(y, x)``. Cached: see the class docstring.

        Args:
            feature_sizes: ``[(H_l, W_l)]``, one pair of positive ints per level.
            device: Device of the anchors (default CPU).
            dtype: Floating dtype of the anchors.

        Returns:
            ``L`` tensors of shape ``(H_l * W_l * A, 4)``, boxes ``(x1, y1, x2, y2)``.

        Raises:
            ValueError: Wrong number of levels or a non-positive size.
            TypeError: Non-int sizes or a non-floating ``dtype``.

        Example:
            >>> gen = AnchorGenerator(sizes=(8,), scales=(1.0,), ratios=(1.0,), strides=(8,))
            >>> gen.grid_anchors([(2, 2)])[0]
            tensor([[-4., -4.,  4.,  4.],
                    [ 4., -4., 12.,  4.],
                    [-4.,  4.,  4., 12.],
                    [ 4.,  4., 12., 12.]])
        """
        return list(self._build(feature_sizes, device, dtype, "AnchorGenerator.grid_anchors")[0])

    def __call__(
        self,
        feature_sizes: Sequence[Sequence[int]],
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        r"""All anchors, levels concatenated (first level first).

        Args:
            feature_sizes: ``[(H_l, W_l)]``, one pair of positive ints per level.
            device: Device of the anchors (default CPU).
            dtype: Floating dtype of the anchors.

        Returns:
            ``(N, 4)`` with :math:`N = \sum_l H_l W_l A`; the cached tensor itself.

        Raises:
            ValueError: Wrong number of levels or a non-positive size.
            TypeError: Non-int sizes or a non-floating ``dtype``.

        Example:
            >>> gen = AnchorGenerator()
            >>> anchors = gen([(4, 4), (2, 2), (1, 1), (1, 1), (1, 1)])
            >>> anchors.shape, anchors is gen([(4, 4), (2, 2), (1, 1), (1, 1), (1, 1)])
            (torch.Size([207, 4]), True)
        """
        return self._build(feature_sizes, device, dtype, "AnchorGenerator")[1]

    def levels(
        self,
        feature_sizes: Sequence[Sequence[int]],
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> list[AnchorLevel]:
        r"""Where each level's anchors sit in :meth:`__call__`'s tensor, and how they are made.

        ``anchors[lv.start + (y * lv.width + x) * A + a]`` equals
        ``lv.cell_anchors[a] + (x * lv.stride + lv.shift, y * lv.stride + lv.shift, ...)``
        bit-exactly (the translation rounded to ``dtype``), so a matcher can find the
        locations whose anchors can overlap a box without building every IoU.

        Args:
            feature_sizes: ``[(H_l, W_l)]``, one pair of positive ints per level.
            device: Device of ``cell_anchors`` (default CPU).
            dtype: Floating dtype of ``cell_anchors``.

        Returns:
            One :class:`AnchorLevel` per level.

        Raises:
            ValueError: Wrong number of levels or a non-positive size.
            TypeError: Non-int sizes or a non-floating ``dtype``.

        Example:
            >>> gen = AnchorGenerator()
            >>> sizes = [(3, 4), (2, 2), (1, 1), (1, 1), (1, 1)]
            >>> anchors, lv = gen(sizes), gen.levels(sizes)[0]
            >>> y, x, a = 2, 1, 5
            >>> t = x * lv.stride + lv.shift, y * lv.stride + lv.shift
            >>> bool((anchors[lv.start + (y * lv.width + x) * 9 + a]
            ...       == lv.cell_anchors[a] + torch.tensor(t * 2)).all())
            True
        """
        return list(self._build(feature_sizes, device, dtype, "AnchorGenerator.levels")[2])


def _check_dtype(fn: str, dtype: object) -> None:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{fn}: dtype must be a floating torch.dtype, got {dtype!r}")


def _pair_of_ints(fn: str, name: str, value: object) -> tuple[int, int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{fn}: {name} must be a pair (H, W) of positive ints, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, Tensor) and v.numel() == 1 and not v.is_floating_point():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{fn}: {name} must be a pair (H, W) of positive ints, got {value!r}")
        if v <= 0:
            raise ValueError(f"{fn}: {name} must be a pair (H, W) of positive ints, got {value!r}")
        out.append(int(v))
    return out[0], out[1]
