r"""The ``"auto"`` configuration: model size, input size and anchors chosen from the data.

``focal-detect train --preset auto`` (and :func:`auto_config`) looks at the training
boxes and the device and chooses three things, each by a rule written here:

*Anchors* (:func:`fit_anchors`). The paper's layout is kept (sizes doubling from P3
to P7, scales :math:`2^{0, 1/3, 2/3}`), and its free parameters are fitted to the
training boxes: the ratios widen from ``(0.5, 1, 2)`` to ``(1/3, 1/2, 1, 2, 3)`` when
more than 10 % of the boxes are more elongated than 1:2.5, and the P3 base size
:math:`S_3` (so :math:`S_l = S_3 2^{l-3}`) is the one of a grid of candidates that
maximises the *anchor coverage*, the share of boxes that some anchor overlaps with
IoU at least the matcher's foreground threshold (what
:func:`~focal_detect.analysis.anchor_coverage` measures, computed here exactly from the
nearest grid position of each cell shape, so 25 candidates take milliseconds). Anchors are centred in their cells
(offset 0.5).

*Input size* (:func:`auto_config`). Images are resized so that the median image has at
most ``max_pixels`` pixels (a CPU gets :data:`CPU_MAX_PIXELS`, an accelerator
:data:`GPU_MAX_PIXELS`); within that, small objects are enlarged by the smallest
factor of :data:`UPSCALES` that lifts the coverage to :data:`COVERAGE_TARGET`
(strides of 8 px cannot place a 10-px box's anchor at IoU 0.5 from every position).
If no allowed factor reaches the target, the best is kept and the report warns.

*Model size.* A CPU gets the ``"demo"`` model (slim ResNet-18, 64-channel pyramid,
2-conv GroupNorm heads, GIoU loss) that trains from scratch in minutes; an
accelerator a full-width ResNet-18 with a 128-channel pyramid and 4-conv heads.

The training recipe that goes with it (optimizer, schedule, augmentation) is
:data:`AUTO_TRAIN`, which ``focal-detect train --preset auto`` applies where the
command line and config file leave a setting open.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from focal_detect.anchors import AnchorGenerator, Anchors
from focal_detect.models.config import RetinaNetConfig
from focal_detect.models.presets import preset_config

__all__ = [
    "AUTO_TRAIN",
    "COVERAGE_TARGET",
    "CPU_MAX_PIXELS",
    "GPU_MAX_PIXELS",
    "STRIDES",
    "UPSCALES",
    "AnchorFit",
    "AutoChoice",
    "auto_config",
    "dataset_boxes",
    "fit_anchors",
]

#: Coverage below which the ``auto`` choice warns (and input upscaling is tried).
COVERAGE_TARGET = 0.95
#: Pixels of the (median) input image a CPU run is allowed: 448 x 448.
CPU_MAX_PIXELS = 448 * 448
#: Pixels an accelerator run is allowed: 800 x 1333, the paper's largest input.
GPU_MAX_PIXELS = 800 * 1333
#: Input enlargement factors tried, smallest first, to lift the coverage.
UPSCALES = (1.0, 1.2, 1.4)
#: The paper's P3-P7 strides.
STRIDES = (8, 16, 32, 64, 128)
_SCALES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
_RATIOS = (0.5, 1.0, 2.0)
_WIDE_RATIOS = (1 / 3, 0.5, 1.0, 2.0, 3.0)

#: Training settings of ``train --preset auto`` (any of them can be overridden): the
#: small-data recipe tuned on the independent clutter set (``benchmarks/clutter_set.py``),
#: never on the demo's shapes.
AUTO_TRAIN: dict[str, Any] = {
    "batch_size": 8,
    "optimizer": "adamw",
    "lr": 4e-3,
    "weight_decay": 1e-4,
    "schedule": "cosine",
    "warmup_fraction": 0.05,
    "warmup_factor": 0.1,
    "clip_grad_norm": 10.0,
    "amp": True,
    "augment": {"scale_jitter": (0.6, 1.4), "photometric": 0.2},
}


@dataclass(frozen=True)
class AnchorFit:
    """Anchors fitted to a set of boxes (see :func:`fit_anchors`).

    Attributes:
        sizes: Base size per level P3-P7, in pixels of the model's input.
        ratios: Aspect ratios (height / width).
        scales: Octave scales.
        offset: Anchor centre in a cell, as a fraction of the stride.
        coverage: Share of the boxes with an anchor at IoU >= ``high_threshold``.
        high_threshold: The foreground threshold the coverage was measured at.

    Example:
        >>> fit = fit_anchors(torch.tensor([[8.0, 8.0, 40.0, 40.0]]), (64, 64))
        >>> fit.coverage, len(fit.sizes), sorted(fit.anchor_changes())
        (1.0, 5, ['offset', 'ratios', 'scales', 'sizes'])
    """

    sizes: tuple[float, ...]
    ratios: tuple[float, ...]
    scales: tuple[float, ...]
    offset: float
    coverage: float
    high_threshold: float

    def anchor_changes(self) -> dict[str, Any]:
        """The fit as ``RetinaNetConfig`` changes of its ``anchors`` group."""
        return {"sizes": self.sizes, "ratios": self.ratios, "scales": self.scales, "offset": self.offset}


@dataclass(frozen=True)
class AutoChoice:
    """What :func:`auto_config` chose, and why.

    Attributes:
        config: The model configuration.
        anchors: The anchor fit at the chosen input size.
        input_scale: Factor from the median image to the model's input.
        input_size: ``(H, W)`` of the median image at the model's input.
        num_boxes: Boxes the choice was made from.
        device: ``"cpu"`` or ``"accelerator"``.

    Example:
        >>> choice = auto_config([torch.tensor([[8.0, 8.0, 40.0, 40.0]])], [(64, 64)], num_classes=1)
        >>> choice.coverage_ok, choice.summary()[-1]
        (True, 'anchor coverage: 100.0 % of the training boxes have an anchor with IoU >= 0.5')
    """

    config: RetinaNetConfig
    anchors: AnchorFit
    input_scale: float
    input_size: tuple[int, int]
    num_boxes: int
    device: str

    @property
    def coverage_ok(self) -> bool:
        """Whether the coverage reaches :data:`COVERAGE_TARGET`."""
        return self.anchors.coverage >= COVERAGE_TARGET

    def summary(self) -> list[str]:
        """Human-readable lines: the choice and the anchor coverage (with a warning below target)."""
        a, cfg = self.anchors, self.config
        lines = [
            f"auto: {self.device} model: ResNet-{cfg.backbone.depth} width {cfg.backbone.width}, "
            f"{cfg.fpn.channels}-channel FPN, {cfg.head.num_convs}-conv heads",
            f"auto: input {self.input_size[1]}x{self.input_size[0]} px (x{self.input_scale:g} of the median image)",
            f"auto: anchor sizes {tuple(round(s, 1) for s in a.sizes)} on P3-P7, ratios "
            f"{tuple(round(r, 2) for r in a.ratios)}, fitted to {self.num_boxes} training boxes",
            f"anchor coverage: {100 * a.coverage:.1f} % of the training boxes have an anchor with "
            f"IoU >= {a.high_threshold:g}",
        ]
        if not self.coverage_ok:
            lines.append(
                f"warning: anchor coverage {100 * a.coverage:.1f} % is below {100 * COVERAGE_TARGET:.0f} %: "
                "the uncovered boxes get only low-quality matches (boxes much smaller than 8 px "
                "at the model's input, or shapes no ratio fits)"
            )
        return lines


def _box_tensor(fn: str, boxes: Tensor | Sequence[Tensor]) -> Tensor:
    if isinstance(boxes, Tensor):
        b = boxes
    else:
        parts = [torch.as_tensor(x, dtype=torch.float32).reshape(-1, 4) for x in boxes]
        b = torch.cat(parts) if parts else torch.zeros(0, 4)
    if b.ndim != 2 or b.shape[-1] != 4:
        raise ValueError(f"{fn}: boxes must have shape (M, 4), got {tuple(b.shape)}")
    b = b.to(torch.float32)
    if not bool(torch.isfinite(b).all()):
        raise ValueError(f"{fn}: boxes must be finite")
    wh = b[:, 2:] - b[:, :2]
    b = b[(wh > 0).all(dim=1)]  # degenerate boxes cannot be covered; they are not counted
    if b.shape[0] == 0:
        raise ValueError(f"{fn}: boxes must hold at least one box of positive width and height")
    return b


def _number(
    fn: str, name: str, value: object, low: float, high: float = math.inf, low_open: bool = False
) -> float:
    """``value`` as a float in the range, else a ``ValueError`` naming it (model modules
    import only public names, so not ``focal_detect._checks.check_number``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and value <= high  # type: ignore[operator]
    if not ok:
        lo = "(" if low_open else "["
        raise ValueError(f"{fn}: {name} must be a number in {lo}{low:g}, {high:g}], got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _subsample(boxes: Tensor, max_boxes: int) -> Tensor:
    if boxes.shape[0] <= max_boxes:
        return boxes
    g = torch.Generator().manual_seed(0)
    return boxes[torch.randperm(boxes.shape[0], generator=g)[:max_boxes]]


def _grid_best_iou(anchors: Anchors, boxes: Tensor) -> Tensor:
    r"""``(M,)`` best IoU of each box with the grid of anchors, exactly, in ``O(M A L)``.

    For two axis-aligned boxes of fixed sizes the overlap along an axis only shrinks
    as their centres move apart, so the best anchor of a given cell shape on a level is
    the one whose centre is nearest the box's, clamped to the grid: one candidate per
    (shape, level) instead of the whole grid. ``tests/test_auto.py`` checks the result
    against :func:`~focal_detect.analysis.best_anchor_iou` over all anchors.
    """
    b = boxes.to(torch.float64)
    bw, bh = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    best = torch.zeros(b.shape[0], dtype=torch.float64)
    for lv in anchors.levels:
        cells = lv.cell_anchors.to(torch.float64)
        aw, ah = cells[:, 2] - cells[:, 0], cells[:, 3] - cells[:, 1]  # (A,)
        ax0 = (cells[:, 0] + cells[:, 2]) / 2 + lv.shift_x  # centre at grid x = 0
        ay0 = (cells[:, 1] + cells[:, 3]) / 2 + lv.shift_y
        jx = ((cx[:, None] - ax0) / lv.stride_w).round().clamp(0, lv.width - 1)  # (M, A)
        jy = ((cy[:, None] - ay0) / lv.stride_h).round().clamp(0, lv.height - 1)
        dx = (cx[:, None] - (ax0 + jx * lv.stride_w)).abs()
        dy = (cy[:, None] - (ay0 + jy * lv.stride_h)).abs()
        iw = ((bw[:, None] + aw) / 2 - dx).clamp(min=0).minimum(torch.minimum(bw[:, None], aw))
        ih = ((bh[:, None] + ah) / 2 - dy).clamp(min=0).minimum(torch.minimum(bh[:, None], ah))
        inter = iw * ih
        iou = inter / (bw[:, None] * bh[:, None] + aw * ah - inter)
        best = torch.maximum(best, iou.max(dim=1).values)
    return best


def fit_anchors(
    boxes: Tensor | Sequence[Tensor],
    image_size: tuple[int, int],
    *,
    high_threshold: float = 0.5,
    max_boxes: int = 4000,
) -> AnchorFit:
    r"""Fit the P3 base size and the ratios of the paper's anchor layout to ``boxes``.

    The ratios are ``(0.5, 1, 2)``, or ``(1/3, 1/2, 1, 2, 3)`` when more than 10 % of
    the boxes have :math:`h/w` outside ``[0.4, 2.5]``. The P3 base size :math:`S_3` is
    chosen from 25 candidates :math:`S_3 = 4 \cdot 2^{k/6}` px (4 to 64 px) to maximise
    the coverage, with sizes :math:`S_3 2^{l-3}` on P3-P7, scales :math:`2^{0,1/3,2/3}`
    and anchors centred in their stride-8 … 128 cells; ties go to the smaller size.

    Shape:
        boxes: ``(M, 4)`` or a list of per-image ``(M_i, 4)`` in ``(x1, y1, x2, y2)``
        pixels of an image of ``image_size``.

    Args:
        boxes: The training boxes (degenerate ones are left out).
        image_size: ``(H, W)`` of the image the boxes are in (the model's input).
        high_threshold: The matcher's foreground IoU threshold.
        max_boxes: Fit on at most this many boxes (a fixed random subset).

    Returns:
        An :class:`AnchorFit`.

    Raises:
        ValueError: No usable box, non-finite boxes, a bad ``image_size`` or threshold.

    Example:
        >>> small = torch.tensor([[10.0, 10.0, 22.0, 22.0], [40.0, 40.0, 56.0, 56.0]])
        >>> large = small * 8
        >>> fit_anchors(small, (320, 320)).sizes[0] < fit_anchors(large, (640, 640)).sizes[0]
        True
    """
    fn = "fit_anchors"
    if (
        not isinstance(image_size, (tuple, list))
        or len(image_size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in image_size)
    ):
        raise ValueError(f"{fn}: image_size must be a pair of positive ints (H, W), got {image_size!r}")
    t = _number(fn, "high_threshold", high_threshold, low=0.0, high=1.0, low_open=True)
    _number(fn, "max_boxes", max_boxes, low=1)
    b = _subsample(_box_tensor(fn, boxes), int(max_boxes))
    ratio = (b[:, 3] - b[:, 1]) / (b[:, 2] - b[:, 0])
    elongated = float(((ratio < 0.4) | (ratio > 2.5)).float().mean())
    ratios = _WIDE_RATIOS if elongated > 0.10 else _RATIOS
    best: tuple[float, tuple[float, ...]] | None = None
    for k in range(25):
        s3 = 4.0 * 2 ** (k / 6)
        sizes = tuple(s3 * 2**level for level in range(5))
        gen = AnchorGenerator(sizes=sizes, scales=_SCALES, ratios=ratios, strides=STRIDES, offset=0.5)
        anchors = gen(gen.feature_sizes_for(tuple(image_size)))
        cov = float((_grid_best_iou(anchors, b) >= t).double().mean())
        if best is None or cov > best[0] + 1e-9:
            best = (cov, sizes)
    assert best is not None
    return AnchorFit(tuple(round(s, 2) for s in best[1]), ratios, _SCALES, 0.5, best[0], t)


def dataset_boxes(dataset: Any, max_images: int = 5000) -> tuple[list[Tensor], list[tuple[int, int]]]:
    """The ground-truth boxes and ``(H, W)`` sizes of a detection dataset's images.

    Read from ``dataset.to_coco()`` when it has one (no image is decoded:
    :class:`~focal_detect.data.CocoDetection`), otherwise from its first
    ``max_images`` items.

    Returns:
        ``(boxes, sizes)``: per image an ``(M_i, 4)`` tensor in ``(x1, y1, x2, y2)``
        pixels, and its ``(H, W)``.

    Example:
        >>> data = [(torch.zeros(3, 20, 30), {"boxes": torch.tensor([[1.0, 2.0, 5.0, 9.0]])})]
        >>> boxes, sizes = dataset_boxes(data)
        >>> boxes[0].tolist(), sizes
        ([[1.0, 2.0, 5.0, 9.0]], [(20, 30)])
    """
    to_coco = getattr(dataset, "to_coco", None)
    if callable(to_coco) and hasattr(dataset, "annotation_file"):
        coco = to_coco()
        index = {im["id"]: i for i, im in enumerate(coco["images"])}
        per: list[list[list[float]]] = [[] for _ in coco["images"]]
        for a in coco["annotations"]:
            if a.get("iscrowd", 0):
                continue
            x, y, w, h = (float(v) for v in a["bbox"])
            per[index[a["image_id"]]].append([x, y, x + w, y + h])
        sizes = [(int(im["height"]), int(im["width"])) for im in coco["images"]]
        return [torch.tensor(p, dtype=torch.float32).reshape(-1, 4) for p in per], sizes
    boxes, sizes = [], []
    for i in range(min(len(dataset), max_images)):
        image, target = dataset[i]
        boxes.append(torch.as_tensor(target["boxes"], dtype=torch.float32).reshape(-1, 4))
        sizes.append((int(image.shape[-2]), int(image.shape[-1])))
    return boxes, sizes


def _model_for(device: str, num_classes: int) -> RetinaNetConfig:
    if device == "cpu":
        return preset_config("demo", num_classes, transform={"size_divisible": 32})
    return preset_config(
        "demo",
        num_classes,
        backbone={"width": 64},
        fpn={"channels": 128},
        head={"num_convs": 4, "channels": 128},
        transform={"size_divisible": 32},
    )


def auto_config(
    boxes: Sequence[Tensor],
    image_sizes: Sequence[tuple[int, int]],
    num_classes: int,
    *,
    device: str | torch.device = "cpu",
    high_threshold: float = 0.5,
    max_pixels: int | None = None,
) -> AutoChoice:
    r"""Choose model size, input size and anchors for a dataset (see the module docs).

    Shape:
        boxes: per image ``(M_i, 4)`` in ``(x1, y1, x2, y2)`` pixels of that image.

    Args:
        boxes: Per-image ``(M_i, 4)`` training boxes in ``(x1, y1, x2, y2)`` pixels.
        image_sizes: Per-image ``(H, W)``, same length as ``boxes``.
        num_classes: ``K``.
        device: Where the model will train: ``"cpu"``, or any other device (an
            accelerator: a bigger model and input).
        high_threshold: The matcher's foreground threshold (coverage is measured at it).
        max_pixels: Pixel budget of the median input (default: :data:`CPU_MAX_PIXELS` on
            a CPU, :data:`GPU_MAX_PIXELS` otherwise).

    Returns:
        An :class:`AutoChoice`; its :meth:`~AutoChoice.summary` is what the CLI prints.

    Raises:
        ValueError: Mismatched lengths, no usable box, bad sizes.

    Example:
        >>> boxes = [torch.tensor([[30.0, 30.0, 90.0, 80.0], [100.0, 40.0, 140.0, 120.0]])] * 4
        >>> choice = auto_config(boxes, [(160, 200)] * 4, num_classes=2)
        >>> choice.config.num_classes, choice.input_size, choice.coverage_ok
        (2, (160, 200), True)
    """
    fn = "auto_config"
    if len(boxes) != len(image_sizes):
        raise ValueError(
            f"{fn}: boxes and image_sizes must have the same length, got {len(boxes)} and {len(image_sizes)}"
        )
    if not image_sizes:
        raise ValueError(f"{fn}: image_sizes must not be empty")
    for i, hw in enumerate(image_sizes):
        if len(hw) != 2 or not all(isinstance(v, int) and v > 0 for v in hw):
            raise ValueError(f"{fn}: image_sizes[{i}] must be a pair of positive ints (H, W), got {hw!r}")
    kind = "cpu" if torch.device(device).type == "cpu" else "accelerator"
    budget = max_pixels if max_pixels is not None else (CPU_MAX_PIXELS if kind == "cpu" else GPU_MAX_PIXELS)
    _number(fn, "max_pixels", budget, low=1)
    # Each image's boxes in units of its own size, placed in the median image.
    h_med = int(statistics.median(h for h, _ in image_sizes))
    w_med = int(statistics.median(w for _, w in image_sizes))
    per_image = [torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4) for b in boxes]
    sizes_hw = torch.tensor(image_sizes, dtype=torch.float32)  # (I, 2)
    to_median = torch.stack([w_med / sizes_hw[:, 1], h_med / sizes_hw[:, 0]], dim=1).repeat(
        1, 2
    )  # x, y, x, y
    counts = torch.tensor([len(b) for b in per_image])
    base = _box_tensor(fn, torch.cat(per_image) * to_median.repeat_interleave(counts, dim=0))
    cap = math.sqrt(budget / (h_med * w_med))  # the largest factor the pixel budget allows
    fits: list[tuple[float, AnchorFit]] = []
    for up in UPSCALES:
        f = min(up, cap)
        if fits and f <= fits[-1][0]:
            break
        size = (max(1, round(h_med * f)), max(1, round(w_med * f)))
        fits.append((f, fit_anchors(base * f, size, high_threshold=high_threshold)))
        if fits[-1][1].coverage >= COVERAGE_TARGET:
            break
    reached = [x for x in fits if x[1].coverage >= COVERAGE_TARGET]
    scale, fit = reached[0] if reached else max(fits, key=lambda x: x[1].coverage)
    size = (max(1, round(h_med * scale)), max(1, round(w_med * scale)))
    cfg = _model_for(kind, num_classes)
    short, long_ = min(size), max(size)
    same = all(hw == image_sizes[0] for hw in image_sizes)
    transform: Mapping[str, Any] = (
        {"min_size": None} if same and scale == 1.0 else {"min_size": short, "max_size": max(long_, short)}
    )
    cfg = cfg.replace(
        anchors=fit.anchor_changes(),
        matcher={"high_threshold": high_threshold, "low_threshold": min(0.4, high_threshold)},
        transform=transform,
    )
    return AutoChoice(cfg, fit, round(scale, 4), size, int(base.shape[0]), kind)
