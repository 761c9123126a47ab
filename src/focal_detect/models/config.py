r"""The composed configuration of :class:`~focal_detect.models.RetinaNet`.

:class:`RetinaNetConfig` holds ``num_classes`` and one frozen group per part of the
model; each group's field names are the argument names of the component it builds,
so one concept has one spelling across the library:

=============  =====================  ===========================================
group          class                  builds / feeds
=============  =====================  ===========================================
``backbone``   :class:`BackboneConfig`  :class:`~focal_detect.models.backbone.ResNet`
``fpn``        :class:`FPNConfig`       :class:`~focal_detect.models.fpn.FPN`
``head``       :class:`HeadConfig`      :class:`~focal_detect.models.head.RetinaNetHead`
``anchors``    :class:`AnchorConfig`    :class:`~focal_detect.anchors.AnchorGenerator`
``matcher``    :class:`MatcherConfig`   :func:`~focal_detect.matching.assign_anchors`
``coder``      :class:`BoxCoderConfig`  :class:`~focal_detect.coding.BoxCoder`
``loss``       :class:`LossConfig`      the focal / box losses and the normaliser
``transform``  :class:`TransformConfig` resizing, normalisation, padding
``inference``  :class:`InferenceConfig` score threshold, top-k, NMS, cap
=============  =====================  ===========================================

Every group validates itself when it is made; an error names the dotted field
(``RetinaNetConfig.matcher: high_threshold must be a number in [0.0, 1.0], got 1.5``).
Change fields with :meth:`RetinaNetConfig.replace` (a mapping per group is merged into
that group) and start from a named preset with :meth:`RetinaNetConfig.preset`
(:mod:`focal_detect.models.presets`). :meth:`RetinaNetConfig.to_dict` /
:meth:`RetinaNetConfig.from_dict` round-trip through plain dicts (checkpoints, TOML);
:func:`flat_config_to_nested` maps the flat 0.1.0 field names onto the groups.
The group classes live in :mod:`focal_detect.models.groups`.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from focal_detect.models.groups import (
    GROUPS,
    AnchorConfig,
    BackboneConfig,
    BoxCoderConfig,
    FPNConfig,
    HeadConfig,
    InferenceConfig,
    LossConfig,
    MatcherConfig,
    TransformConfig,
)

__all__ = ["FLAT_KEYS", "RetinaNetConfig", "flat_config_to_nested"]

_PREFIX = "RetinaNetConfig"


def _positive_int(fn: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{fn}: {name} must be a positive int, got {value!r}")
    return value


#: 0.1.0's flat ``RetinaNetConfig`` field names and where each lives now
#: (``group.field``); ``anchor_preset`` ``None`` is the ``"paper"`` convention.
FLAT_KEYS: Mapping[str, str] = {
    "num_classes": "num_classes",
    "backbone_depth": "backbone.depth",
    "backbone_width": "backbone.width",
    "frozen_bn": "backbone.frozen_bn",
    "trainable_layers": "backbone.trainable_layers",
    "channels_last": "backbone.channels_last",
    "fpn_channels": "fpn.channels",
    "p6_from": "fpn.p6_from",
    "head_convs": "head.num_convs",
    "head_channels": "head.channels",
    "use_group_norm": "head.use_group_norm",
    "prior": "head.prior",
    "anchor_preset": "anchors.convention",
    "anchor_sizes": "anchors.sizes",
    "anchor_scales": "anchors.scales",
    "anchor_ratios": "anchors.ratios",
    "anchor_strides": "anchors.strides",
    "derive_anchor_strides": "anchors.derive_strides",
    "fg_iou_thresh": "matcher.high_threshold",
    "bg_iou_thresh": "matcher.low_threshold",
    "allow_low_quality_matches": "matcher.allow_low_quality_matches",
    "low_quality": "matcher.low_quality",
    "min_low_quality_iou": "matcher.min_low_quality_iou",
    "crowd_ioa_threshold": "matcher.crowd_ioa_threshold",
    "box_coder_weights": "coder.weights",
    "cls_loss": "loss.cls_loss",
    "focal_alpha": "loss.alpha",
    "focal_gamma": "loss.gamma",
    "focal_star_gamma": "loss.star_gamma",
    "focal_star_beta": "loss.star_beta",
    "box_loss": "loss.box_loss",
    "smooth_l1_beta": "loss.smooth_l1_beta",
    "loss_normalization": "loss.normalization",
    "normalizer_momentum": "loss.normalizer_momentum",
    "distributed": "loss.distributed",
    "ohem_batch_size_per_image": "loss.ohem_batch_size_per_image",
    "ohem_positive_fraction": "loss.ohem_positive_fraction",
    "ohem_nms_thresh": "loss.ohem_nms_threshold",
    "min_size": "transform.min_size",
    "max_size": "transform.max_size",
    "pixel_mean": "transform.pixel_mean",
    "pixel_std": "transform.pixel_std",
    "size_divisible": "transform.size_divisible",
    "score_thresh": "inference.score_threshold",
    "topk_candidates": "inference.topk_candidates",
    "nms_thresh": "inference.nms_threshold",
    "detections_per_img": "inference.detections_per_img",
}


def flat_config_to_nested(flat: Mapping[str, Any], *, where: str = "flat_config_to_nested") -> dict[str, Any]:
    """Map a flat 0.1.0 config dict (``RetinaNetConfig`` before the groups) onto the groups.

    The one place where 0.1.0's names are known: :func:`~focal_detect.models.load_model`
    uses it for checkpoints written by 0.1.0, and ``focal-detect train`` for flat keys in
    a TOML ``[model]`` table (with a ``DeprecationWarning``). Each key moves to the
    field named in :data:`~focal_detect.models.config.FLAT_KEYS`; ``anchor_preset = None`` becomes the ``"paper"``
    convention. Fields absent from the dict keep their defaults (those 0.1.0 did not
    have, such as ``min_low_quality_iou``, default to 0.1.0's behaviour).

    Args:
        flat: ``{0.1.0 field name: value}``.
        where: Prefix of the error message.

    Returns:
        A nested dict for :meth:`RetinaNetConfig.from_dict`.

    Raises:
        ValueError: A key that is no 0.1.0 field.

    Example:
        >>> flat_config_to_nested({"num_classes": 3, "fg_iou_thresh": 0.6, "focal_gamma": 1.0})
        {'num_classes': 3, 'matcher': {'high_threshold': 0.6}, 'loss': {'gamma': 1.0}}
    """
    unknown = sorted(set(flat) - set(FLAT_KEYS))
    if unknown:
        raise ValueError(f"{where}: keys must be 0.1.0 RetinaNetConfig fields, got unknown {unknown}")
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        target = FLAT_KEYS[key]
        if key == "anchor_preset" and value is None:
            value = "paper"
        group, _, name = target.partition(".")
        if name:
            nested.setdefault(group, {})[name] = value
        else:
            nested[group] = value
    return nested


def _unknown_message(where: str, unknown: list[str], expected: list[str]) -> str:
    hints = [f"{k!r} is 0.1.0's name of {FLAT_KEYS[k]!r}" for k in unknown if k in FLAT_KEYS]
    hint = f" ({'; '.join(hints)})" if hints else ""
    return f"{where}: unknown field(s) {unknown}{hint}; expected among {expected}"


def _merge_group(name: str, current: Any, change: object) -> Any:
    cls = GROUPS[name]
    where = f"{_PREFIX}.{name}"
    if isinstance(change, cls):
        return change
    if not isinstance(change, Mapping):
        raise TypeError(
            f"{_PREFIX}: {name} must be a {cls.__name__} or a mapping, got {type(change).__name__}"
        )
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(change) - set(fields))
    if unknown:
        raise ValueError(_unknown_message(where, unknown, fields))
    return dataclasses.replace(current, **change)


@dataclass(frozen=True)
class RetinaNetConfig:
    r"""Every hyper-parameter of :class:`~focal_detect.models.RetinaNet`, in groups; defaults are the paper's.

    Attributes:
        num_classes: ``K`` object classes (no background class: sigmoid outputs).
        backbone: :class:`BackboneConfig`.
        fpn: :class:`FPNConfig`.
        head: :class:`HeadConfig`.
        anchors: :class:`AnchorConfig`.
        matcher: :class:`MatcherConfig`.
        coder: :class:`BoxCoderConfig`.
        loss: :class:`LossConfig`.
        transform: :class:`TransformConfig`.
        inference: :class:`InferenceConfig`.

    Raises:
        ValueError: A field out of range (naming ``RetinaNetConfig.group: field``).
        TypeError: A group of the wrong type.

    Example:
        >>> cfg = RetinaNetConfig(num_classes=3)
        >>> cfg.fpn.channels, cfg.loss.gamma, cfg.matcher.high_threshold
        (256, 2.0, 0.5)
        >>> cfg.replace(matcher={"high_threshold": 0.6}).matcher.high_threshold
        0.6
        >>> RetinaNetConfig.preset("tiny", 3).backbone.depth
        18
    """

    num_classes: int = 80
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    fpn: FPNConfig = field(default_factory=FPNConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    anchors: AnchorConfig = field(default_factory=AnchorConfig)
    matcher: MatcherConfig = field(default_factory=MatcherConfig)
    coder: BoxCoderConfig = field(default_factory=BoxCoderConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    transform: TransformConfig = field(default_factory=TransformConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    def __post_init__(self) -> None:
        _positive_int(_PREFIX, "num_classes", self.num_classes)
        for name, cls in GROUPS.items():
            value = getattr(self, name)
            if not isinstance(value, cls):
                raise TypeError(f"{_PREFIX}: {name} must be a {cls.__name__}, got {type(value).__name__}")
        if self.head.use_group_norm and self.channels_for_head % 32:
            raise ValueError(
                f"{_PREFIX}.head: channels must be a multiple of 32 with use_group_norm, "
                f"got {self.channels_for_head}"
            )
        strides = self.anchors.strides
        if strides is not None and [(s, s) if isinstance(s, int) else tuple(s) for s in strides] != [
            (2**level, 2**level) for level in range(3, 8)
        ]:
            # The anchors must sit on the FPN's P3-P7 maps, whose strides are fixed.
            raise ValueError(
                f"{_PREFIX}.anchors: strides must be the pyramid's (8, 16, 32, 64, 128) on both axes, "
                "the strides of the model's P3-P7 maps (derive_strides=True gives torchvision's "
                f"per-batch strides), got {strides!r}"
            )

    @property
    def channels_for_head(self) -> int:
        """Channels of the subnets' hidden convs (``head.channels`` or ``fpn.channels``)."""
        return self.fpn.channels if self.head.channels is None else self.head.channels

    def replace(self, **changes: Any) -> RetinaNetConfig:
        """A copy with some fields changed (validated again).

        Args:
            **changes: ``num_classes``, or a group name with either a mapping of
                that group's fields (merged into the current group) or a whole group.

        Raises:
            ValueError: An unknown group or field (a 0.1.0 flat name is pointed to
                its new place).

        Example:
            >>> cfg = RetinaNetConfig().replace(num_classes=3, loss={"box_loss": "giou"})
            >>> cfg.num_classes, cfg.loss.box_loss, cfg.loss.gamma
            (3, 'giou', 2.0)
            >>> RetinaNetConfig().replace(fg_iou_thresh=0.6)
            Traceback (most recent call last):
            ...
            ValueError: RetinaNetConfig: unknown field(s) ['fg_iou_thresh'] ('fg_iou_thresh' is 0.1.0's name of 'matcher.high_threshold'); expected among ['num_classes', 'backbone', 'fpn', 'head', 'anchors', 'matcher', 'coder', 'loss', 'transform', 'inference']
        """
        expected = ["num_classes", *GROUPS]
        unknown = sorted(set(changes) - set(expected))
        if unknown:
            raise ValueError(_unknown_message(_PREFIX, unknown, expected))
        new = {k: _merge_group(k, getattr(self, k), v) for k, v in changes.items() if k in GROUPS}
        if "num_classes" in changes:
            new["num_classes"] = changes["num_classes"]
        return dataclasses.replace(self, **new)

    @classmethod
    def preset(cls, name: str, num_classes: int | None = None, **changes: Any) -> RetinaNetConfig:
        """A named configuration (see :data:`~focal_detect.models.presets.PRESETS`) plus changes.

        Args:
            name: ``"paper"``, ``"torchvision_v1"``, ``"demo"`` or ``"tiny"``.
            num_classes: ``K``; ``None`` keeps the preset's own (80, 91, 5, 3).
            **changes: As :meth:`replace`.

        Example:
            >>> cfg = RetinaNetConfig.preset("torchvision_v1", transform={"min_size": 512})
            >>> cfg.num_classes, cfg.anchors.convention, cfg.transform.min_size
            (91, 'torchvision', 512)
        """
        from focal_detect.models.presets import preset_config

        return preset_config(name, num_classes, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The nested plain-dict form (checkpoints, JSON); :meth:`from_dict` inverts it.

        Example:
            >>> RetinaNetConfig(num_classes=3).to_dict()["matcher"]["low_threshold"]
            0.4
        """
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RetinaNetConfig:
        """A config from :meth:`to_dict`'s nested form, or from a flat 0.1.0 dict.

        A dict whose keys are all 0.1.0 field names (and not a group name) is mapped
        with :func:`flat_config_to_nested`. Missing groups and fields keep their
        defaults; lists become tuples.

        Raises:
            ValueError: Unknown keys, naming the dotted path.

        Example:
            >>> cfg = RetinaNetConfig(num_classes=3, loss=LossConfig(gamma=1.0))
            >>> RetinaNetConfig.from_dict(cfg.to_dict()) == cfg
            True
            >>> RetinaNetConfig.from_dict({"num_classes": 3, "score_thresh": 0.1}).inference.score_threshold
            0.1
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"{_PREFIX}.from_dict: data must be a mapping, got {type(data).__name__}")
        if (
            data
            and not set(data) & set(GROUPS)
            and set(data) <= set(FLAT_KEYS)
            and set(data) != {"num_classes"}
        ):
            data = flat_config_to_nested(data, where=f"{_PREFIX}.from_dict")
        return cls().replace(**data)

    @classmethod
    def tiny(cls, num_classes: int = 3, **flat_changes: Any) -> RetinaNetConfig:
        """Deprecated: ``RetinaNetConfig.preset("tiny", num_classes, ...)``.

        ``flat_changes`` are 0.1.0 field names (mapped by :func:`flat_config_to_nested`).

        Example:
            >>> import warnings
            >>> with warnings.catch_warnings():
            ...     warnings.simplefilter("ignore")
            ...     RetinaNetConfig.tiny(2, fpn_channels=16).fpn.channels
            16
        """
        return cls._deprecated_preset("tiny", num_classes, flat_changes)

    @classmethod
    def torchvision_v1(cls, num_classes: int = 91, **flat_changes: Any) -> RetinaNetConfig:
        """Deprecated: ``RetinaNetConfig.preset("torchvision_v1", num_classes, ...)``.

        Example:
            >>> import warnings
            >>> with warnings.catch_warnings():
            ...     warnings.simplefilter("ignore")
            ...     RetinaNetConfig.torchvision_v1().anchors.derive_strides
            True
        """
        return cls._deprecated_preset("torchvision_v1", num_classes, flat_changes)

    @classmethod
    def _deprecated_preset(
        cls, name: str, num_classes: int, flat_changes: Mapping[str, Any]
    ) -> RetinaNetConfig:
        warnings.warn(
            f"RetinaNetConfig.{name}(...) is deprecated; use RetinaNetConfig.preset({name!r}, num_classes, "
            "group={field: value}) (flat 0.1.0 field names: see FLAT_KEYS)",
            DeprecationWarning,
            stacklevel=3,
        )
        nested = flat_config_to_nested(flat_changes, where=f"{_PREFIX}.{name}")
        return cls.preset(name, nested.pop("num_classes", num_classes), **nested)
