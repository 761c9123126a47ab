"""The reference RetinaNet built from focal-detect's public pieces.

Not imported by ``import focal_detect``; import it explicitly::

    from focal_detect.models import RetinaNet, RetinaNetConfig
"""

from __future__ import annotations

from focal_detect.models.backbone import FrozenBatchNorm2d, ResNet, load_resnet_state_dict
from focal_detect.models.convert import convert_torchvision_retinanet, load_torchvision_retinanet
from focal_detect.models.export import RetinaNetInference, export_onnx
from focal_detect.models.fpn import FPN
from focal_detect.models.retinanet import RetinaNet, RetinaNetConfig, RetinaNetHead

__all__ = [
    "FPN",
    "FrozenBatchNorm2d",
    "ResNet",
    "RetinaNet",
    "RetinaNetConfig",
    "RetinaNetHead",
    "RetinaNetInference",
    "convert_torchvision_retinanet",
    "export_onnx",
    "load_resnet_state_dict",
    "load_torchvision_retinanet",
]
