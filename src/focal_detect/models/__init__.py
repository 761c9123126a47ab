"""The reference RetinaNet built from focal-detect's public pieces.

Not imported by ``import focal_detect``; import it explicitly::

    from focal_detect.models import RetinaNet, RetinaNetConfig, build_model

Modules: :mod:`~focal_detect.models.config` (the composed :class:`RetinaNetConfig`),
:mod:`~focal_detect.models.presets` (``paper``, ``torchvision_v1``, ``demo``, ``tiny``),
:mod:`~focal_detect.models.retinanet` (the model), :mod:`~focal_detect.models.head`,
:mod:`~focal_detect.models.backbone`, :mod:`~focal_detect.models.fpn`,
:mod:`~focal_detect.models.inputs` (input checks), :mod:`~focal_detect.models.io`
(``build_model``, ``save_model``, ``load_model``), :mod:`~focal_detect.models.convert`
(torchvision weights) and :mod:`~focal_detect.models.export` (ONNX).
"""

from __future__ import annotations

from focal_detect.models.backbone import FrozenBatchNorm2d, ResNet, load_resnet_state_dict
from focal_detect.models.config import RetinaNetConfig, flat_config_to_nested
from focal_detect.models.convert import convert_torchvision_retinanet, load_torchvision_retinanet
from focal_detect.models.export import RetinaNetInference, export_onnx
from focal_detect.models.fpn import FPN
from focal_detect.models.groups import (
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
from focal_detect.models.head import RetinaNetHead
from focal_detect.models.io import MODEL_FORMAT, build_model, load_model, save_model
from focal_detect.models.presets import PRESETS
from focal_detect.models.retinanet import RetinaNet

__all__ = [
    "FPN",
    "MODEL_FORMAT",
    "PRESETS",
    "AnchorConfig",
    "BackboneConfig",
    "BoxCoderConfig",
    "FPNConfig",
    "FrozenBatchNorm2d",
    "HeadConfig",
    "InferenceConfig",
    "LossConfig",
    "MatcherConfig",
    "ResNet",
    "RetinaNet",
    "RetinaNetConfig",
    "RetinaNetHead",
    "RetinaNetInference",
    "TransformConfig",
    "build_model",
    "convert_torchvision_retinanet",
    "export_onnx",
    "flat_config_to_nested",
    "load_model",
    "load_resnet_state_dict",
    "load_torchvision_retinanet",
    "save_model",
]
