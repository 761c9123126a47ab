r"""The groups of :class:`~focal_detect.models.RetinaNetConfig`, one frozen dataclass per part.

Each group's field names are the argument names of the component it builds (one
spelling per concept across the library), and each group validates itself when it is
made; an error names the dotted field, e.g.
``RetinaNetConfig.matcher: high_threshold must be a number in [0.0, 1.0], got 1.5``.
See :mod:`focal_detect.models.config` for the whole config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from focal_detect.anchors import CONVENTIONS, AnchorGenerator
from focal_detect.coding import MAX_LOG_SCALE
from focal_detect.matching import CROWD_IOA_THRESHOLD, LOW_QUALITY_MODES
from focal_detect.models.backbone import RESNET_DEPTHS
from focal_detect.models.fpn import P6_SOURCES

__all__ = [
    "BOX_LOSSES",
    "CLS_LOSSES",
    "GROUPS",
    "LOSS_NORMALIZATIONS",
    "AnchorConfig",
    "BackboneConfig",
    "BoxCoderConfig",
    "FPNConfig",
    "HeadConfig",
    "InferenceConfig",
    "LossConfig",
    "MatcherConfig",
    "TransformConfig",
]

#: Accepted values of ``LossConfig.box_loss``.
BOX_LOSSES = ("smooth_l1", "l1", "giou")
#: Accepted values of ``LossConfig.cls_loss``: ``"focal"`` (the paper's FL, eq. 5),
#: ``"focal_star"`` (FL*, Appendix A) and ``"ohem"`` (the loss on the anchors chosen by
#: :func:`focal_detect.sampling.ohem_sample`, the paper's Table 1d baseline).
CLS_LOSSES = ("focal", "focal_star", "ohem")
#: Accepted values of ``LossConfig.normalization``: ``"batch"`` divides the summed
#: losses by the foreground count of the whole batch (paper, Detectron); ``"image"``
#: divides each image's sum by its own count and averages over images (torchvision).
LOSS_NORMALIZATIONS = ("batch", "image")

_PREFIX = "RetinaNetConfig"


# ----------------------------------------------------------------------------- checks
def _positive_int(fn: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{fn}: {name} must be a positive int, got {value!r}")
    return value


def _in_range(fn: str, name: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{fn}: {name} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def _flag(fn: str, name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{fn}: {name} must be a bool, got {value!r}")


def _choice(fn: str, name: str, value: object, choices: tuple[Any, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{fn}: {name} must be one of {choices}, got {value!r}")


def _triple(fn: str, name: str, value: tuple[float, ...]) -> None:
    if len(value) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value):
        raise ValueError(f"{fn}: {name} must have 3 finite entries, got {value!r}")


def _as_tuples(obj: object, *names: str) -> None:
    """Lists (from TOML / JSON) become tuples, so that a config is hashable and compares
    equal however it was written; a nested list (a ``(stride_h, stride_w)`` pair) too."""
    for name in names:
        v = getattr(obj, name)
        if isinstance(v, (list, tuple)):
            v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
            object.__setattr__(obj, name, v)


# ----------------------------------------------------------------------------- groups
@dataclass(frozen=True)
class BackboneConfig:
    r"""ResNet trunk (C3–C5).

    Attributes:
        depth: ResNet depth, 18, 34, 50 or 101.
        width: Stem channels (64 = published ResNets). Smaller values slim the
            network for CPU demos; a deviation from the paper.
        frozen_bn: BatchNorm with fixed statistics and affine parameters
            (``FrozenBatchNorm2d``).
        trainable_layers: Stages with trainable weights, counted from ``layer4``
            (0 = frozen backbone, 5 = everything trainable).
        channels_last: Run backbone and FPN in ``channels_last`` memory format (same
            math; measured 7 % faster forward + backward for a ResNet-50 FPN on CPU).
            The heads stay in the default layout.

    Example:
        >>> BackboneConfig(depth=18).depth
        18
        >>> BackboneConfig(depth=152)
        Traceback (most recent call last):
        ...
        ValueError: RetinaNetConfig.backbone: depth must be one of [18, 34, 50, 101], got 152
    """

    depth: int = 50
    width: int = 64
    frozen_bn: bool = True
    trainable_layers: int = 3
    channels_last: bool = False

    def __post_init__(self) -> None:
        fn = f"{_PREFIX}.backbone"
        if self.depth not in RESNET_DEPTHS:
            raise ValueError(f"{fn}: depth must be one of {sorted(RESNET_DEPTHS)}, got {self.depth!r}")
        _positive_int(fn, "width", self.width)
        _flag(fn, "frozen_bn", self.frozen_bn)
        tl = self.trainable_layers
        if isinstance(tl, bool) or not isinstance(tl, int) or not 0 <= tl <= 5:
            raise ValueError(f"{fn}: trainable_layers must be an int in [0, 5], got {tl!r}")
        _flag(fn, "channels_last", self.channels_last)


@dataclass(frozen=True)
class FPNConfig:
    r"""Feature pyramid P3–P7.

    Attributes:
        channels: ``C``, channels of every level (256).
        p6_from: ``"c5"`` (paper) or ``"p5"`` (torchvision).

    Example:
        >>> FPNConfig(channels=64, p6_from="p5")
        FPNConfig(channels=64, p6_from='p5')
    """

    channels: int = 256
    p6_from: str = "c5"

    def __post_init__(self) -> None:
        fn = f"{_PREFIX}.fpn"
        _positive_int(fn, "channels", self.channels)
        _choice(fn, "p6_from", self.p6_from, P6_SOURCES)


@dataclass(frozen=True)
class HeadConfig:
    r"""The classification and box subnets (arguments of ``RetinaNetHead``).

    Attributes:
        num_convs: 3×3 conv + ReLU layers per subnet before the predictor (4).
        channels: Channels of those layers; ``None`` means ``fpn.channels``.
        use_group_norm: GroupNorm (32 groups) after each conv (not in the paper;
            torchvision's v2 model and FCOS use it).
        prior: :math:`\pi` of the classifier's bias initialisation (0.01). ``0.5``
            gives bias 0, the "standard" initialisation that the paper's Sec. 5.1
            shows to diverge with cross entropy.

    Example:
        >>> HeadConfig(num_convs=2).prior
        0.01
    """

    num_convs: int = 4
    channels: int | None = None
    use_group_norm: bool = False
    prior: float = 0.01

    def __post_init__(self) -> None:
        fn = f"{_PREFIX}.head"
        _positive_int(fn, "num_convs", self.num_convs)
        if self.channels is not None:
            _positive_int(fn, "channels", self.channels)
        _flag(fn, "use_group_norm", self.use_group_norm)
        _in_range(fn, "prior", self.prior, 1e-12, 1 - 1e-12)


@dataclass(frozen=True)
class AnchorConfig:
    r"""Anchors (arguments of :class:`~focal_detect.anchors.AnchorGenerator`).

    ``None`` leaves a setting to the convention: the paper's anchors are base sizes
    32 … 512 on P3–P7 (strides 8 … 128), scales :math:`2^{0, 1/3, 2/3}`, ratios
    ``(0.5, 1, 2)``.

    Attributes:
        convention: One of :data:`~focal_detect.anchors.CONVENTIONS` (``"paper"``,
            ``"torchvision"``, ``"detectron2"`` …): rounding, cell order and offset
            of that implementation.
        sizes: Per-level base sizes.
        scales: Octave scales.
        ratios: Aspect ratios.
        strides: Nominal per-level strides; an entry is an int or a
            ``(stride_h, stride_w)`` pair. In a :class:`~focal_detect.models.RetinaNet` they
            must be the P3–P7 maps' own, ``(8, 16, 32, 64, 128)`` on both axes (checked).
        offset: Anchor centre inside a cell as a fraction of the stride (``None``:
            the convention's).
        order: Cell-anchor order, ``"ratio-major"`` or ``"scale-major"`` (``None``:
            the convention's).
        derive_strides: Derive each level's stride from the padded batch as
            torchvision does, ``(H_pad // H_l, W_pad // W_l)`` (e.g. 61 × 64 at P6
            for an 800 × 1088 batch) instead of the nominal strides.

    Raises:
        ValueError: Settings that make no generator (the generator's own message).

    Example:
        >>> AnchorConfig(convention="torchvision").generator_kwargs()
        {'convention': 'torchvision', 'derive_strides': False}
    """

    convention: str = "paper"
    sizes: tuple[float, ...] | None = None
    scales: tuple[float, ...] | None = None
    ratios: tuple[float, ...] | None = None
    strides: tuple[int | tuple[int, int], ...] | None = None
    offset: float | None = None
    order: str | None = None
    derive_strides: bool = False

    def __post_init__(self) -> None:
        fn = f"{_PREFIX}.anchors"
        _as_tuples(self, "sizes", "scales", "ratios", "strides")
        _choice(fn, "convention", self.convention, CONVENTIONS)
        _flag(fn, "derive_strides", self.derive_strides)
        try:  # cheap: cell anchors only
            AnchorGenerator(**self.generator_kwargs())
        except (TypeError, ValueError) as e:
            raise ValueError(f"{fn}: settings must make an AnchorGenerator, got: {e}") from None

    def generator_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``AnchorGenerator``: the convention and the fields set."""
        kwargs: dict[str, Any] = {"convention": self.convention, "derive_strides": self.derive_strides}
        for name in ("sizes", "scales", "ratios", "strides", "offset", "order"):
            if getattr(self, name) is not None:
                kwargs[name] = getattr(self, name)
        return kwargs


@dataclass(frozen=True)
class MatcherConfig:
    r"""Anchor assignment (the keyword arguments of :func:`~focal_detect.matching.assign_anchors`).

    Attributes:
        high_threshold: IoU at or above which an anchor is foreground (0.5).
        low_threshold: IoU below which an anchor is background (0.4); in between
            it is ignored.
        allow_low_quality_matches: Also make each box's best anchor(s) foreground.
        low_quality: Low-quality rule, ``"torchvision"`` or ``"mmdetection"`` (see
            :func:`~focal_detect.matching.match_anchors`).
        min_low_quality_iou: Minimum-IoU guard of the low-quality rule (0.0: a box
            overlapping no anchor claims none); ``None`` turns it off, as
            torchvision's ``Matcher`` (such a box then claims every anchor of its image).
        crowd_ioa_threshold: Anchors whose intersection over their own area with a
            crowd box (``"iscrowd"``) reaches it are ignored instead of background
            (0.5); ``None`` disables it (crowd boxes are still not matched).

    Example:
        >>> MatcherConfig(high_threshold=0.6, low_threshold=0.5).high_threshold
        0.6
        >>> MatcherConfig(low_threshold=0.7)
        Traceback (most recent call last):
        ...
        ValueError: RetinaNetConfig.matcher: low_threshold must be <= high_threshold (0.5), got 0.7
    """

    high_threshold: float = 0.5
    low_threshold: float = 0.4
    allow_low_quality_matches: bool = True
    low_quality: str = "torchvision"
    min_low_quality_iou: float | None = 0.0
    crowd_ioa_threshold: float | None = CROWD_IOA_THRESHOLD

    def __post_init__(self) -> None:
        fn = f"{_PREFIX}.matcher"
        _in_range(fn, "high_threshold", self.high_threshold, 0.0, 1.0)
        _in_range(fn, "low_threshold", self.low_threshold, 0.0, 1.0)
        if self.low_threshold > self.high_threshold:
            raise ValueError(
                f"{fn}: low_threshold must be <= high_threshold ({self.high_threshold}), "
                f"got {self.low_threshold}"
            )
        _flag(fn, "allow_low_quality_matches", self.allow_low_quality_matches)
        _choice(fn, "low_quality", self.low_quality, LOW_QUALITY_MODES)
        if self.min_low_quality_iou is not None:
            _in_range(fn, "min_low_quality_iou", self.min_low_quality_iou, 0.0, 1.0)
        if self.crowd_ioa_threshold is not None:
            _in_range(fn, "crowd_ioa_threshold", self.crowd_ioa_threshold, 1e-12, 1.0)


@dataclass(frozen=True)
class BoxCoderConfig:
    r"""Box codes (arguments of :class:`~focal_detect.coding.BoxCoder`).

    Attributes:
        weights: Weights of the ``(dx, dy, dw, dh)`` codes.
        clamp: Upper bound of the decoded ``dw, dh`` (log scale), ``None`` for none.
        symmetric_clamp: Clamp ``dw, dh`` to ``[-clamp, clamp]`` instead of
            ``(-inf, clamp]``.

    Example:
        >>> BoxCoderConfig(weights=[10, 10, 5, 5]).weights
        (10, 10, 5, 5)
    """

    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    clamp: float | None = MAX_LOG_SCALE
    symmetric_clamp: bool = False

    def __post_init__(self) -> None:
        fn = f"{_PREFIX}.coder"
        _as_tuples(self, "weights")
        if len(self.weights) != 4 or not all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0 for w in self.weights
        ):
            raise ValueError(f"{fn}: weights must be 4 positive numbers, got {self.weights!r}")
        if self.clamp is not None:
            _in_range(fn, "clamp", self.clamp, 0.0, math.inf)
        _flag(fn, "symmetric_clamp", self.symmetric_clamp)


@dataclass(frozen=True)
class LossConfig:
    r"""Classification loss, box loss and their normaliser.

    Attributes:
        cls_loss: One of :data:`CLS_LOSSES`: ``"focal"`` (``alpha``, ``gamma``;
            ``gamma = 0`` is α-balanced cross entropy), ``"focal_star"`` (FL* with
            ``star_gamma``, ``star_beta``, and ``alpha`` weighting its positive and
            negative terms) or ``"ohem"`` (the focal loss with ``alpha``/``gamma``,
            usually ``gamma = 0`` and ``alpha = None``, on the anchors chosen by
            OHEM only). Every variant is divided by the same normaliser.
        alpha: :math:`\alpha` (0.25); ``None`` disables the weighting.
        gamma: :math:`\gamma` (2).
        star_gamma: :math:`\gamma > 0` of FL* (4).
        star_beta: :math:`\beta` of FL* (0).
        box_loss: ``"smooth_l1"`` (paper, ``smooth_l1_beta``), ``"l1"``
            (torchvision v1) or ``"giou"`` (on decoded boxes).
        smooth_l1_beta: Transition point :math:`\beta` of smooth L1 (0.11).
        normalization: ``"batch"`` or ``"image"``, see :data:`LOSS_NORMALIZATIONS`.
        normalizer_momentum: EMA momentum of the foreground count (``None`` = the
            batch's count, as the paper).
        normalizer_initial: Starting value of that EMA (100).
        distributed: All-reduce the foreground count across processes.
        ohem_batch_size_per_image: Anchors chosen per image by OHEM (128).
        ohem_positive_fraction: Largest foreground share of OHEM's minibatch (0.25,
            i.e. 1:3); ``None`` for no constraint.
        ohem_nms_threshold: IoU of OHEM's NMS on the anchors with the loss as the
            score; ``None`` (default) skips it.

    Example:
        >>> LossConfig(gamma=0.0, alpha=None).gamma
        0.0
    """

    cls_loss: str = "focal"
    alpha: float | None = 0.25
    gamma: float = 2.0
    star_gamma: float = 4.0
    star_beta: float = 0.0
    box_loss: str = "smooth_l1"
    smooth_l1_beta: float = 0.11
    normalization: str = "batch"
    normalizer_momentum: float | None = None
    normalizer_initial: float = 100.0
    distributed: bool = False
    ohem_batch_size_per_image: int = 128
    ohem_positive_fraction: float | None = 0.25
    ohem_nms_threshold: float | None = None

    def __post_init__(self) -> None:
        fn = f"{_PREFIX}.loss"
        _choice(fn, "cls_loss", self.cls_loss, CLS_LOSSES)
        if self.alpha is not None:
            _in_range(fn, "alpha", self.alpha, 0.0, 1.0)
        _in_range(fn, "gamma", self.gamma, 0.0, math.inf)
        _in_range(fn, "star_gamma", self.star_gamma, 1e-12, math.inf)
        beta = self.star_beta
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta):
            raise ValueError(f"{fn}: star_beta must be a finite number, got {beta!r}")
        _choice(fn, "box_loss", self.box_loss, BOX_LOSSES)
        _in_range(fn, "smooth_l1_beta", self.smooth_l1_beta, 0.0, math.inf)
        _choice(fn, "normalization", self.normalization, LOSS_NORMALIZATIONS)
        if self.normalizer_momentum is not None:
            _in_range(fn, "normalizer_momentum", self.normalizer_momentum, 0.0, 1.0 - 1e-12)
        _in_range(fn, "normalizer_initial", self.normalizer_initial, 1e-12, math.inf)
        _flag(fn, "distributed", self.distributed)
        _positive_int(fn, "ohem_batch_size_per_image", self.ohem_batch_size_per_image)
        if self.ohem_positive_fraction is not None:
            _in_range(fn, "ohem_positive_fraction", self.ohem_positive_fraction, 0.0, 1.0)
        if self.ohem_nms_threshold is not None:
            _in_range(fn, "ohem_nms_threshold", self.ohem_nms_threshold, 0.0, 1.0)


@dataclass(frozen=True)
class TransformConfig:
    r"""Pre-processing: normalise, resize, pad.

    Attributes:
        min_size: Target short side(s); a tuple picks one at random per training
            image (multi-scale), the last one at evaluation. ``None`` disables
            resizing.
        max_size: Upper bound of the long side after resizing.
        pixel_mean: Per-channel mean subtracted from ``[0, 1]`` images.
        pixel_std: Per-channel standard deviation.
        size_divisible: Pad height and width to a multiple of it (128: P7's stride,
            so every level's stride is exact).

    Example:
        >>> TransformConfig(min_size=[600, 800]).min_size
        (600, 800)
    """

    min_size: int | tuple[int, ...] | None = 800
    max_size: int = 1333
    pixel_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    pixel_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    size_divisible: int = 128

    def __post_init__(self) -> None:
        fn = f"{_PREFIX}.transform"
        _as_tuples(self, "min_size", "pixel_mean", "pixel_std")
        if self.min_size is not None:
            sizes = self.min_size if isinstance(self.min_size, tuple) else (self.min_size,)
            if not sizes:
                raise ValueError(f"{fn}: min_size must not be empty, got {self.min_size!r}")
            for s in sizes:
                _positive_int(fn, "min_size", s)
        _positive_int(fn, "max_size", self.max_size)
        _triple(fn, "pixel_mean", self.pixel_mean)
        _triple(fn, "pixel_std", self.pixel_std)
        if any(s <= 0 for s in self.pixel_std):
            raise ValueError(f"{fn}: pixel_std must be positive, got {self.pixel_std!r}")
        _positive_int(fn, "size_divisible", self.size_divisible)

    @property
    def eval_min_size(self) -> int | None:
        """The short side used at evaluation (the last of ``min_size``)."""
        m = self.min_size
        return m[-1] if isinstance(m, tuple) else m


@dataclass(frozen=True)
class InferenceConfig:
    r"""Post-processing.

    Attributes:
        score_threshold: Minimum score of a candidate detection (0.05).
        topk_candidates: Candidates kept per level before NMS (1000).
        nms_threshold: IoU threshold of class-wise NMS (0.5).
        detections_per_img: Detections kept per image after NMS (100).

    Example:
        >>> InferenceConfig(score_threshold=1.5)
        Traceback (most recent call last):
        ...
        ValueError: RetinaNetConfig.inference: score_threshold must be a number in [0.0, 1.0], got 1.5
    """

    score_threshold: float = 0.05
    topk_candidates: int = 1000
    nms_threshold: float = 0.5
    detections_per_img: int = 100

    def __post_init__(self) -> None:
        fn = f"{_PREFIX}.inference"
        _in_range(fn, "score_threshold", self.score_threshold, 0.0, 1.0)
        _positive_int(fn, "topk_candidates", self.topk_candidates)
        _in_range(fn, "nms_threshold", self.nms_threshold, 0.0, 1.0)
        _positive_int(fn, "detections_per_img", self.detections_per_img)


#: Group name -> class, in the order of the config's fields.
GROUPS: dict[str, type] = {
    "backbone": BackboneConfig,
    "fpn": FPNConfig,
    "head": HeadConfig,
    "anchors": AnchorConfig,
    "matcher": MatcherConfig,
    "coder": BoxCoderConfig,
    "loss": LossConfig,
    "transform": TransformConfig,
    "inference": InferenceConfig,
}
