r"""Small-data augmentation: scale jitter with box handling, photometric jitter, composition.

Every random transform here is called as ``transform(image, target, generator)`` and
takes its randomness from ``generator`` only, so wrapped in
:class:`~focal_detect.data.SeededAugment` a run stays reproducible and resumable.
:func:`build_augmentation` builds the whole pipeline from plain settings
(:class:`AugmentConfig` or a dict); its default is today's flip-only pipeline.

Images are floating-point tensors ``(C, H, W)`` with values in ``[0, 1]``; dtype and
device are kept.

**Output size.** :func:`rescale_place` and :class:`RandomScaleJitter` always return an
image of a fixed ``output_size`` (by default the input's own size), so a dataset of
equally sized images stays equally sized and batches without extra padding. Zooming
in crops; zooming out leaves a border filled with ``fill``.

**Box rule.** After the image is rescaled by :math:`(s_x, s_y)` and placed at the
integer offset :math:`(o_x, o_y)`, a box becomes
:math:`(s_x x_1 + o_x,\ s_y y_1 + o_y,\ s_x x_2 + o_x,\ s_y y_2 + o_y)` (exact: a box
that stays inside the output is only scaled and translated) and is then clipped to
the output :math:`[0, W'] \times [0, H']`. A box is **dropped** when its clipped
width or height is below ``min_size`` pixels (degenerate, including every zero-area
box) or when the clipped part keeps less than ``min_visibility`` (default
:data:`MIN_VISIBILITY`, 0.3) of its unclipped area. Per-box entries of the target
(``"labels"``, ``"iscrowd"``, ``"area"`` and any other tensor whose first dimension is
the number of boxes, except ``"image_id"``) keep the same boxes; ``"area"`` is scaled by
:math:`s_x s_y` times the visible fraction of the box.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.nn import functional as F

from focal_detect._checks import check_number, check_tensor
from focal_detect.boxes import box_area, clip_boxes
from focal_detect.data.transforms import RandomHorizontalFlip

__all__ = [
    "MIN_VISIBILITY",
    "AugmentConfig",
    "Compose",
    "RandomPhotometric",
    "RandomScaleJitter",
    "Transform",
    "adjust_photometric",
    "build_augmentation",
    "rescale_place",
]

#: Default share of a box's area that must stay inside the output for the box to be kept.
#: Below it too little of the object is left to recognise it as that object.
MIN_VISIBILITY = 0.3

# Target entries that are per image even when their first dimension happens to equal
# the number of boxes.
_PER_IMAGE_KEYS = frozenset({"image_id"})

# Rec. 601 luma weights, for grey levels in contrast and saturation.
_LUMA = (0.299, 0.587, 0.114)


class Transform(Protocol):
    r"""A seeded detection transform: ``(image, target, generator) -> (image, target)``.

    The contract of :class:`Compose` and :class:`~focal_detect.data.SeededAugment`: all
    randomness comes from ``generator`` (a CPU :class:`torch.Generator`), the inputs are
    not modified in place, and ``target`` keeps its keys (per-box entries follow the
    boxes).

    Example:
        >>> def brighten(image, target, generator=None):
        ...     return (image * 1.1).clamp(0, 1), target
        >>> t: Transform = brighten
        >>> float(Compose([t])(torch.full((3, 1, 1), 0.5), {})[0][0, 0, 0])
        0.550000011920929
    """

    def __call__(
        self, image: Tensor, target: dict[str, Any], generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Any]]: ...


def _check_image(fn: str, image: object) -> Tensor:
    t = check_tensor(fn, "image", image)
    if t.ndim != 3:
        raise ValueError(f"{fn}: image must have shape (C, H, W), got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"{fn}: image must be a floating-point tensor, got dtype {t.dtype}")
    return t


def _check_range(fn: str, name: str, value: object, low: float) -> tuple[float, float]:
    """A ``(lo, hi)`` pair with ``low < lo <= hi``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{fn}: {name} must be a pair (lo, hi), got {value!r}")
    lo = check_number(fn, name, value[0], low=low, low_open=True)
    hi = check_number(fn, name, value[1], low=lo)
    if math.isinf(hi):
        raise ValueError(f"{fn}: {name} must be finite, got {value!r}")
    return lo, hi


def _check_size(fn: str, name: str, value: object) -> tuple[int, int] | None:
    if value is None:
        return None
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    ):
        raise ValueError(f"{fn}: {name} must be None or a pair of ints (H, W) >= 1, got {value!r}")
    return int(value[0]), int(value[1])


def _uniform(generator: torch.Generator | None, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=generator, dtype=torch.float64))


def _select_boxes(target: dict[str, Any], keep: Tensor, num_boxes: int) -> dict[str, Any]:
    """Index every per-box entry of ``target`` (boxes excluded) with ``keep``."""
    out = dict(target)
    for key, value in target.items():
        if key == "boxes" or key in _PER_IMAGE_KEYS:
            continue
        if isinstance(value, Tensor) and value.ndim >= 1 and value.shape[0] == num_boxes:
            out[key] = value[keep]
    return out


def rescale_place(
    image: Tensor,
    target: dict[str, Any],
    resized_size: tuple[int, int],
    offset: tuple[int, int],
    output_size: tuple[int, int] | None = None,
    min_visibility: float = MIN_VISIBILITY,
    min_size: float = 1.0,
    fill: float = 0.5,
) -> tuple[Tensor, dict[str, Any]]:
    r"""Resize an image to ``resized_size``, place it at ``offset`` on a fixed-size canvas.

    The deterministic kernel of :class:`RandomScaleJitter` (as
    :func:`~focal_detect.data.hflip` is of the flip). With
    :math:`s_x = W_r / W`, :math:`s_y = H_r / H` the pixel grid maps exactly: the
    continuous point :math:`(x, y)` moves to :math:`(s_x x + o_x, s_y y + o_y)`
    (bilinear resampling, antialiased when shrinking). Canvas pixels the image does not
    cover get ``fill``. Boxes follow the module's box rule (clipped, then dropped when
    degenerate or less than ``min_visibility`` of them is visible).

    Shape:
        image: ``(C, H, W)``.
        output: an image ``(C, H', W')`` with ``(H', W') = output_size``; boxes
        ``(M', 4)``, ``M' <= M``.

    Args:
        image: Floating-point ``(C, H, W)``.
        target: Dict with ``"boxes"`` ``(M, 4)`` in ``(x1, y1, x2, y2)`` pixels, and any
            per-box entries (``"labels"``, ``"iscrowd"``, ``"area"``, ...).
        resized_size: ``(H_r, W_r)``, the size of the resized image (ints >= 1).
        offset: ``(o_y, o_x)``, integer position of the resized image's top-left corner
            on the canvas (negative: cropped at the top/left).
        output_size: ``(H', W')`` of the canvas; default the input's ``(H, W)``.
        min_visibility: Drop a box when less than this share of its area stays on the
            canvas, in ``[0, 1]``.
        min_size: Drop a box whose clipped width or height is below this (pixels, > 0).
        fill: Value of uncovered canvas pixels, in ``[0, 1]``.

    Returns:
        The new image (same dtype and device) and a new target dict.

    Raises:
        TypeError: ``image`` is not a floating-point tensor.
        ValueError: Bad shapes, sizes or ranges.

    Example:
        >>> img = torch.ones(3, 4, 4)
        >>> boxes = torch.tensor([[1.0, 1.0, 3.0, 3.0], [3.0, 3.0, 4.0, 4.0]])
        >>> out, t = rescale_place(img, {"boxes": boxes, "labels": torch.tensor([1, 2])},
        ...                        resized_size=(8, 8), offset=(-2, -2))
        >>> out.shape, t["boxes"].tolist(), t["labels"].tolist()  # 2x zoom on the centre
        (torch.Size([3, 4, 4]), [[0.0, 0.0, 4.0, 4.0]], [1])
    """
    fn = "rescale_place"
    _check_image(fn, image)
    boxes = check_tensor(fn, "target['boxes']", target.get("boxes"))
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"{fn}: target['boxes'] must have shape (M, 4), got {tuple(boxes.shape)}")
    rs = _check_size(fn, "resized_size", resized_size)
    if rs is None:
        raise ValueError(f"{fn}: resized_size must be a pair of ints (H, W) >= 1, got None")
    if (
        isinstance(offset, (str, bytes))
        or not isinstance(offset, Sequence)
        or len(offset) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in offset)
    ):
        raise ValueError(f"{fn}: offset must be a pair of ints (o_y, o_x), got {offset!r}")
    out_size = _check_size(fn, "output_size", output_size) or (image.shape[1], image.shape[2])
    min_visibility = check_number(fn, "min_visibility", min_visibility, low=0.0, high=1.0)
    min_size = check_number(fn, "min_size", min_size, low=0.0, low_open=True)
    fill = check_number(fn, "fill", fill, low=0.0, high=1.0)

    (h, w), (hr, wr), (oy, ox), (ho, wo) = image.shape[1:], rs, offset, out_size
    if (hr, wr) == (h, w):
        resized = image
    else:
        antialias = hr < h or wr < w
        # Half precision: resampled in float32 (CPU kernels need it), stored back as given.
        src = image if image.dtype in (torch.float32, torch.float64) else image.float()
        resized = F.interpolate(
            src[None], size=(hr, wr), mode="bilinear", align_corners=False, antialias=antialias
        )[0].to(image.dtype)
    canvas = image.new_full((image.shape[0], ho, wo), fill)
    # Overlap of the resized image [oy, oy + hr) x [ox, ox + wr) with the canvas.
    y0, y1 = max(oy, 0), min(oy + hr, ho)
    x0, x1 = max(ox, 0), min(ox + wr, wo)
    if y1 > y0 and x1 > x0:
        canvas[:, y0:y1, x0:x1] = resized[:, y0 - oy : y1 - oy, x0 - ox : x1 - ox]

    sx, sy = wr / w, hr / h
    scale = boxes.new_tensor([sx, sy, sx, sy])
    shift = boxes.new_tensor([ox, oy, ox, oy])
    moved = boxes * scale + shift
    clipped = clip_boxes(moved, (ho, wo))
    cw, ch = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    full = box_area(moved)
    visible = cw * ch
    keep = (cw >= min_size) & (ch >= min_size) & (visible >= min_visibility * full)
    out = _select_boxes(target, keep, boxes.shape[0])
    out["boxes"] = clipped[keep]
    area = target.get("area")
    if isinstance(area, Tensor) and area.ndim == 1 and area.shape[0] == boxes.shape[0]:
        frac = torch.where(full > 0, visible / full.clamp(min=torch.finfo(full.dtype).tiny), 0.0)
        out["area"] = area[keep] * (sx * sy) * frac[keep].to(area.dtype)
    return canvas, out


class RandomScaleJitter:
    r"""Random zoom (scale jitter) with a random placement, on a fixed-size output.

    Draws a zoom :math:`s` log-uniformly from ``scale`` and an aspect change :math:`a`
    log-uniformly from ``aspect``; the image is resized by
    :math:`s_x = b\, s \sqrt{a}`, :math:`s_y = b\, s / \sqrt{a}` (sizes rounded to whole
    pixels, the scale then taken exactly from them), where
    :math:`b = \min(W'/W, H'/H)` fits the image to ``output_size`` (1 when the output
    keeps the input size). A zoom above 1 shows a random crop, below 1 the whole image at
    a random position on a ``fill`` border. Then :func:`rescale_place`, so boxes follow
    the module's box rule. Draws 4 numbers from ``generator``.

    Args:
        scale: ``(lo, hi)`` zoom range, ``0 < lo <= hi``; e.g. ``(0.5, 1.5)``.
        aspect: ``(lo, hi)`` aspect-change range; ``(1.0, 1.0)`` keeps the aspect ratio.
        output_size: ``(H', W')``; default each input's own size.
        min_visibility: See :func:`rescale_place`.
        min_size: See :func:`rescale_place`.
        fill: See :func:`rescale_place`.

    Example:
        >>> jitter = RandomScaleJitter(scale=(0.5, 0.5))  # zoom out: the whole image, halved
        >>> target = {"boxes": torch.tensor([[8.0, 8.0, 24.0, 24.0]])}
        >>> img, t = jitter(torch.rand(3, 32, 32), target, torch.Generator().manual_seed(0))
        >>> img.shape, (t["boxes"][:, 2:] - t["boxes"][:, :2]).tolist()
        (torch.Size([3, 32, 32]), [[8.0, 8.0]])
        >>> _, again = jitter(torch.rand(3, 32, 32), target, torch.Generator().manual_seed(0))
        >>> torch.equal(t["boxes"], again["boxes"])  # the generator decides the placement
        True
    """

    def __init__(
        self,
        scale: tuple[float, float] = (0.5, 1.5),
        aspect: tuple[float, float] = (1.0, 1.0),
        output_size: tuple[int, int] | None = None,
        min_visibility: float = MIN_VISIBILITY,
        min_size: float = 1.0,
        fill: float = 0.5,
    ) -> None:
        fn = "RandomScaleJitter"
        self.scale = _check_range(fn, "scale", scale, low=0.0)
        self.aspect = _check_range(fn, "aspect", aspect, low=0.0)
        self.output_size = _check_size(fn, "output_size", output_size)
        self.min_visibility = check_number(fn, "min_visibility", min_visibility, low=0.0, high=1.0)
        self.min_size = check_number(fn, "min_size", min_size, low=0.0, low_open=True)
        self.fill = check_number(fn, "fill", fill, low=0.0, high=1.0)

    def __call__(
        self, image: Tensor, target: dict[str, Any], generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Any]]:
        _check_image("RandomScaleJitter", image)
        h, w = image.shape[1], image.shape[2]
        ho, wo = self.output_size or (h, w)
        fit = min(wo / w, ho / h)
        s = math.exp(_uniform(generator, math.log(self.scale[0]), math.log(self.scale[1])))
        a = math.exp(_uniform(generator, math.log(self.aspect[0]), math.log(self.aspect[1])))
        hr = max(1, round(h * fit * s / math.sqrt(a)))
        wr = max(1, round(w * fit * s * math.sqrt(a)))

        def place(out: int, size: int) -> int:
            lo, hi = min(0, out - size), max(0, out - size)
            return int(torch.randint(lo, hi + 1, (), generator=generator))

        oy, ox = place(ho, hr), place(wo, wr)
        return rescale_place(
            image,
            target,
            (hr, wr),
            (oy, ox),
            output_size=(ho, wo),
            min_visibility=self.min_visibility,
            min_size=self.min_size,
            fill=self.fill,
        )

    def __repr__(self) -> str:
        return (
            f"RandomScaleJitter(scale={self.scale}, aspect={self.aspect}, output_size={self.output_size}, "
            f"min_visibility={self.min_visibility}, min_size={self.min_size}, fill={self.fill})"
        )


def adjust_photometric(
    image: Tensor, brightness: float = 1.0, contrast: float = 1.0, saturation: float = 1.0, hue: float = 0.0
) -> Tensor:
    r"""Brightness, contrast, saturation and hue changes of an RGB image, in that order.

    With the luma :math:`Y = 0.299 R + 0.587 G + 0.114 B`:
    brightness :math:`x \leftarrow b x`; contrast
    :math:`x \leftarrow \bar Y + c (x - \bar Y)` (:math:`\bar Y` the image's mean luma);
    saturation :math:`x \leftarrow Y + s (x - Y)`; hue rotates the chroma plane of YIQ
    by :math:`2 \pi h` (luma kept). The result is clamped to ``[0, 1]``. All factors 1 and
    ``hue`` 0 return the (clamped) image unchanged.

    Shape:
        image: ``(3, H, W)``.
        output: ``(3, H, W)``, same dtype and device.

    Args:
        image: Floating-point RGB ``(3, H, W)`` in ``[0, 1]``.
        brightness: Factor :math:`b \ge 0`.
        contrast: Factor :math:`c \ge 0`.
        saturation: Factor :math:`s \ge 0` (0 gives grey).
        hue: Rotation in turns, :math:`h \in [-0.5, 0.5]`.

    Example:
        >>> px = torch.tensor([0.2, 0.4, 0.6]).view(3, 1, 1)
        >>> adjust_photometric(px, brightness=2.0).flatten().tolist()
        [0.4000000059604645, 0.800000011920929, 1.0]
        >>> [round(v, 4) for v in adjust_photometric(px, saturation=0.0).flatten().tolist()]  # luma
        [0.363, 0.363, 0.363]
    """
    fn = "adjust_photometric"
    _check_image(fn, image)
    if image.shape[0] != 3:
        raise ValueError(f"{fn}: image must have 3 channels (RGB), got shape {tuple(image.shape)}")
    b = check_number(fn, "brightness", brightness, low=0.0)
    c = check_number(fn, "contrast", contrast, low=0.0)
    s = check_number(fn, "saturation", saturation, low=0.0)
    h = check_number(fn, "hue", hue, low=-0.5, high=0.5)
    luma_w = image.new_tensor(_LUMA).view(3, 1, 1)
    x = image * b if b != 1.0 else image
    if c != 1.0:
        mean = (x * luma_w).sum(0).mean()
        x = mean + c * (x - mean)
    if s != 1.0:
        y = (x * luma_w).sum(0, keepdim=True)
        x = y + s * (x - y)
    if h != 0.0:
        # The 3x3 colour matrix in float64 on the CPU, then applied in the image's dtype.
        to_yiq = torch.tensor(
            [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64
        )
        cos, sin = math.cos(2 * math.pi * h), math.sin(2 * math.pi * h)
        rot = torch.tensor([[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]], dtype=torch.float64)
        m = (torch.linalg.inv(to_yiq) @ rot @ to_yiq).to(device=image.device, dtype=image.dtype)
        x = torch.einsum("ij,jhw->ihw", m, x)
    return x.clamp(0.0, 1.0)


class RandomPhotometric:
    r"""Random brightness, contrast, saturation and hue (:func:`adjust_photometric`).

    With probability ``p`` the image is changed by factors drawn uniformly from
    :math:`[1 - \beta, 1 + \beta]` (brightness, contrast, saturation) and a hue shift
    from :math:`[-\eta, \eta]` turns; boxes are untouched. Draws 5 numbers from
    ``generator`` (the decision and four factors) whether or not it applies.

    Args:
        brightness: :math:`\beta` of brightness, in ``[0, 1]``.
        contrast: :math:`\beta` of contrast, in ``[0, 1]``.
        saturation: :math:`\beta` of saturation, in ``[0, 1]``.
        hue: :math:`\eta` in ``[0, 0.5]``.
        p: Probability of applying the jitter, in ``[0, 1]``.

    Example:
        >>> jitter = RandomPhotometric(brightness=0.5, contrast=0.0, saturation=0.0, hue=0.0)
        >>> img, _ = jitter(torch.full((3, 2, 2), 0.5), {}, torch.Generator().manual_seed(0))
        >>> 0.25 <= float(img.mean()) <= 0.75 and float(img.std()) == 0.0
        True
    """

    def __init__(
        self,
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.2,
        hue: float = 0.05,
        p: float = 1.0,
    ) -> None:
        fn = "RandomPhotometric"
        self.brightness = check_number(fn, "brightness", brightness, low=0.0, high=1.0)
        self.contrast = check_number(fn, "contrast", contrast, low=0.0, high=1.0)
        self.saturation = check_number(fn, "saturation", saturation, low=0.0, high=1.0)
        self.hue = check_number(fn, "hue", hue, low=0.0, high=0.5)
        self.p = check_number(fn, "p", p, low=0.0, high=1.0)

    def __call__(
        self, image: Tensor, target: dict[str, Any], generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Any]]:
        u = torch.rand(5, generator=generator, dtype=torch.float64).tolist()
        if u[0] >= self.p:
            return image, target
        b = 1.0 + self.brightness * (2 * u[1] - 1)
        c = 1.0 + self.contrast * (2 * u[2] - 1)
        s = 1.0 + self.saturation * (2 * u[3] - 1)
        h = self.hue * (2 * u[4] - 1)
        return adjust_photometric(image, b, c, s, h), target

    def __repr__(self) -> str:
        return (
            f"RandomPhotometric(brightness={self.brightness}, contrast={self.contrast}, "
            f"saturation={self.saturation}, hue={self.hue}, p={self.p})"
        )


class Compose:
    r"""Apply seeded transforms in order, all drawing from the same generator.

    Args:
        transforms: Callables ``(image, target, generator) -> (image, target)``.

    Example:
        >>> flip = RandomHorizontalFlip(p=1.0)
        >>> both = Compose([flip, flip])  # two flips: the identity
        >>> _, t = both(torch.zeros(3, 2, 10), {"boxes": torch.tensor([[1.0, 0.0, 3.0, 2.0]])})
        >>> t["boxes"].tolist()
        [[1.0, 0.0, 3.0, 2.0]]
    """

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)
        for i, t in enumerate(self.transforms):
            if not callable(t):
                raise TypeError(f"Compose: transforms[{i}] must be callable, got {type(t).__name__}")

    def __call__(
        self, image: Tensor, target: dict[str, Any], generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Any]]:
        for t in self.transforms:
            image, target = t(image, target, generator)
        return image, target

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


@dataclass(frozen=True)
class AugmentConfig:
    r"""Plain settings of the training augmentation (see :func:`build_augmentation`).

    The defaults are the paper's (and 0.1.0's) pipeline: a horizontal flip with
    probability 0.5 and nothing else.

    Args:
        hflip: Flip probability in ``[0, 1]``.
        scale_jitter: ``(lo, hi)`` zoom range of :class:`RandomScaleJitter`, or ``None``
            (off). ``(0.5, 1.5)`` is a good small-data setting.
        aspect_jitter: ``(lo, hi)`` aspect-change range of the zoom, or ``None``
            (aspect kept). Needs ``scale_jitter``.
        photometric: Strength :math:`\beta` of :class:`RandomPhotometric` in ``[0, 1]``:
            brightness, contrast and saturation jitter :math:`\beta`, hue
            :math:`\beta / 4`; 0 is off.
        output_size: ``(H, W)`` of the zoom's output; ``None`` keeps each input's size.
            Needs ``scale_jitter``.
        min_visibility: Box rule of the zoom (see :func:`rescale_place`).
        fill: Border value of the zoom.

    Example:
        >>> AugmentConfig(scale_jitter=(0.5, 1.5)).hflip
        0.5
    """

    hflip: float = 0.5
    scale_jitter: tuple[float, float] | None = None
    aspect_jitter: tuple[float, float] | None = None
    photometric: float = 0.0
    output_size: tuple[int, int] | None = None
    min_visibility: float = MIN_VISIBILITY
    fill: float = 0.5


def build_augmentation(settings: AugmentConfig | Mapping[str, Any] | None = None) -> Compose:
    r"""Build the training augmentation from plain settings.

    The order is zoom (:class:`RandomScaleJitter`, if ``scale_jitter``), flip
    (:class:`~focal_detect.data.RandomHorizontalFlip`, always, so the flip draws from
    the generator exactly as before), photometric (:class:`RandomPhotometric`, if
    ``photometric > 0``). ``None`` or ``{}`` gives today's behaviour: the flip alone,
    drawing the same numbers, hence the same samples, as ``RandomHorizontalFlip(0.5)``.

    Args:
        settings: An :class:`AugmentConfig`, a dict of its field names (e.g. from a
            JSON or CLI config), or ``None`` for the defaults.

    Returns:
        A :class:`Compose` to pass to :class:`~focal_detect.data.SeededAugment`.

    Raises:
        ValueError: An unknown key or a bad value, naming it.
        TypeError: ``settings`` of another type.

    Example:
        >>> build_augmentation(None)
        Compose([RandomHorizontalFlip(p=0.5)])
        >>> aug = build_augmentation({"hflip": 0.5, "scale_jitter": (0.5, 1.5), "photometric": 0.2})
        >>> [type(t).__name__ for t in aug.transforms]
        ['RandomScaleJitter', 'RandomHorizontalFlip', 'RandomPhotometric']
    """
    fn = "build_augmentation"
    if settings is None:
        cfg = AugmentConfig()
    elif isinstance(settings, AugmentConfig):
        cfg = settings
    elif isinstance(settings, Mapping):
        known = {f.name for f in fields(AugmentConfig)}
        for key in settings:
            if key not in known:
                raise ValueError(f"{fn}: settings key {key!r} must be one of {sorted(known)}, got {key!r}")
        cfg = AugmentConfig(**settings)
    else:
        raise TypeError(
            f"{fn}: settings must be an AugmentConfig, a dict or None, got {type(settings).__name__}"
        )
    # Checked here so that the message names the setting, not the transform's argument.
    check_number(fn, "hflip", cfg.hflip, low=0.0, high=1.0)
    photometric = check_number(fn, "photometric", cfg.photometric, low=0.0, high=1.0)
    check_number(fn, "min_visibility", cfg.min_visibility, low=0.0, high=1.0)
    check_number(fn, "fill", cfg.fill, low=0.0, high=1.0)
    _check_size(fn, "output_size", cfg.output_size)
    if cfg.scale_jitter is not None:
        _check_range(fn, "scale_jitter", cfg.scale_jitter, low=0.0)
    for name in ("aspect_jitter", "output_size"):
        if getattr(cfg, name) is not None and cfg.scale_jitter is None:
            raise ValueError(f"{fn}: {name} must come with scale_jitter, got scale_jitter=None")
    if cfg.aspect_jitter is not None:
        _check_range(fn, "aspect_jitter", cfg.aspect_jitter, low=0.0)
    transforms: list[Transform] = []
    if cfg.scale_jitter is not None:
        transforms.append(
            RandomScaleJitter(
                scale=cfg.scale_jitter,
                aspect=cfg.aspect_jitter or (1.0, 1.0),
                output_size=cfg.output_size,
                min_visibility=cfg.min_visibility,
                fill=cfg.fill,
            )
        )
    transforms.append(RandomHorizontalFlip(cfg.hflip))
    if photometric > 0:
        transforms.append(RandomPhotometric(photometric, photometric, photometric, photometric / 4))
    return Compose(transforms)
