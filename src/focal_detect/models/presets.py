r"""Named model configurations: the one place where presets are defined.

======================  ====  ===============================================================
name                    K     what
======================  ====  ===============================================================
``"paper"``             80    :class:`~focal_detect.models.RetinaNetConfig` defaults: the paper
``"torchvision_v1"``    91    torchvision's ``retinanet_resnet50_fpn`` (v1), exactly
``"demo"``              5     the small CPU model of ``focal-detect demo``
``"tiny"``              3     a very small model for tests and doctests
======================  ====  ===============================================================

:meth:`RetinaNetConfig.preset(name, num_classes, **changes)
<focal_detect.models.RetinaNetConfig.preset>` builds one (``changes`` as
:meth:`~focal_detect.models.RetinaNetConfig.replace`); :data:`PRESETS` lists them;
``focal-detect train --preset NAME`` and a TOML ``[model] preset = "NAME"`` use the same
registry, and so does :func:`~focal_detect.models.build_model`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from focal_detect.models.config import RetinaNetConfig
from focal_detect.models.groups import (
    AnchorConfig,
    BackboneConfig,
    FPNConfig,
    HeadConfig,
    InferenceConfig,
    LossConfig,
    MatcherConfig,
    TransformConfig,
)

__all__ = ["PRESETS", "Preset", "preset_config"]


@dataclass(frozen=True)
class Preset:
    """One named configuration.

    Attributes:
        name: The registry key.
        num_classes: ``K`` used when the caller gives none.
        summary: One line for listings (``focal-detect train --help``).
        build: ``build(num_classes) -> RetinaNetConfig``.
    """

    name: str
    num_classes: int
    summary: str
    build: Callable[[int], RetinaNetConfig]


def _paper(num_classes: int) -> RetinaNetConfig:
    return RetinaNetConfig(num_classes=num_classes)


def _tiny(num_classes: int) -> RetinaNetConfig:
    """ResNet-18 of width 8, 32-channel pyramid and heads with 2 convs, no resizing;
    everything else as the paper."""
    return RetinaNetConfig(
        num_classes=num_classes,
        backbone=BackboneConfig(depth=18, width=8, trainable_layers=5),
        fpn=FPNConfig(channels=32),
        head=HeadConfig(num_convs=2),
        transform=TransformConfig(min_size=None),
    )


def _demo(num_classes: int) -> RetinaNetConfig:
    """``focal-detect demo``'s CPU model (deviations from the paper listed by the demo):
    slim ResNet-18 trained from scratch, 64-channel FPN and 2-conv GroupNorm heads,
    anchors of 12-192 px, GIoU box loss, 128-px images without resizing."""
    return RetinaNetConfig(
        num_classes=num_classes,
        backbone=BackboneConfig(depth=18, width=16, frozen_bn=False, trainable_layers=5),
        fpn=FPNConfig(channels=64),
        head=HeadConfig(num_convs=2, channels=64, use_group_norm=True),
        anchors=AnchorConfig(sizes=(12.0, 24.0, 48.0, 96.0, 192.0)),
        loss=LossConfig(box_loss="giou"),
        transform=TransformConfig(min_size=None, size_divisible=128),
    )


def _torchvision_v1(num_classes: int) -> RetinaNetConfig:
    r"""Settings of torchvision's ``retinanet_resnet50_fpn`` (v1), exactly.

    Every setting that changes a result, as torchvision 0.29 has it:

    * anchors: the ``"torchvision"`` convention (truncated sizes, rounded corners)
      with strides derived from the padded batch, ``H_pad // H_l`` per axis
      (``anchors.derive_strides``; at 800 px P6/P7 step 61/114 px, not 64/128);
    * matching: ``Matcher(0.5, 0.4, allow_low_quality_matches=True)``, i.e. the
      ``"torchvision"`` low-quality rule *without* the minimum-IoU guard
      (``matcher.min_low_quality_iou=None``);
    * network: P6 from P5, 4 head convs, prior 0.01;
    * loss: focal loss α = 0.25, γ = 2, L1 box loss on unit-weight codes, both
      normalised per image and averaged over the batch;
    * transform: ImageNet mean/std, resize to ``min_size=800`` / ``max_size=1333``
      (bilinear), padding to a multiple of 32;
    * post-processing: score 0.05, top 1000 per level, class-wise NMS 0.5, 300
      detections per image.

    torchvision's own ``weights=None`` model uses trainable BatchNorm
    (``backbone={"frozen_bn": False, "trainable_layers": 5}``); its COCO weights use
    frozen BatchNorm. Use it with
    :func:`focal_detect.models.convert.load_torchvision_retinanet`. Crowd boxes
    (``"iscrowd"``, which torchvision's model does not read) are handled as in every
    configuration of this library; targets without that key are treated as
    torchvision treats them.
    """
    return RetinaNetConfig(
        num_classes=num_classes,
        fpn=FPNConfig(p6_from="p5"),
        anchors=AnchorConfig(convention="torchvision", derive_strides=True),
        matcher=MatcherConfig(min_low_quality_iou=None),
        loss=LossConfig(box_loss="l1", normalization="image"),
        transform=TransformConfig(min_size=800, max_size=1333, size_divisible=32),
        inference=InferenceConfig(
            score_threshold=0.05, topk_candidates=1000, nms_threshold=0.5, detections_per_img=300
        ),
    )


#: The registry: ``name -> Preset`` (read-only).
PRESETS: Mapping[str, Preset] = MappingProxyType(
    {
        "paper": Preset("paper", 80, "the paper's RetinaNet (ResNet-50 FPN, 800 px)", _paper),
        "torchvision_v1": Preset(
            "torchvision_v1", 91, "torchvision's retinanet_resnet50_fpn (v1), exactly", _torchvision_v1
        ),
        "demo": Preset("demo", 5, "focal-detect demo's small CPU model", _demo),
        "tiny": Preset("tiny", 3, "a very small model for tests and doctests", _tiny),
    }
)


def preset_config(name: str, num_classes: int | None = None, **changes: Any) -> RetinaNetConfig:
    r"""The configuration of preset ``name`` with ``num_classes`` and ``changes``.

    This is :meth:`RetinaNetConfig.preset <focal_detect.models.RetinaNetConfig.preset>`.

    Args:
        name: A key of :data:`PRESETS`.
        num_classes: ``K``; ``None`` keeps the preset's own.
        **changes: ``group={field: value}`` or ``group=GroupConfig(...)``, as
            :meth:`~focal_detect.models.RetinaNetConfig.replace`.

    Raises:
        ValueError: Unknown ``name`` or a bad change.

    Example:
        >>> sorted(PRESETS)
        ['demo', 'paper', 'tiny', 'torchvision_v1']
        >>> cfg = preset_config("tiny", 2, transform={"size_divisible": 32})
        >>> cfg.num_classes, cfg.transform.size_divisible, cfg.fpn.channels
        (2, 32, 32)
        >>> preset_config("huge")
        Traceback (most recent call last):
        ...
        ValueError: RetinaNetConfig.preset: name must be one of ['paper', 'torchvision_v1', 'demo', 'tiny'], got 'huge'
    """
    if name not in PRESETS:
        raise ValueError(f"RetinaNetConfig.preset: name must be one of {list(PRESETS)}, got {name!r}")
    p = PRESETS[name]
    cfg = p.build(p.num_classes if num_classes is None else num_classes)
    return cfg.replace(**changes) if changes else cfg
