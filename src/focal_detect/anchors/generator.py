r"""The anchor generator: conventions, strides and the cache (see :mod:`focal_detect.anchors`)."""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor

from focal_detect._checks import check_choice, check_number
from focal_detect.anchors.conventions import (
    CELLS,
    CONVENTIONS,
    DEFAULT_OFFSET,
    DEFAULT_ORDER,
    ORDERS,
    grid_shift,
)
from focal_detect.anchors.layout import AnchorLevel, Anchors, level_boxes, trusted_anchors

__all__ = ["AnchorGenerator"]

#: Number of distinct feature-size keys kept per generator (oldest evicted first). Training
#: with padded batches sees a handful of sizes; a bound keeps multi-scale runs in check.
CACHE_SIZE = 16

#: Largest anchor size accepted: far above any image, far below float32 overflow
#: even after scales and aspect ratios.
_MAX_ANCHOR_SIZE = 1e18


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


def _positive_int(fn: str, name: str, v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(
            f"{fn}: {name} must be an int or a (stride_h, stride_w) pair of ints, got {type(v).__name__}"
        )
    if v <= 0:
        raise ValueError(f"{fn}: {name} must be positive, got {v!r}")
    return int(v)


def _stride_entries(fn: str, name: str, values: object) -> tuple[int | tuple[int, int], ...]:
    """Each entry an int (same stride on both axes) or a ``(stride_h, stride_w)`` pair."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(
            f"{fn}: {name} must be a sequence of ints or (stride_h, stride_w) pairs, "
            f"got {type(values).__name__}"
        )
    if len(values) == 0:
        raise ValueError(f"{fn}: {name} must not be empty, got {tuple(values)!r}")
    out: list[int | tuple[int, int]] = []
    for k, v in enumerate(values):
        if isinstance(v, Sequence) and not isinstance(v, (str, bytes)):
            if len(v) != 2:
                raise ValueError(
                    f"{fn}: {name}[{k}] must be an int or a (stride_h, stride_w) pair, got {tuple(v)!r}"
                )
            sh = _positive_int(fn, f"{name}[{k}][0]", v[0])
            sw = _positive_int(fn, f"{name}[{k}][1]", v[1])
            out.append(sh if sh == sw else (sh, sw))
        else:
            out.append(_positive_int(fn, f"{name}[{k}]", v))
    return tuple(out)


def _hw(stride: int | tuple[int, int]) -> tuple[int, int]:
    return (stride, stride) if isinstance(stride, int) else stride


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
    (each convention computes and rounds this its own way, see :mod:`focal_detect.anchors`).
    Location :math:`(y, x)` of level :math:`l` translates the cell anchors by
    ``x * stride_w + shift_x`` and ``y * stride_h + shift_y``.

    Strides: nominal by default, one per level, an int (both axes) or a pair
    ``(stride_h, stride_w)`` (height first; an mmdetection ``(stride_w, stride_h)``
    pair must be swapped). With ``derive_strides=True`` each call derives them from the
    padded batch size as torchvision does, ``(H_img // H_l, W_img // W_l)``, and
    ``image_size`` must be passed to :meth:`__call__`; the nominal strides then only
    serve :meth:`feature_sizes_for` (and the cell anchors of the ``"mmdetection"`` /
    ``"detectron"`` conventions).

    A call returns one :class:`~focal_detect.anchors.Anchors` value: the ``(N, 4)`` boxes
    and their level layout, which :func:`~focal_detect.matching.assign_anchors` takes as
    it is. Results are cached per ``(feature_sizes, strides, device, dtype)`` (the strides
    actually used, so a derived-stride generator keeps apart batches whose padded size
    gives other strides) in a small dict (at most ``CACHE_SIZE`` keys, oldest evicted
    first): a repeated call returns the *same* :class:`~focal_detect.anchors.Anchors`
    object (same tensors), so do not modify its tensors in place.

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
        strides: Nominal stride per level in pixels (length ``L``): a positive int, or a
            pair ``(stride_h, stride_w)`` of positive ints.
        offset: Anchor centre inside a cell as a fraction of the stride, in ``[0, 1]``
            (0: top-left corner, as torchvision; 0.5: cell centre, as keras-retinanet);
            ``None`` takes the convention's own (0.5 for ``"detectron"`` and
            ``"keras-retinanet"``, else 0).
        convention: How cell anchors are computed, rounded and ordered, i.e. whose
            RetinaNet anchors to reproduce; one of :data:`CONVENTIONS`.
        order: ``"ratio-major"`` or ``"scale-major"`` cell-anchor order; ``None`` takes
            the convention's own.
        derive_strides: Derive the strides per batch from ``image_size`` as torchvision
            (see above) instead of using ``strides``.

    Raises:
        ValueError: Non-positive size/scale/ratio/stride, ``sizes`` and ``strides`` of
            different lengths, offset outside ``[0, 1]``, unknown convention or order,
            per-axis strides with the ``"detectron"`` convention.
        TypeError: An argument of the wrong type.

    Example:
        >>> gen = AnchorGenerator()
        >>> gen.num_anchors_per_location, gen.num_levels, gen.strides
        (9, 5, (8, 16, 32, 64, 128))
        >>> sizes = gen.feature_sizes_for((64, 64))
        >>> sizes
        [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
        >>> gen(sizes).boxes.shape
        torch.Size([774, 4])
        >>> AnchorGenerator(strides=(8, 16, 32, 64, (128, 64))).feature_sizes_for((256, 256))[4]
        (2, 4)
        >>> tv = AnchorGenerator(convention="torchvision")  # torchvision's RetinaNet anchors
        >>> tv.cell_anchors(0)[:3]
        tensor([[-23., -11.,  23.,  11.],
                [-28., -14.,  28.,  14.],
                [-35., -18.,  35.,  18.]])
        >>> d2 = AnchorGenerator(sizes=(32,), scales=(1.0, 2.0), ratios=(0.25, 1.0, 4.0),
        ...                      strides=(4,), convention="detectron2")
        >>> d2([(1, 2)]).boxes[6]
        tensor([-28.,  -8.,  36.,   8.])
        >>> AnchorGenerator(convention="keras-retinanet").offset
        0.5
    """

    def __init__(
        self,
        sizes: Sequence[float] = (32, 64, 128, 256, 512),
        scales: Sequence[float] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3)),
        ratios: Sequence[float] = (0.5, 1.0, 2.0),
        strides: Sequence[int] = (8, 16, 32, 64, 128),
        offset: float | None = None,
        convention: str = "paper",
        *,
        order: str | None = None,
        derive_strides: bool = False,
    ) -> None:
        fn = "AnchorGenerator"
        self._sizes = _positive_numbers(fn, "sizes", sizes)
        for k, v in enumerate(self._sizes):
            if v > _MAX_ANCHOR_SIZE:  # beyond it float32 anchor coordinates overflow to inf
                raise ValueError(f"{fn}: sizes[{k}] must be <= {_MAX_ANCHOR_SIZE:g}, got {v!r}")
        self._scales = _positive_numbers(fn, "scales", scales)
        self._ratios = _positive_numbers(fn, "ratios", ratios)
        self._strides = _stride_entries(fn, "strides", strides)
        if len(self._strides) != len(self._sizes):
            raise ValueError(
                f"{fn}: strides must have the same length as sizes ({len(self._sizes)}), "
                f"got {len(self._strides)}"
            )
        self._convention = check_choice(fn, "convention", convention, CONVENTIONS)
        if offset is None:
            offset = DEFAULT_OFFSET[self._convention]
        self._offset = check_number(fn, "offset", offset, low=0.0, high=1.0)
        if order is None:
            order = DEFAULT_ORDER[self._convention]
        self._order = check_choice(fn, "order", order, ORDERS)
        if not isinstance(derive_strides, bool):
            raise TypeError(f"{fn}: derive_strides must be a bool, got {type(derive_strides).__name__}")
        self._derive = derive_strides
        self._strides_hw = tuple(_hw(st) for st in self._strides)
        if self._convention == "detectron" and any(sh != sw for sh, sw in self._strides_hw):
            raise ValueError(
                f"{fn}: strides must be square with convention 'detectron' (its cell anchors "
                f"are built on a stride x stride box), got {self._strides}"
            )
        # Cell anchors from the nominal stride (mmdetection: base size = min(stride), as
        # its AnchorGenerator); derived strides only move the locations.
        self._cells64: list[Tensor] = [
            CELLS[self._convention](size, min(st), self._scales, self._ratios, self._order, self._offset)
            for size, st in zip(self._sizes, self._strides_hw)
        ]
        self._cache: OrderedDict[tuple, Anchors] = OrderedDict()

    @classmethod
    def from_preset(cls, name: str, **overrides: object) -> AnchorGenerator:
        """Deprecated: use ``AnchorGenerator(convention=name, **overrides)``.

        Kept for one release; warns with :class:`DeprecationWarning`.

        Example:
            >>> import warnings
            >>> with warnings.catch_warnings():
            ...     warnings.simplefilter("ignore", DeprecationWarning)
            ...     AnchorGenerator.from_preset("keras-retinanet").offset
            0.5
        """
        warnings.warn(
            "AnchorGenerator.from_preset(name, **kw) is deprecated; use AnchorGenerator(convention=name, **kw)",
            DeprecationWarning,
            stacklevel=2,
        )
        check_choice("AnchorGenerator.from_preset", "name", name, CONVENTIONS)
        return cls(convention=name, **overrides)  # type: ignore[arg-type]

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
    def strides(self) -> tuple[int | tuple[int, int], ...]:
        """Nominal stride of each level in pixels (an int, or ``(stride_h, stride_w)``
        where the two differ).

        Example:
            >>> AnchorGenerator().strides
            (8, 16, 32, 64, 128)
            >>> AnchorGenerator(sizes=(32, 64), strides=(8, (16, 8))).strides
            (8, (16, 8))
        """
        return self._strides

    @property
    def derive_strides(self) -> bool:
        """Whether strides are derived per batch from ``image_size`` (torchvision's rule).

        Example:
            >>> AnchorGenerator(convention="torchvision", derive_strides=True).derive_strides
            True
        """
        return self._derive

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
            >>> AnchorGenerator(convention="keras-retinanet").offset
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
            >>> AnchorGenerator(convention="detectron2").order
            'scale-major'
        """
        return self._order

    def __repr__(self) -> str:
        return (
            f"AnchorGenerator(sizes={self._sizes}, scales={self._scales}, ratios={self._ratios}, "
            f"strides={self._strides}, offset={self._offset}, convention={self._convention!r}, "
            f"order={self._order!r}, derive_strides={self._derive})"
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
        r"""Nominal feature-map sizes of an image: ``ceil(side / stride)`` per level and axis.

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
        return [(-(-h // sh), -(-w // sw)) for sh, sw in self._strides_hw]

    def _build(
        self,
        feature_sizes: Sequence[Sequence[int]],
        device: torch.device | str | None,
        dtype: torch.dtype,
        fn: str,
        image_size: Sequence[int] | None = None,
    ) -> Anchors:
        _check_dtype(fn, dtype)
        sizes = self._feature_sizes(fn, feature_sizes)
        strides = self._level_strides(fn, sizes, image_size)
        dev = _resolve_device(device)
        # The strides are part of the key: with derive_strides the same feature sizes
        # give other anchors for another padded batch size.
        key = (sizes, strides, dev, dtype)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        per_level: list[Tensor] = []
        levels: list[AnchorLevel] = []
        start = 0
        for k, ((h, w), (sh, sw)) in enumerate(zip(sizes, strides)):
            shift_y = grid_shift(self._convention, sh, self._offset)
            shift_x = grid_shift(self._convention, sw, self._offset)
            cells = self._cells64[k].to(dtype=dtype).to(device=dev)
            per_level.append(level_boxes(h, w, sh, sw, shift_y, shift_x, cells))
            levels.append(AnchorLevel(h, w, sh, sw, shift_y, shift_x, cells, start))
            start += per_level[-1].shape[0]
        flat = torch.cat(per_level, dim=0) if per_level else torch.empty(0, 4, dtype=dtype, device=dev)
        entry = trusted_anchors(flat, tuple(levels))
        self._cache[key] = entry
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return entry

    def _feature_sizes(self, fn: str, feature_sizes: object) -> tuple[tuple[int, int], ...]:
        if isinstance(feature_sizes, (str, bytes)) or not isinstance(feature_sizes, Sequence):
            raise TypeError(
                f"{fn}: feature_sizes must be a sequence of (H, W) pairs, got {type(feature_sizes).__name__}"
            )
        if len(feature_sizes) != self.num_levels:
            raise ValueError(
                f"{fn}: feature_sizes must have one (H, W) per level ({self.num_levels}), "
                f"got {len(feature_sizes)}"
            )
        return tuple(_pair_of_ints(fn, f"feature_sizes[{k}]", fs) for k, fs in enumerate(feature_sizes))

    def _level_strides(
        self, fn: str, sizes: tuple[tuple[int, int], ...], image_size: object
    ) -> tuple[tuple[int, int], ...]:
        if image_size is not None:
            img = _pair_of_ints(fn, "image_size", image_size)
        if not self._derive:
            return self._strides_hw
        if image_size is None:
            raise ValueError(
                f"{fn}: image_size must be given when strides are derived (derive_strides=True), got None"
            )
        out = []
        for k, (h, w) in enumerate(sizes):
            sh, sw = img[0] // h, img[1] // w
            if sh < 1 or sw < 1:
                raise ValueError(
                    f"{fn}: image_size must be at least every feature size, got {img} "
                    f"and feature_sizes[{k}] = {(h, w)}"
                )
            out.append((sh, sw))
        return tuple(out)

    def level_strides(
        self, feature_sizes: Sequence[Sequence[int]], image_size: Sequence[int] | None = None
    ) -> list[tuple[int, int]]:
        r"""The ``(stride_h, stride_w)`` of each level that the anchors use.

        Nominal strides, or with ``derive_strides`` torchvision's per-batch rule

        .. math:: (s_{l,y}, s_{l,x}) = (\lfloor H_\mathrm{img} / H_l \rfloor,\;
                  \lfloor W_\mathrm{img} / W_l \rfloor)

        with ``image_size`` = :math:`(H_\mathrm{img}, W_\mathrm{img})` the padded batch.

        Args:
            feature_sizes: ``[(H_l, W_l)]``, one pair of positive ints per level.
            image_size: ``(H_img, W_img)`` of the padded batch; required with
                ``derive_strides``, else only checked.

        Returns:
            ``L`` pairs ``(stride_h, stride_w)``.

        Raises:
            ValueError: Wrong number of levels, non-positive sizes, ``image_size``
                missing (derived strides) or smaller than a feature map.

        Example:
            >>> tv = AnchorGenerator(convention="torchvision", derive_strides=True)
            >>> tv.level_strides(tv.feature_sizes_for((800, 1216)), image_size=(800, 1216))
            [(8, 8), (16, 16), (32, 32), (61, 64), (114, 121)]
            >>> AnchorGenerator().level_strides([(100, 152)] * 5)[4]
            (128, 128)
        """
        fn = "AnchorGenerator.level_strides"
        return list(self._level_strides(fn, self._feature_sizes(fn, feature_sizes), image_size))

    def __call__(
        self,
        feature_sizes: Sequence[Sequence[int]],
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        *,
        image_size: Sequence[int] | None = None,
    ) -> Anchors:
        r"""All anchors, levels concatenated (first level first), with their layout.

        Row ``start_l + (y * W_l + x) * A + a`` of the boxes holds cell anchor ``a`` of
        level ``l`` translated to location ``(y, x)``; ``.levels`` says where each level
        starts and how its anchors are made (see :class:`~focal_detect.anchors.AnchorLevel`),
        ``.per_level()`` gives one tensor per level. Cached: see the class docstring.

        Shape:
            output: ``boxes`` ``(N, 4)`` with :math:`N = \sum_l H_l W_l A`.

        Args:
            feature_sizes: ``[(H_l, W_l)]``, one pair of positive ints per level.
            device: Device of the anchors (default CPU).
            dtype: Floating dtype of the anchors.
            image_size: ``(H_img, W_img)`` of the padded batch, for derived strides
                (required with ``derive_strides``; see :meth:`level_strides`).

        Returns:
            :class:`~focal_detect.anchors.Anchors`: ``boxes`` ``(N, 4)`` in
            ``(x1, y1, x2, y2)`` and one :class:`~focal_detect.anchors.AnchorLevel` per level.

        Raises:
            ValueError: Wrong number of levels, a non-positive size, or
                ``image_size`` missing or too small with derived strides.
            TypeError: Non-int sizes or a non-floating ``dtype``.

        Example:
            >>> gen = AnchorGenerator()
            >>> sizes = [(3, 4), (2, 2), (1, 1), (1, 1), (1, 1)]
            >>> anchors = gen(sizes)
            >>> anchors.boxes.shape, anchors is gen(sizes)
            (torch.Size([171, 4]), True)
            >>> lv, (y, x, a) = anchors.levels[0], (2, 1, 5)
            >>> t = x * lv.stride_w + lv.shift_x, y * lv.stride_h + lv.shift_y
            >>> bool((anchors.boxes[lv.start + (y * lv.width + x) * 9 + a]
            ...       == lv.cell_anchors[a] + torch.tensor(t * 2)).all())
            True
        """
        return self._build(feature_sizes, device, dtype, "AnchorGenerator", image_size)

    def grid_anchors(
        self,
        feature_sizes: Sequence[Sequence[int]],
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        *,
        image_size: Sequence[int] | None = None,
    ) -> list[Tensor]:
        """Deprecated: use ``list(generator(feature_sizes, ...).per_level())``.

        Kept for one release; warns with :class:`DeprecationWarning`.

        Example:
            >>> import warnings
            >>> with warnings.catch_warnings():
            ...     warnings.simplefilter("ignore", DeprecationWarning)
            ...     [t.shape[0] for t in AnchorGenerator().grid_anchors([(1, 1)] * 5)]
            [9, 9, 9, 9, 9]
        """
        _deprecated("grid_anchors(...)", "list(generator(...).per_level())")
        anchors = self._build(feature_sizes, device, dtype, "AnchorGenerator.grid_anchors", image_size)
        return list(anchors.per_level())

    def levels(
        self,
        feature_sizes: Sequence[Sequence[int]],
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        *,
        image_size: Sequence[int] | None = None,
    ) -> list[AnchorLevel]:
        """Deprecated: use ``list(generator(feature_sizes, ...).levels)``.

        Kept for one release; warns with :class:`DeprecationWarning`.

        Example:
            >>> import warnings
            >>> with warnings.catch_warnings():
            ...     warnings.simplefilter("ignore", DeprecationWarning)
            ...     AnchorGenerator().levels([(1, 1)] * 5)[1].start
            9
        """
        _deprecated("levels(...)", "list(generator(...).levels)")
        return list(self._build(feature_sizes, device, dtype, "AnchorGenerator.levels", image_size).levels)


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"AnchorGenerator.{old} is deprecated; use {new}", DeprecationWarning, stacklevel=3)


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
