r"""RetinaNet (Lin et al. 2017, Sec. 4): ResNet + FPN + two dense subnets + focal loss.

The model is assembled only from the library's public pieces:

========================  ==========================================================
step                      function / class
========================  ==========================================================
features C3–C5            :class:`focal_detect.models.backbone.ResNet`
pyramid P3–P7             :class:`focal_detect.models.fpn.FPN`
subnets                   :class:`RetinaNetHead` (:func:`focal_detect.init.init_conv_`,
                          :func:`focal_detect.init.init_prior_bias_`)
anchors                   :class:`focal_detect.anchors.AnchorGenerator`
assignment + targets      :func:`focal_detect.matching.assign_anchors` with a
                          :class:`focal_detect.coding.BoxCoder`
classification loss       :func:`focal_detect.losses.sigmoid_focal_loss_from_labels`
                          over all non-ignored anchors, divided by
                          :class:`focal_detect.losses.FocalLossNormalizer`
                          (or FL*, or OHEM with
                          :func:`focal_detect.sampling.ohem_sample`:
                          ``RetinaNetConfig.cls_loss``)
box loss                  :func:`focal_detect.losses.smooth_l1_loss` (β = 0.11),
                          :func:`focal_detect.losses.l1_loss` or
                          :func:`focal_detect.losses.giou_loss` over foreground anchors
decoding                  :meth:`focal_detect.coding.BoxCoder.decode`
class-wise NMS            :func:`focal_detect.boxes.batched_nms`
========================  ==========================================================

Pre-processing follows torchvision's ``GeneralizedRCNNTransform``: normalise with
the pixel mean/std, resize so the short side is ``min_size`` unless the long side
would exceed ``max_size`` (bilinear, boxes scaled likewise), then pad the batch at
the bottom/right to a multiple of ``size_divisible``. The default 128 (the stride
of P7) makes every level's stride exact, so anchors of every level sit exactly on
the feature grid. Detections are mapped back to each original image size.

Compilation: :meth:`RetinaNet.dense` (backbone, FPN and heads on a padded batch)
has static shapes; it compiles with ``torch.compile(fullgraph=True)`` and exports
with :func:`torch.export.export`. To compile the inference path, replace it on the
instance, ``model.dense = torch.compile(model.dense)``; ``forward`` then runs the
compiled network and the eager pre- and post-processing. Compiling the whole
``forward`` works too but is not useful: the number of scores above
``score_thresh`` and of boxes surviving NMS depends on the data, and greedy NMS is
a data-dependent loop, so Dynamo breaks the graph and recompiles for new sizes.
For the same reason the post-processing cannot be exported as one graph: export
:meth:`RetinaNet.dense` and call :meth:`RetinaNet.postprocess` on its outputs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from focal_detect.anchors import AnchorGenerator
from focal_detect.boxes import batched_nms
from focal_detect.coding import BoxCoder
from focal_detect.constants import IGNORE
from focal_detect.init import init_conv_, init_prior_bias_
from focal_detect.losses import (
    FocalLossNormalizer,
    giou_loss,
    l1_loss,
    sigmoid_focal_loss_from_labels,
    sigmoid_focal_loss_star,
    smooth_l1_loss,
)
from focal_detect.matching import CROWD_IOA_THRESHOLD, LOW_QUALITY_MODES, assign_anchors
from focal_detect.models.backbone import RESNET_DEPTHS, ResNet
from focal_detect.models.fpn import FPN, P6_SOURCES
from focal_detect.sampling import ohem_sample

__all__ = ["RetinaNetConfig", "RetinaNetHead", "RetinaNet", "BOX_LOSSES", "CLS_LOSSES", "LOSS_NORMALIZATIONS"]

#: Accepted values of ``RetinaNetConfig.box_loss``.
BOX_LOSSES = ("smooth_l1", "l1", "giou")
#: Accepted values of ``RetinaNetConfig.cls_loss``: ``"focal"`` (the paper's FL, eq. 5),
#: ``"focal_star"`` (FL*, Appendix A) and ``"ohem"`` (the loss on the anchors chosen by
#: :func:`focal_detect.sampling.ohem_sample`, the paper's Table 1d baseline).
CLS_LOSSES = ("focal", "focal_star", "ohem")
#: Accepted values of ``RetinaNetConfig.loss_normalization``: ``"batch"`` divides the
#: summed losses by the foreground count of the whole batch (paper, Detectron);
#: ``"image"`` divides each image's sum by its own count and averages over images
#: (torchvision).
LOSS_NORMALIZATIONS = ("batch", "image")


def _positive_int(fn: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{fn}: {name} must be a positive int, got {value!r}")
    return value


def _in_range(fn: str, name: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{fn}: {name} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class RetinaNetConfig:
    r"""Every hyper-parameter of :class:`RetinaNet`; defaults are the paper's.

    Attributes:
        num_classes: ``K`` object classes (no background class: sigmoid outputs).
        backbone_depth: ResNet depth, 18, 34, 50 or 101.
        backbone_width: ResNet stem channels (64 = published ResNets). Smaller
            values slim the network for CPU demos; a deviation from the paper.
        frozen_bn: Backbone BatchNorm with fixed statistics and affine
            parameters (``FrozenBatchNorm2d``).
        trainable_layers: Backbone stages with trainable weights, counted from
            ``layer4`` (0 = frozen backbone, 5 = everything trainable).
        fpn_channels: ``C``, channels of P3–P7 (256).
        p6_from: ``"c5"`` (paper) or ``"p5"`` (torchvision).
        head_convs: 3×3 conv + ReLU layers per subnet before the predictor (4).
        head_channels: Channels of those layers; ``None`` means ``fpn_channels``.
        use_group_norm: GroupNorm (32 groups) after each subnet conv (not in the
            paper; torchvision's v2 model and FCOS use it).
        prior: :math:`\pi` of the classifier's bias initialisation (0.01).
            ``0.5`` gives bias 0, the "standard" initialisation that the paper's
            Sec. 5.1 shows to diverge with cross entropy.
        anchor_preset: Anchor convention, ``AnchorGenerator(convention=...)``
            (``"torchvision"``, ``"detectron2"`` …) or ``None`` for the paper's
            anchors (``AnchorGenerator()`` defaults).
        anchor_sizes: Override of the per-level base sizes (32 … 512).
        anchor_scales: Override of the octave scales :math:`(2^0, 2^{1/3}, 2^{2/3})`.
        anchor_ratios: Override of the aspect ratios (0.5, 1, 2).
        anchor_strides: Override of the nominal per-level strides (8 … 128); an
            entry is an int or a ``(stride_h, stride_w)`` pair.
        derive_anchor_strides: Derive each level's stride from the padded batch as
            torchvision does, ``(H_pad // H_l, W_pad // W_l)`` (e.g. 61 × 64 at P6
            for an 800 × 1088 batch) instead of the nominal strides; see
            :class:`~focal_detect.anchors.AnchorGenerator` ``derive_strides``.
        fg_iou_thresh: IoU at or above which an anchor is foreground (0.5).
        bg_iou_thresh: IoU below which an anchor is background (0.4); in between
            it is ignored.
        allow_low_quality_matches: Also make each box's best anchor(s) foreground.
        low_quality: Low-quality rule, ``"torchvision"`` or ``"mmdetection"`` (see
            :func:`~focal_detect.matching.match_anchors`).
        min_low_quality_iou: Minimum-IoU guard of the low-quality rule (0.0: a box
            overlapping no anchor claims none); ``None`` turns it off, as
            torchvision's ``Matcher`` (such a box then claims every anchor of its
            image).
        crowd_ioa_threshold: Anchors whose intersection over their own area with a
            crowd box (``"iscrowd"``) reaches it are ignored instead of background
            (0.5); ``None`` disables it (crowd boxes are still not matched).
        focal_alpha: :math:`\alpha` (0.25); ``None`` disables the weighting.
        focal_gamma: :math:`\gamma` (2).
        box_loss: ``"smooth_l1"`` (paper, ``smooth_l1_beta``), ``"l1"``
            (torchvision v1) or ``"giou"`` (on decoded boxes).
        smooth_l1_beta: Transition point :math:`\beta` of smooth L1 (0.11).
        box_coder_weights: Weights of the ``(dx, dy, dw, dh)`` codes.
        loss_normalization: ``"batch"`` or ``"image"``, see
            :data:`LOSS_NORMALIZATIONS`.
        normalizer_momentum: EMA momentum of the foreground count
            (``None`` = the batch's count, as the paper).
        distributed: All-reduce the foreground count across processes.
        min_size: Target short side(s); a tuple picks one at random per
            training image (multi-scale), the last one at evaluation.
            ``None`` disables resizing.
        max_size: Upper bound of the long side after resizing.
        pixel_mean: Per-channel mean subtracted from ``[0, 1]`` images.
        pixel_std: Per-channel standard deviation.
        size_divisible: Pad height and width to a multiple of it (128: P7's
            stride, so every level's stride is exact).
        score_thresh: Minimum score of a candidate detection (0.05).
        topk_candidates: Candidates kept per level before NMS (1000).
        nms_thresh: IoU threshold of class-wise NMS (0.5).
        detections_per_img: Detections kept per image after NMS (100).
        channels_last: Run backbone and FPN in ``channels_last`` memory format
            (same math; measured 7 % faster forward + backward for a ResNet-50
            FPN on CPU). The heads stay in the default layout, which was faster
            for their forward + backward there.
        cls_loss: Classification loss, one of :data:`CLS_LOSSES`: ``"focal"``
            (``focal_alpha``, ``focal_gamma``; ``gamma = 0`` is α-balanced cross
            entropy), ``"focal_star"`` (FL* with ``focal_star_gamma``,
            ``focal_star_beta``, and ``focal_alpha`` weighting its positive and
            negative terms; ``None`` as in the paper) or ``"ohem"`` (the focal loss
            with ``focal_alpha``/``focal_gamma``, usually ``gamma = 0`` and
            ``alpha = None``, on the anchors chosen by OHEM only). Every variant
            is divided by the same foreground-count normaliser.
        focal_star_gamma: :math:`\gamma > 0` of FL* (4).
        focal_star_beta: :math:`\beta` of FL* (0).
        ohem_batch_size_per_image: Anchors chosen per image by OHEM (128).
        ohem_positive_fraction: Largest foreground share of OHEM's minibatch
            (0.25, i.e. 1:3); ``None`` for no constraint.
        ohem_nms_thresh: IoU of OHEM's NMS on the anchors with the loss as the
            score; ``None`` (default) skips it.

    Raises:
        ValueError: A field out of range or of the wrong kind (at construction).

    Example:
        >>> cfg = RetinaNetConfig(num_classes=3)
        >>> cfg.fpn_channels, cfg.focal_gamma, cfg.box_loss
        (256, 2.0, 'smooth_l1')
        >>> RetinaNetConfig.tiny(num_classes=3).backbone_depth
        18
    """

    num_classes: int = 80
    backbone_depth: int = 50
    backbone_width: int = 64
    frozen_bn: bool = True
    trainable_layers: int = 3
    fpn_channels: int = 256
    p6_from: str = "c5"
    head_convs: int = 4
    head_channels: int | None = None
    use_group_norm: bool = False
    prior: float = 0.01
    anchor_preset: str | None = None
    anchor_sizes: tuple[float, ...] | None = None
    anchor_scales: tuple[float, ...] | None = None
    anchor_ratios: tuple[float, ...] | None = None
    anchor_strides: tuple[int | tuple[int, int], ...] | None = None
    derive_anchor_strides: bool = False
    fg_iou_thresh: float = 0.5
    bg_iou_thresh: float = 0.4
    allow_low_quality_matches: bool = True
    low_quality: str = "torchvision"
    min_low_quality_iou: float | None = 0.0
    crowd_ioa_threshold: float | None = CROWD_IOA_THRESHOLD
    focal_alpha: float | None = 0.25
    focal_gamma: float = 2.0
    box_loss: str = "smooth_l1"
    smooth_l1_beta: float = 0.11
    box_coder_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    loss_normalization: str = "batch"
    normalizer_momentum: float | None = None
    distributed: bool = False
    min_size: int | tuple[int, ...] | None = 800
    max_size: int = 1333
    pixel_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    pixel_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    size_divisible: int = 128
    score_thresh: float = 0.05
    topk_candidates: int = 1000
    nms_thresh: float = 0.5
    detections_per_img: int = 100
    channels_last: bool = False
    cls_loss: str = "focal"
    focal_star_gamma: float = 4.0
    focal_star_beta: float = 0.0
    ohem_batch_size_per_image: int = 128
    ohem_positive_fraction: float | None = 0.25
    ohem_nms_thresh: float | None = None

    def __post_init__(self) -> None:
        fn = "RetinaNetConfig"
        _positive_int(fn, "num_classes", self.num_classes)
        if self.backbone_depth not in RESNET_DEPTHS:
            raise ValueError(
                f"{fn}: backbone_depth must be one of {sorted(RESNET_DEPTHS)}, got {self.backbone_depth!r}"
            )
        _positive_int(fn, "backbone_width", self.backbone_width)
        if (
            isinstance(self.trainable_layers, bool)
            or not isinstance(self.trainable_layers, int)
            or not 0 <= self.trainable_layers <= 5
        ):
            raise ValueError(
                f"{fn}: trainable_layers must be an int in [0, 5], got {self.trainable_layers!r}"
            )
        _positive_int(fn, "fpn_channels", self.fpn_channels)
        if self.p6_from not in P6_SOURCES:
            raise ValueError(f"{fn}: p6_from must be one of {P6_SOURCES}, got {self.p6_from!r}")
        _positive_int(fn, "head_convs", self.head_convs)
        if self.head_channels is not None:
            _positive_int(fn, "head_channels", self.head_channels)
        if self.use_group_norm and self.channels_for_head % 32:
            raise ValueError(
                f"{fn}: head_channels must be a multiple of 32 with use_group_norm, "
                f"got {self.channels_for_head}"
            )
        _in_range(fn, "prior", self.prior, 1e-12, 1 - 1e-12)
        _in_range(fn, "fg_iou_thresh", self.fg_iou_thresh, 0.0, 1.0)
        _in_range(fn, "bg_iou_thresh", self.bg_iou_thresh, 0.0, 1.0)
        if self.bg_iou_thresh > self.fg_iou_thresh:
            raise ValueError(
                f"{fn}: bg_iou_thresh must be <= fg_iou_thresh ({self.fg_iou_thresh}), "
                f"got {self.bg_iou_thresh}"
            )
        if not isinstance(self.allow_low_quality_matches, bool):
            raise ValueError(
                f"{fn}: allow_low_quality_matches must be a bool, got {self.allow_low_quality_matches!r}"
            )
        if self.low_quality not in LOW_QUALITY_MODES:
            raise ValueError(
                f"{fn}: low_quality must be one of {LOW_QUALITY_MODES}, got {self.low_quality!r}"
            )
        if self.min_low_quality_iou is not None:
            _in_range(fn, "min_low_quality_iou", self.min_low_quality_iou, 0.0, 1.0)
        if self.crowd_ioa_threshold is not None:
            _in_range(fn, "crowd_ioa_threshold", self.crowd_ioa_threshold, 1e-12, 1.0)
        if not isinstance(self.derive_anchor_strides, bool):
            raise ValueError(
                f"{fn}: derive_anchor_strides must be a bool, got {self.derive_anchor_strides!r}"
            )
        try:  # the anchor fields must make a generator (cheap: cell anchors only)
            RetinaNet._make_anchor_generator(self)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{fn}: anchor settings must be valid, got: {e}") from None
        if self.focal_alpha is not None:
            _in_range(fn, "focal_alpha", self.focal_alpha, 0.0, 1.0)
        _in_range(fn, "focal_gamma", self.focal_gamma, 0.0, math.inf)
        if self.box_loss not in BOX_LOSSES:
            raise ValueError(f"{fn}: box_loss must be one of {BOX_LOSSES}, got {self.box_loss!r}")
        _in_range(fn, "smooth_l1_beta", self.smooth_l1_beta, 0.0, math.inf)
        if len(self.box_coder_weights) != 4:
            raise ValueError(f"{fn}: box_coder_weights must have 4 entries, got {self.box_coder_weights!r}")
        if self.loss_normalization not in LOSS_NORMALIZATIONS:
            raise ValueError(
                f"{fn}: loss_normalization must be one of {LOSS_NORMALIZATIONS}, "
                f"got {self.loss_normalization!r}"
            )
        if self.normalizer_momentum is not None:
            _in_range(fn, "normalizer_momentum", self.normalizer_momentum, 0.0, 1.0 - 1e-12)
        if self.min_size is not None:
            sizes = self.min_size if isinstance(self.min_size, tuple) else (self.min_size,)
            if not sizes:
                raise ValueError(f"{fn}: min_size must not be empty, got {self.min_size!r}")
            for s in sizes:
                _positive_int(fn, "min_size", s)
        _positive_int(fn, "max_size", self.max_size)
        for name in ("pixel_mean", "pixel_std"):
            v = getattr(self, name)
            if len(v) != 3:
                raise ValueError(f"{fn}: {name} must have 3 entries, got {v!r}")
        if any(s <= 0 for s in self.pixel_std):
            raise ValueError(f"{fn}: pixel_std must be positive, got {self.pixel_std!r}")
        _positive_int(fn, "size_divisible", self.size_divisible)
        _in_range(fn, "score_thresh", self.score_thresh, 0.0, 1.0)
        _positive_int(fn, "topk_candidates", self.topk_candidates)
        _in_range(fn, "nms_thresh", self.nms_thresh, 0.0, 1.0)
        _positive_int(fn, "detections_per_img", self.detections_per_img)
        if self.cls_loss not in CLS_LOSSES:
            raise ValueError(f"{fn}: cls_loss must be one of {CLS_LOSSES}, got {self.cls_loss!r}")
        _in_range(fn, "focal_star_gamma", self.focal_star_gamma, 1e-12, math.inf)
        if not (
            isinstance(self.focal_star_beta, (int, float)) and math.isfinite(self.focal_star_beta)
        ) or isinstance(self.focal_star_beta, bool):
            raise ValueError(f"{fn}: focal_star_beta must be a finite number, got {self.focal_star_beta!r}")
        _positive_int(fn, "ohem_batch_size_per_image", self.ohem_batch_size_per_image)
        if self.ohem_positive_fraction is not None:
            _in_range(fn, "ohem_positive_fraction", self.ohem_positive_fraction, 0.0, 1.0)
        if self.ohem_nms_thresh is not None:
            _in_range(fn, "ohem_nms_thresh", self.ohem_nms_thresh, 0.0, 1.0)

    @property
    def channels_for_head(self) -> int:
        """Channels of the subnets' hidden convs (``head_channels`` or ``fpn_channels``)."""
        return self.fpn_channels if self.head_channels is None else self.head_channels

    def replace(self, **changes: Any) -> RetinaNetConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def tiny(cls, num_classes: int = 3, **changes: Any) -> RetinaNetConfig:
        """A very small model for tests, doctests and CPU demos.

        ResNet-18 of width 8, 32-channel pyramid and heads with 2 convs, no
        resizing; everything else as the paper.
        """
        base = cls(
            num_classes=num_classes,
            backbone_depth=18,
            backbone_width=8,
            trainable_layers=5,
            fpn_channels=32,
            head_convs=2,
            min_size=None,
        )
        return dataclasses.replace(base, **changes)

    @classmethod
    def torchvision_v1(cls, num_classes: int = 91, **changes: Any) -> RetinaNetConfig:
        r"""Settings of torchvision's ``retinanet_resnet50_fpn`` (v1), exactly.

        Every setting that changes a result, as torchvision 0.29 has it:

        * anchors: the ``"torchvision"`` preset (truncated sizes, rounded corners)
          with strides derived from the padded batch, ``H_pad // H_l`` per axis
          (``derive_anchor_strides=True``; at 800 px P6/P7 step 61/114 px, not 64/128);
        * matching: ``Matcher(0.5, 0.4, allow_low_quality_matches=True)``, i.e. the
          ``"torchvision"`` low-quality rule *without* the minimum-IoU guard
          (``min_low_quality_iou=None``);
        * network: P6 from P5, 4 head convs, prior 0.01;
        * loss: focal loss α = 0.25, γ = 2, L1 box loss on unit-weight codes, both
          normalised per image and averaged over the batch;
        * transform: ImageNet mean/std, resize to ``min_size=800`` /
          ``max_size=1333`` (bilinear), padding to a multiple of 32;
        * post-processing: score 0.05, top 1000 per level, class-wise NMS 0.5,
          300 detections per image.

        torchvision's own ``weights=None`` model uses trainable BatchNorm
        (``frozen_bn=False, trainable_layers=5``); its COCO weights use frozen
        BatchNorm. Use it with
        :func:`focal_detect.models.convert.load_torchvision_retinanet`.
        Crowd boxes (``"iscrowd"``, which torchvision's model does not read) are
        handled as in every configuration of this library; targets without that
        key are treated as torchvision treats them.

        Example:
            >>> cfg = RetinaNetConfig.torchvision_v1()
            >>> cfg.derive_anchor_strides, cfg.min_low_quality_iou, cfg.size_divisible
            (True, None, 32)
        """
        base = cls(
            num_classes=num_classes,
            anchor_preset="torchvision",
            derive_anchor_strides=True,
            min_low_quality_iou=None,
            score_thresh=0.05,
            topk_candidates=1000,
            nms_thresh=0.5,
            min_size=800,
            max_size=1333,
            p6_from="p5",
            box_loss="l1",
            loss_normalization="image",
            size_divisible=32,
            detections_per_img=300,
        )
        return dataclasses.replace(base, **changes)


class RetinaNetHead(nn.Module):
    r"""The classification and box subnets, shared across pyramid levels.

    Each subnet: ``num_convs`` × (3×3 conv, ``channels`` filters, optional
    GroupNorm, ReLU), then a 3×3 predictor with ``A·K`` (classification) or
    ``A·4`` (boxes) filters. Convs are initialised N(0, 0.01) with zero bias
    (:func:`~focal_detect.init.init_conv_`), the classifier's bias to
    :math:`-\log((1 - \pi) / \pi)` (:func:`~focal_detect.init.init_prior_bias_`).

    The per-level output ``(B, A·K, H, W)`` is viewed as ``(B, A, K, H, W)``,
    permuted to ``(B, H, W, A, K)`` and flattened to ``(B, H·W·A, K)``: anchor
    ``(y, x, a)`` is row ``(y·W + x)·A + a``, the order of
    :class:`~focal_detect.anchors.AnchorGenerator` (and torchvision).

    Args:
        num_classes: ``K``.
        num_anchors: ``A`` anchors per location.
        in_channels: Channels of the pyramid levels.
        channels: Hidden channels (default ``in_channels``).
        num_convs: Hidden layers per subnet (4).
        use_group_norm: GroupNorm with 32 groups after each hidden conv.
        prior: :math:`\pi` (0.01).

    Example:
        >>> head = RetinaNetHead(num_classes=2, num_anchors=9, in_channels=8, num_convs=1)
        >>> cls, box = head.forward_levels([torch.zeros(1, 8, 4, 4), torch.zeros(1, 8, 2, 2)])
        >>> [tuple(c.shape) for c in cls], [tuple(b.shape) for b in box]
        ([(1, 144, 2), (1, 36, 2)], [(1, 144, 4), (1, 36, 4)])
        >>> round(float(torch.sigmoid(cls[0][0, 0, 0])), 4)  # the prior
        0.01
    """

    def __init__(
        self,
        num_classes: int,
        num_anchors: int,
        in_channels: int = 256,
        channels: int | None = None,
        num_convs: int = 4,
        use_group_norm: bool = False,
        prior: float = 0.01,
    ) -> None:
        super().__init__()
        fn = "RetinaNetHead"
        _positive_int(fn, "num_classes", num_classes)
        _positive_int(fn, "num_anchors", num_anchors)
        _positive_int(fn, "in_channels", in_channels)
        channels = in_channels if channels is None else _positive_int(fn, "channels", channels)
        _positive_int(fn, "num_convs", num_convs)
        self.num_classes = num_classes
        self.num_anchors = num_anchors

        def subnet() -> nn.Sequential:
            layers: list[nn.Module] = []
            for i in range(num_convs):
                conv = nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1)
                init_conv_(conv, std=0.01)
                layers.append(conv)
                if use_group_norm:
                    layers.append(nn.GroupNorm(32, channels))
                layers.append(nn.ReLU(inplace=True))
            return nn.Sequential(*layers)

        self.cls_subnet = subnet()
        self.box_subnet = subnet()
        self.cls_logits = nn.Conv2d(channels, num_anchors * num_classes, 3, padding=1)
        init_prior_bias_(self.cls_logits, prior=prior, std=0.01)
        self.bbox_pred = nn.Conv2d(channels, num_anchors * 4, 3, padding=1)
        init_conv_(self.bbox_pred, std=0.01)

    @staticmethod
    def _flatten(x: Tensor, last: int) -> Tensor:
        b, _, h, w = x.shape
        return x.view(b, -1, last, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, last)

    def forward_levels(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Per level: class logits ``(B, H_l·W_l·A, K)`` and box deltas ``(B, H_l·W_l·A, 4)``.

        Shape:
            features: ``L`` maps ``(B, C, H_l, W_l)``.
            output: ``L`` tensors ``(B, H_l * W_l * A, K)`` and ``L`` ``(B, H_l * W_l * A, 4)``.
        """
        cls_out, box_out = [], []
        for x in features:
            cls_out.append(self._flatten(self.cls_logits(self.cls_subnet(x)), self.num_classes))
            box_out.append(self._flatten(self.bbox_pred(self.box_subnet(x)), 4))
        return cls_out, box_out

    def forward(self, features: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Class logits ``(B, N, K)`` and box deltas ``(B, N, 4)``, levels concatenated.

        Shape:
            features: ``L`` maps ``(B, C, H_l, W_l)``.
            output: ``(B, N, K)`` and ``(B, N, 4)``, ``N = A * sum(H_l * W_l)``.
        """
        cls_out, box_out = self.forward_levels(features)
        return torch.cat(cls_out, dim=1), torch.cat(box_out, dim=1)


# uint8 images are refused rather than guessed at: dividing by 255 is one convention, the
# model's pixel_mean/pixel_std are for [0, 1] inputs, and a silent scale hides a wrong one.
_UINT8_HINT = " (for uint8 images in [0, 255] pass image.float() / 255)"


class RetinaNet(nn.Module):
    r"""RetinaNet with torchvision's detection interface.

    ``model(images, targets)``:

    * ``images``: a list of ``B`` float tensors ``(3, H_i, W_i)`` with values in
      ``[0, 1]``, or one tensor ``(B, 3, H, W)``. Any floating dtype (float16,
      bfloat16, float32, float64) is cast to the model's parameter dtype at the
      input; integer images (uint8 included) raise ``TypeError``: scale them with
      ``image.float() / 255`` (a silent guess of the value range could be wrong).
    * ``targets`` (training): a list of ``B`` dicts with ``"boxes"`` ``(M_i, 4)``
      in ``(x1, y1, x2, y2)`` pixels of the input image, ``"labels"`` ``(M_i,)``
      of any integer dtype (converted to int64) in ``[0, K)`` and optionally ``"iscrowd"`` ``(M_i,)`` (crowd boxes are
      not matched; anchors inside them are ignored).

    Training mode returns ``{"classification": L_cls, "bbox_regression": L_box}``:

    .. math::

        L_{cls} = \frac{1}{\max(1, N_{fg})} \sum_{i \notin \mathrm{ignored}}
        \sum_{k} \mathrm{FL}(p_{ik}), \qquad
        L_{box} = \frac{1}{\max(1, N_{fg})} \sum_{i \in \mathrm{fg}}
        \ell(\hat d_i, d_i)

    with :math:`N_{fg}` the batch's foreground anchors (or an EMA of it,
    all-reduced when distributed). Evaluation mode returns a list of ``B`` dicts
    with ``"boxes"`` ``(D_i, 4)`` in the original image's pixels, ``"scores"``
    ``(D_i,)`` and ``"labels"`` ``(D_i,)`` int64, sorted by decreasing score.

    Args:
        config: A :class:`RetinaNetConfig`; defaults to the paper's settings with
            80 classes.

    Raises:
        ValueError: Bad images or targets (shape, dtype, non-finite or inverted
            boxes, labels out of range), naming the argument.

    Example:
        >>> model = RetinaNet(RetinaNetConfig.tiny(num_classes=2)).eval()
        >>> out = model([torch.rand(3, 64, 96)])
        >>> sorted(out[0]), out[0]["boxes"].shape[-1]
        (['boxes', 'labels', 'scores'], 4)
        >>> _ = model.train()
        >>> losses = model([torch.rand(3, 64, 96)],
        ...                [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 48.0]]),
        ...                  "labels": torch.tensor([1])}])
        >>> sorted(losses), bool(losses["classification"] > 0)
        (['bbox_regression', 'classification'], True)
    """

    def __init__(self, config: RetinaNetConfig | None = None) -> None:
        super().__init__()
        if config is None:
            config = RetinaNetConfig()
        if not isinstance(config, RetinaNetConfig):
            raise TypeError(f"RetinaNet: config must be a RetinaNetConfig, got {type(config).__name__}")
        self.config = config
        self.backbone = ResNet(
            config.backbone_depth,
            width=config.backbone_width,
            frozen_bn=config.frozen_bn,
            trainable_layers=config.trainable_layers,
        )
        self.fpn = FPN(self.backbone.out_channels, config.fpn_channels, p6_from=config.p6_from)
        self.anchor_generator = self._make_anchor_generator(config)
        self.head = RetinaNetHead(
            config.num_classes,
            self.anchor_generator.num_anchors_per_location,
            in_channels=config.fpn_channels,
            channels=config.channels_for_head,
            num_convs=config.head_convs,
            use_group_norm=config.use_group_norm,
            prior=config.prior,
        )
        self.box_coder = BoxCoder(weights=tuple(config.box_coder_weights))
        self.normalizer = FocalLossNormalizer(
            momentum=config.normalizer_momentum, distributed=config.distributed
        )
        self.register_buffer(
            "pixel_mean", torch.tensor(config.pixel_mean, dtype=torch.float32), persistent=False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(config.pixel_std, dtype=torch.float32), persistent=False
        )
        if config.channels_last:
            self.backbone.to(memory_format=torch.channels_last)
            self.fpn.to(memory_format=torch.channels_last)

    @staticmethod
    def _make_anchor_generator(config: RetinaNetConfig) -> AnchorGenerator:
        overrides: dict[str, Any] = {"derive_strides": config.derive_anchor_strides}
        if config.anchor_strides is not None:
            overrides["strides"] = tuple(config.anchor_strides)
        if config.anchor_sizes is not None:
            overrides["sizes"] = tuple(config.anchor_sizes)
        if config.anchor_scales is not None:
            overrides["scales"] = tuple(config.anchor_scales)
        if config.anchor_ratios is not None:
            overrides["ratios"] = tuple(config.anchor_ratios)
        return AnchorGenerator(convention=config.anchor_preset or "paper", **overrides)

    # ------------------------------------------------------------------ input
    def _check_images(self, images: object) -> list[Tensor] | Tensor:
        fn = "RetinaNet"
        if isinstance(images, Tensor):
            if images.ndim != 4 or images.shape[1] != 3:
                raise ValueError(f"{fn}: images must have shape (B, 3, H, W), got {tuple(images.shape)}")
            if not images.is_floating_point():
                raise TypeError(
                    f"{fn}: images must be a floating-point tensor in [0, 1], got dtype {images.dtype}"
                    + _UINT8_HINT * (images.dtype == torch.uint8)
                )
            if images.shape[0] == 0:
                raise ValueError(f"{fn}: images must hold at least one image, got batch size 0")
            return images.to(self._compute_dtype())
        if not isinstance(images, (list, tuple)) or not images:
            raise TypeError(
                f"{fn}: images must be a non-empty list of (3, H, W) tensors or a (B, 3, H, W) "
                f"tensor, got {type(images).__name__}"
            )
        for i, img in enumerate(images):
            if not isinstance(img, Tensor):
                raise TypeError(f"{fn}: images[{i}] must be a torch.Tensor, got {type(img).__name__}")
            if img.ndim != 3 or img.shape[0] != 3 or img.shape[1] < 1 or img.shape[2] < 1:
                raise ValueError(f"{fn}: images[{i}] must have shape (3, H, W), got {tuple(img.shape)}")
            if not img.is_floating_point():
                raise TypeError(
                    f"{fn}: images[{i}] must be a floating-point tensor in [0, 1], got dtype {img.dtype}"
                    + _UINT8_HINT * (img.dtype == torch.uint8)
                )
        dtype = self._compute_dtype()
        return [img.to(dtype) for img in images]

    def _compute_dtype(self) -> torch.dtype:
        """The parameters' dtype: floating images of any other dtype are cast to it
        (under autocast the parameters stay float32 and autocast casts further)."""
        for p in self.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32

    def _check_targets(self, targets: object, num_images: int) -> list[dict[str, Tensor]]:
        fn = "RetinaNet"
        if not isinstance(targets, (list, tuple)):
            raise TypeError(f"{fn}: targets must be a list of dicts, got {type(targets).__name__}")
        if len(targets) != num_images:
            raise ValueError(f"{fn}: targets must have one dict per image ({num_images}), got {len(targets)}")
        k = self.config.num_classes
        out = []
        for i, t in enumerate(targets):
            if not isinstance(t, Mapping):
                raise TypeError(f"{fn}: targets[{i}] must be a dict, got {type(t).__name__}")
            for key in ("boxes", "labels"):
                if key not in t:
                    raise ValueError(f"{fn}: targets[{i}] must have key {key!r}, got keys {sorted(t)}")
                if not isinstance(t[key], Tensor):
                    raise TypeError(
                        f"{fn}: targets[{i}]['{key}'] must be a torch.Tensor, got {type(t[key]).__name__}"
                    )
            boxes, labels = t["boxes"], t["labels"]
            if boxes.ndim != 2 or boxes.shape[-1] != 4:
                raise ValueError(
                    f"{fn}: targets[{i}]['boxes'] must have shape (M, 4), got {tuple(boxes.shape)}"
                )
            if not boxes.is_floating_point():
                raise TypeError(
                    f"{fn}: targets[{i}]['boxes'] must be a floating-point tensor, got dtype {boxes.dtype}"
                )
            if labels.ndim != 1 or labels.shape[0] != boxes.shape[0]:
                raise ValueError(
                    f"{fn}: targets[{i}]['labels'] must have shape (M,) with M = {boxes.shape[0]}, "
                    f"got {tuple(labels.shape)}"
                )
            if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
                raise TypeError(
                    f"{fn}: targets[{i}]['labels'] must be an integer tensor, got dtype {labels.dtype}"
                )
            crowd = t.get("iscrowd")
            if crowd is not None:
                if not isinstance(crowd, Tensor) or crowd.shape != labels.shape:
                    raise ValueError(
                        f"{fn}: targets[{i}]['iscrowd'] must be a tensor of shape (M,) with "
                        f"M = {boxes.shape[0]}, got {getattr(crowd, 'shape', type(crowd).__name__)}"
                    )
            out.append(dict(t))
        self._check_target_values(out, k)
        return out

    @staticmethod
    def _check_target_values(targets: list[dict[str, Tensor]], k: int) -> None:
        """Finite boxes with ``x2 >= x1, y2 >= y1`` and labels in ``[0, K)``.

        One device synchronisation for the whole batch; only when something is wrong
        are the images inspected one by one to name the first offending one.
        """
        fn = "RetinaNet"
        nonempty = [t for t in targets if t["boxes"].numel()]
        if not nonempty:
            return
        device = nonempty[0]["boxes"].device
        if all(t["boxes"].device == device and t["labels"].device == device for t in nonempty):
            boxes = torch.cat([t["boxes"].float() for t in nonempty])
            labels = torch.cat([t["labels"] for t in nonempty])
            bad = (
                ~torch.isfinite(boxes).all()
                | (boxes[:, 2:] < boxes[:, :2]).any()
                | ((labels < 0) | (labels >= k)).any()
            )
            if not bool(bad):
                return
        for i, t in enumerate(targets):
            boxes, labels = t["boxes"], t["labels"]
            if not boxes.numel():
                continue
            if not bool(torch.isfinite(boxes).all()):
                raise ValueError(f"{fn}: targets[{i}]['boxes'] must be finite, got NaN or infinity")
            if bool((boxes[:, 2:] < boxes[:, :2]).any()):
                j = int((boxes[:, 2:] < boxes[:, :2]).any(1).nonzero()[0, 0])
                raise ValueError(
                    f"{fn}: targets[{i}]['boxes'] must have x2 >= x1 and y2 >= y1, "
                    f"got {boxes[j].tolist()} at row {j}"
                )
            if bool(((labels < 0) | (labels >= k)).any()):
                raise ValueError(
                    f"{fn}: targets[{i}]['labels'] must be in [0, {k}), got "
                    f"min {int(labels.min())}, max {int(labels.max())}"
                )

    def _eval_min_size(self) -> int:
        m = self.config.min_size
        return m[-1] if isinstance(m, tuple) else int(m)  # type: ignore[arg-type]

    def _pick_min_size(self) -> int:
        m = self.config.min_size
        if isinstance(m, tuple) and self.training and len(m) > 1:
            return m[int(torch.randint(len(m), ()).item())]
        return self._eval_min_size()

    def _scale(self, height: int, width: int, min_size: int) -> float:
        return min(min_size / min(height, width), self.config.max_size / max(height, width))

    def preprocess(
        self, images: list[Tensor] | Tensor, targets: list[dict[str, Tensor]] | None = None
    ) -> tuple[Tensor, list[tuple[int, int]], list[tuple[int, int]], list[dict[str, Tensor]] | None]:
        """Normalise, resize and pad; scale target boxes likewise.

        Returns:
            ``(batch, image_sizes, original_sizes, targets)``: the padded batch
            ``(B, 3, H_pad, W_pad)``, each image's ``(height, width)`` after
            resizing and before padding, the input sizes, and targets with
            resized boxes (``None`` if none were given).
        """
        cfg = self.config
        mean = self.pixel_mean.view(-1, 1, 1)
        std = self.pixel_std.view(-1, 1, 1)
        if isinstance(images, Tensor):
            original = [(int(images.shape[-2]), int(images.shape[-1]))] * images.shape[0]
            x = (images - mean.to(images.dtype)) / std.to(images.dtype)
            h, w = original[0]
            scale = None if cfg.min_size is None else self._scale(h, w, self._pick_min_size())
            # Bilinear resampling by exactly 1 is the identity: skip the copy.
            if scale is not None and scale != 1.0:
                x = F.interpolate(
                    x,
                    scale_factor=scale,
                    mode="bilinear",
                    recompute_scale_factor=True,
                    align_corners=False,
                )
            resized = [x]
            sizes = [(int(x.shape[-2]), int(x.shape[-1]))] * x.shape[0]
        else:
            original = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
            resized = []
            for img in images:
                y = (img - mean.to(img.dtype)) / std.to(img.dtype)
                h, w = int(img.shape[-2]), int(img.shape[-1])
                scale = None if cfg.min_size is None else self._scale(h, w, self._pick_min_size())
                if scale is not None and scale != 1.0:
                    y = F.interpolate(
                        y[None],
                        scale_factor=scale,
                        mode="bilinear",
                        recompute_scale_factor=True,
                        align_corners=False,
                    )[0]
                resized.append(y)
            sizes = [(int(y.shape[-2]), int(y.shape[-1])) for y in resized]

        d = cfg.size_divisible
        max_h = max(s[0] for s in sizes)
        max_w = max(s[1] for s in sizes)
        pad_h = int(math.ceil(max_h / d) * d)
        pad_w = int(math.ceil(max_w / d) * d)
        if isinstance(images, Tensor):
            x = resized[0]
            batch = (
                x
                if (pad_h, pad_w) == tuple(x.shape[-2:])
                else F.pad(x, (0, pad_w - x.shape[-1], 0, pad_h - x.shape[-2]))
            )
        else:
            first = resized[0]
            batch = first.new_zeros((len(resized), 3, pad_h, pad_w))
            for i, y in enumerate(resized):
                batch[i, :, : y.shape[-2], : y.shape[-1]].copy_(y)
        if cfg.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)

        if targets is not None:
            new_targets = []
            for t, (h0, w0), (h1, w1) in zip(targets, original, sizes):
                t = dict(t)
                if (h0, w0) != (h1, w1):
                    t["boxes"] = t["boxes"] * self._ratios(t["boxes"], (h0, w0), (h1, w1))
                new_targets.append(t)
            targets = new_targets
        return batch, sizes, original, targets

    @staticmethod
    def _ratios(boxes: Tensor, src: tuple[int, int], dst: tuple[int, int]) -> Tensor:
        """``(4,)`` factors ``(rw, rh, rw, rh)`` mapping ``src`` pixels to ``dst`` pixels,
        each a float32 quotient (as torchvision's ``resize_boxes``)."""
        size = torch.tensor([dst[1], dst[0]], dtype=torch.float32, device=boxes.device)
        size0 = torch.tensor([src[1], src[0]], dtype=torch.float32, device=boxes.device)
        return (size / size0).repeat(2).to(boxes.dtype)

    # ------------------------------------------------------------------ network
    def dense(self, batch: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Backbone, FPN and heads on a pre-processed batch ``(B, 3, H, W)``.

        Returns per-level class logits ``(B, H_l·W_l·A, K)`` and box deltas
        ``(B, H_l·W_l·A, 4)`` for P3 … P7. Static shapes: compiles with
        ``fullgraph=True`` and exports with :func:`torch.export.export`.
        """
        features = self.fpn(self.backbone(batch))
        if self.config.channels_last:
            features = [f.contiguous() for f in features]
        return self.head.forward_levels(features)

    def forward(
        self,
        images: list[Tensor] | Tensor,
        targets: list[dict[str, Tensor]] | None = None,
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Losses in training mode, detections in evaluation mode (see the class).

        Shape:
            images: ``B`` tensors ``(3, H_i, W_i)``, or ``(B, 3, H, W)``.
            output: training: a dict of scalar losses; evaluation: ``B`` dicts with
                ``boxes`` ``(D_i, 4)``, ``scores`` and ``labels`` ``(D_i,)``.
        """
        images = self._check_images(images)
        num_images = images.shape[0] if isinstance(images, Tensor) else len(images)
        if self.training:
            if targets is None:
                raise ValueError("RetinaNet: targets must be given in training mode, got None")
            targets = self._check_targets(targets, num_images)
        batch, sizes, original, targets = self.preprocess(images, targets if self.training else None)
        cls_levels, box_levels = self.dense(batch)
        padded = (int(batch.shape[-2]), int(batch.shape[-1]))
        feature_sizes = self.anchor_generator.feature_sizes_for(padded)  # = the FPN's P3-P7 maps
        if self.training:
            assert targets is not None
            return self.compute_loss(
                torch.cat(cls_levels, dim=1),
                torch.cat(box_levels, dim=1),
                targets,
                feature_sizes,
                image_size=padded,
            )
        return self.postprocess(cls_levels, box_levels, feature_sizes, sizes, original, padded_size=padded)

    def _check_padded_size(self, fn: str, name: str, value: object) -> None:
        if value is None and self.anchor_generator.derive_strides:
            raise ValueError(
                f"{fn}: {name} (the padded batch's (H, W)) must be given when the anchor "
                "strides are derived (derive_anchor_strides=True), got None"
            )

    # ------------------------------------------------------------------ loss
    def compute_loss(
        self,
        cls_logits: Tensor,
        box_deltas: Tensor,
        targets: list[dict[str, Tensor]],
        feature_sizes: Sequence[tuple[int, int]],
        *,
        image_size: tuple[int, int] | None = None,
    ) -> dict[str, Tensor]:
        r"""Focal loss and box loss for a batch.

        Args:
            cls_logits: ``(B, N, K)`` logits, levels concatenated.
            box_deltas: ``(B, N, 4)`` predicted codes.
            targets: Per image ``"boxes"`` ``(M_i, 4)`` in the padded batch's
                pixels, ``"labels"`` ``(M_i,)``, optional ``"iscrowd"``.
            feature_sizes: ``(H_l, W_l)`` of P3 … P7.
            image_size: ``(H_pad, W_pad)`` of the padded batch; required when the
                anchor strides are derived (``derive_anchor_strides``).

        Returns:
            ``{"classification": scalar, "bbox_regression": scalar}``.

        Raises:
            ValueError: ``image_size`` missing with derived anchor strides.
        """
        cfg = self.config
        device = cls_logits.device
        self._check_padded_size("RetinaNet.compute_loss", "image_size", image_size)
        grid = self.anchor_generator(feature_sizes, device=device, dtype=torch.float32, image_size=image_size)
        anchors = grid.boxes
        gt_boxes, gt_labels, crowd_boxes = [], [], []
        any_crowd = False
        for t in targets:
            boxes = t["boxes"].to(device=device, dtype=torch.float32)
            labels = t["labels"].to(device=device, dtype=torch.int64)
            crowd = t.get("iscrowd")
            if crowd is not None and crowd.numel():
                is_crowd = crowd.to(device).bool()
                any_crowd = any_crowd or bool(is_crowd.any())
                crowd_boxes.append(boxes[is_crowd])
                boxes, labels = boxes[~is_crowd], labels[~is_crowd]
            else:
                crowd_boxes.append(boxes.new_zeros((0, 4)))
            gt_boxes.append(boxes)
            gt_labels.append(labels)
        assignment = assign_anchors(
            grid,
            gt_boxes,
            gt_labels,
            high_threshold=cfg.fg_iou_thresh,
            low_threshold=cfg.bg_iou_thresh,
            allow_low_quality_matches=cfg.allow_low_quality_matches,
            low_quality=cfg.low_quality,
            min_low_quality_iou=cfg.min_low_quality_iou,
            crowd_ioa_threshold=cfg.crowd_ioa_threshold,
            box_coder=self.box_coder,
            crowd_boxes=crowd_boxes if any_crowd else None,
        )
        labels, fg = assignment.labels, assignment.foreground
        b, n = labels.shape

        if cfg.loss_normalization == "batch":
            norm = self.normalizer(fg.sum())
            cls_weights = None
            box_weights = None
        else:
            per_image = fg.sum(dim=1).clamp(min=1).to(torch.float32) * b
            norm = torch.ones((), device=device)
            cls_weights = (1.0 / per_image)[:, None].expand(b, n)
            box_weights = cls_weights[fg]

        loss_cls = self.classification_loss(cls_logits, labels, cls_weights, anchors)

        pred = box_deltas[fg].float()  # box losses in float32 (autocast-safe)
        if cfg.box_loss == "giou":
            anchors_fg = anchors.expand(b, n, 4)[fg]
            counts = torch.tensor([g.shape[0] for g in gt_boxes], device=device)
            offsets = torch.cumsum(counts, 0) - counts
            img = torch.arange(b, device=device)[:, None].expand(b, n)[fg]
            flat_gt = torch.cat(gt_boxes, dim=0)
            matched = flat_gt[offsets[img] + assignment.matched_gt[fg]] if flat_gt.numel() else flat_gt
            per_box = giou_loss(self.box_coder.decode(pred, anchors_fg), matched)
        else:
            target = assignment.box_targets[fg].float()
            if cfg.box_loss == "smooth_l1":
                per_box = smooth_l1_loss(pred, target, beta=cfg.smooth_l1_beta).sum(-1)
            else:
                per_box = l1_loss(pred, target).sum(-1)
        if box_weights is not None:
            per_box = per_box * box_weights
        loss_box = per_box.sum()
        return {"classification": loss_cls / norm, "bbox_regression": loss_box / norm}

    def classification_loss(
        self, cls_logits: Tensor, labels: Tensor, weights: Tensor | None, anchors: Tensor
    ) -> Tensor:
        r"""Summed (not yet normalised) classification loss of ``config.cls_loss``.

        ``"focal"``: :func:`~focal_detect.losses.sigmoid_focal_loss_from_labels`.
        ``"focal_star"``: :func:`~focal_detect.losses.sigmoid_focal_loss_star` on the
        one-hot targets, ignored anchors left out. ``"ohem"``: the per-anchor focal
        loss (summed over classes, without gradient) ranks the anchors,
        :func:`~focal_detect.sampling.ohem_sample` chooses each image's minibatch and
        the focal loss is summed over the chosen anchors only. A subclass may
        override this hook to try another loss.

        Args:
            cls_logits: ``(B, N, K)`` logits.
            labels: ``(B, N)`` assigned labels (class, ``BACKGROUND`` or ``IGNORE``).
            weights: Optional ``(B, N)`` per-anchor factors (per-image normalisation).
            anchors: ``(N, 4)`` anchors (boxes of OHEM's optional NMS step).

        Returns:
            Scalar: the sum over anchors and classes.
        """
        cfg = self.config
        if cfg.cls_loss == "focal_star":
            k = cls_logits.shape[-1]
            keep = labels != IGNORE
            onehot = labels[..., None] == torch.arange(k, device=labels.device)
            per = sigmoid_focal_loss_star(
                cls_logits,
                onehot.to(cls_logits.dtype),
                gamma=cfg.focal_star_gamma,
                beta=cfg.focal_star_beta,
                alpha=cfg.focal_alpha,
                check_targets=False,  # a one-hot target, in {0, 1} by construction
            ).sum(-1)
            factor = keep.to(per.dtype) if weights is None else keep.to(per.dtype) * weights.to(per.dtype)
            return (per * factor).sum()
        if cfg.cls_loss == "ohem":
            with torch.no_grad():
                scores = sigmoid_focal_loss_from_labels(
                    cls_logits.detach(), labels, alpha=cfg.focal_alpha, gamma=cfg.focal_gamma
                ).sum(-1)
            chosen = ohem_sample(
                scores,
                labels,
                batch_size_per_image=cfg.ohem_batch_size_per_image,
                positive_fraction=cfg.ohem_positive_fraction,
                boxes=None if cfg.ohem_nms_thresh is None else anchors.expand(labels.shape[0], -1, 4),
                nms_threshold=cfg.ohem_nms_thresh,
            )
            weights = chosen.to(torch.float32) if weights is None else weights * chosen
        return sigmoid_focal_loss_from_labels(
            cls_logits,
            labels,
            weights=weights,
            alpha=cfg.focal_alpha,
            gamma=cfg.focal_gamma,
            reduction="sum",
        )

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def postprocess(
        self,
        cls_levels: Sequence[Tensor],
        box_levels: Sequence[Tensor],
        feature_sizes: Sequence[tuple[int, int]],
        image_sizes: Sequence[tuple[int, int]],
        original_sizes: Sequence[tuple[int, int]] | None = None,
        *,
        padded_size: tuple[int, int] | None = None,
    ) -> list[dict[str, Tensor]]:
        r"""Detections from per-level head outputs, vectorised over the batch.

        1. Per level, the (anchor, class) pairs of each image with score
           :math:`\sigma(x) >` ``score_thresh`` and, among them, the
           ``topk_candidates`` best, computed for all images at once: the best
           pairs lie in the ``topk_candidates`` anchors of highest best-class
           logit, so one max over classes, a top-k over anchors and a top-k over
           those anchors' pairs replace a top-k over all ``H·W·A·K`` logits.
           Only the kept logits are turned into scores.
        2. Their deltas decoded with the box coder, boxes clipped to the image.
        3. Class-wise NMS for the whole batch in one
           :func:`~focal_detect.boxes.batched_nms` call (category
           ``image · K + class``), then the ``detections_per_img`` best per image,
           mapped back to ``original_sizes``.

        Exact shortcut in step 3: a box is suppressed only by higher-scoring
        boxes, so NMS restricted to each image's ``w`` best candidates keeps
        exactly the full run's survivors among them; when that yields at least
        ``detections_per_img`` survivors per image (or nothing was cut), they
        contain the final detections. ``w`` is tried as 2 and 8 times
        ``detections_per_img``, then all candidates. The result is the same as
        torchvision's per-image, per-level loop.

        Args:
            cls_levels: Per level ``(B, N_l, K)`` logits.
            box_levels: Per level ``(B, N_l, 4)`` deltas.
            feature_sizes: ``(H_l, W_l)`` per level.
            image_sizes: Per image ``(height, width)`` the boxes are clipped to.
            original_sizes: Per image size to rescale the boxes to (``None``: no
                rescaling).
            padded_size: ``(H_pad, W_pad)`` of the padded batch; required when the
                anchor strides are derived (``derive_anchor_strides``).

        Returns:
            One dict per image with ``"boxes"`` ``(D, 4)``, ``"scores"`` ``(D,)``,
            ``"labels"`` ``(D,)`` int64, sorted by decreasing score.

        Example:
            >>> model = RetinaNet(RetinaNetConfig.tiny(num_classes=2, detections_per_img=5)).eval()
            >>> with torch.no_grad():
            ...     _ = model.head.cls_logits.bias.fill_(0.0)  # every score ~0.5
            ...     batch, sizes, original, _ = model.preprocess([torch.rand(3, 64, 64)])
            ...     cls, box = model.dense(batch)
            >>> sizes_l = model.anchor_generator.feature_sizes_for((128, 128))
            >>> det = model.postprocess(cls, box, sizes_l, sizes, original)
            >>> det[0]["boxes"].shape, det[0]["labels"].dtype
            (torch.Size([5, 4]), torch.int64)
        """
        cfg = self.config
        b = cls_levels[0].shape[0]
        k = cls_levels[0].shape[-1]
        device = cls_levels[0].device
        self._check_padded_size("RetinaNet.postprocess", "padded_size", padded_size)
        anchor_levels = self.anchor_generator(
            feature_sizes, device=device, dtype=torch.float32, image_size=padded_size
        ).per_level()
        thresh = cfg.score_thresh
        top = cfg.topk_candidates
        image_ids = torch.arange(b, device=device)

        all_boxes, all_scores, all_labels = [], [], []
        for logits, deltas, anchors in zip(cls_levels, box_levels, anchor_levels):
            n_anchors = logits.shape[1]
            if n_anchors > top:
                # The ``top`` best pairs lie in the ``top`` anchors of highest
                # best-class logit: at least ``top`` pairs reach the ``top``-th
                # largest anchor maximum. One pass over the logits instead of a
                # top-k over all H·W·A·K of them.
                cand = logits.amax(dim=-1).topk(top, dim=1, sorted=False).indices  # (B, top)
                sub = torch.gather(logits, 1, cand[..., None].expand(b, top, k))
            else:
                cand = torch.arange(n_anchors, device=device).expand(b, n_anchors)
                sub = logits
            flat = sub.reshape(b, -1).float()
            top_logit, top_idx = flat.topk(min(top, flat.shape[1]), dim=1, sorted=False)
            slot = torch.div(top_idx, k, rounding_mode="floor")
            anchor_idx = torch.gather(cand, 1, slot)
            score = torch.sigmoid(top_logit)
            all_scores.append(torch.where(score > thresh, score, -1.0))  # -1: below threshold
            all_labels.append(top_idx - slot * k)
            d = torch.gather(deltas, 1, anchor_idx[..., None].expand(*anchor_idx.shape, 4))
            all_boxes.append(self.box_coder.decode(d.float(), anchors[anchor_idx]))
        boxes = torch.cat(all_boxes, dim=1)  # (B, C, 4)
        scores = torch.cat(all_scores, dim=1)  # (B, C), -1 where empty
        labels = torch.cat(all_labels, dim=1)
        # Clip each image's boxes to its own size (before padding).
        hw = torch.tensor(image_sizes, dtype=boxes.dtype, device=device)  # (B, 2) as (h, w)
        upper = hw.flip(-1).repeat(1, 2)[:, None, :]  # (B, 1, 4) = (w, h, w, h)
        boxes = torch.minimum(boxes.clamp(min=0), upper)

        limit = cfg.detections_per_img
        n_valid = (scores >= 0).sum(1)
        total = scores.shape[1]
        widths = sorted({min(total, 2 * limit), min(total, 8 * limit), total})
        kept = img_kept = None
        for width in widths:
            s_top, c_top = scores.topk(width, dim=1)  # sorted: best first
            sel = s_top >= 0
            cand_img = image_ids[:, None].expand(b, width)[sel]
            cand_col = c_top[sel]
            cand_boxes = boxes[cand_img, cand_col]
            cand_scores = s_top[sel]
            cand_labels = labels[cand_img, cand_col]
            kept = batched_nms(cand_boxes, cand_scores, cand_img * k + cand_labels, cfg.nms_thresh)
            img_kept = cand_img[kept]
            n_kept = torch.bincount(img_kept, minlength=b)
            if width == total or bool(((n_kept >= limit) | (n_valid <= width)).all()):
                break
        assert kept is not None and img_kept is not None
        # ``kept`` is in decreasing score order; group by image keeping that order.
        order = torch.sort(img_kept, stable=True).indices
        kept, img_kept = kept[order], img_kept[order]
        counts = torch.bincount(img_kept, minlength=b)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(kept.numel(), device=device) - starts[img_kept]
        sel = rank < limit
        kept, img_kept = kept[sel], img_kept[sel]
        out_boxes = cand_boxes[kept]
        if original_sizes is not None and list(map(tuple, original_sizes)) != list(map(tuple, image_sizes)):
            # (w0 / w, h0 / h) per image, each a float32 quotient as torchvision's resize_boxes.
            src = torch.tensor(image_sizes, dtype=torch.float32, device=device).flip(-1)
            dst = torch.tensor(original_sizes, dtype=torch.float32, device=device).flip(-1)
            factors = (dst / src).repeat(1, 2).to(out_boxes.dtype)  # (B, 4)
            out_boxes = out_boxes * factors[img_kept]
        out_scores = cand_scores[kept].to(cls_levels[0].dtype)
        out_labels = cand_labels[kept]
        splits = torch.bincount(img_kept, minlength=b).tolist()
        return [
            {"boxes": bx, "scores": sc, "labels": lb}
            for bx, sc, lb in zip(out_boxes.split(splits), out_scores.split(splits), out_labels.split(splits))
        ]
