r"""Load torchvision RetinaNet weights into :class:`~focal_detect.models.retinanet.RetinaNet`.

torchvision's ``retinanet_resnet50_fpn`` (v1) and this library's model compute the
same function when the model is configured like torchvision's
(the ``"torchvision_v1"`` preset, :data:`~focal_detect.models.presets.PRESETS`: torchvision's anchors with strides derived
from the padded batch, its matcher without the minimum-IoU guard, P6 from P5, L1 box
loss, per-image loss normalisation, resizing to 800 / 1333 and padding to 32, score
0.05, top 1000 per level, NMS 0.5, 300 detections); only parameter names differ. At
torchvision's default sizes the detections agree to 1e-3 px and the losses to 1e-5
relative (``tests/test_torchvision_interop.py``, torchvision 0.29.1). The mapping (``i`` pyramid input, ``j`` hidden conv of a subnet):

=================================================  ===================================
torchvision                                        focal-detect
=================================================  ===================================
``backbone.body.<name>``                           ``backbone.<name>``
``backbone.fpn.inner_blocks.i[.0].*``              ``fpn.lateral.i.*``
``backbone.fpn.layer_blocks.i[.0].*``              ``fpn.output.i.*``
``backbone.fpn.extra_blocks.p6.*`` / ``p7``        ``fpn.p6.*`` / ``fpn.p7.*``
``head.classification_head.conv.j.0.*`` (v1:       ``head.cls_subnet.<j-th conv>.*``
``conv.2j.*``)
``head.classification_head.cls_logits.*``          ``head.cls_logits.*``
``head.regression_head.conv.j.0.*``                ``head.box_subnet.<j-th conv>.*``
``head.regression_head.bbox_reg.*``                ``head.bbox_pred.*``
=================================================  ===================================

Both models order the anchors of a location the same way and lay out the head's
outputs as ``(anchor, class)``, so no weight is permuted. With torchvision's COCO
weights use ``frozen_bn=True`` (the checkpoint's BatchNorm is frozen); a
``weights=None`` torchvision model has trainable BatchNorm: ``frozen_bn=False,
trainable_layers=5``. torchvision's classifier has 91 outputs per anchor for COCO
(background index 0 included, never trained as a class): use ``num_classes=91``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch  # noqa: F401  (doctest namespace)
from torch import Tensor, nn

from focal_detect.models.retinanet import RetinaNet

__all__ = ["convert_torchvision_retinanet", "load_torchvision_retinanet"]

_SIMPLE = (
    ("backbone.body.", "backbone."),
    ("backbone.fpn.extra_blocks.p6.", "fpn.p6."),
    ("backbone.fpn.extra_blocks.p7.", "fpn.p7."),
    ("head.classification_head.cls_logits.", "head.cls_logits."),
    ("head.regression_head.bbox_reg.", "head.bbox_pred."),
)
_FPN = re.compile(r"^backbone\.fpn\.(inner_blocks|layer_blocks)\.(\d+)\.(?:0\.)?(weight|bias)$")
_HEAD_V2 = re.compile(r"^head\.(classification_head|regression_head)\.conv\.(\d+)\.0\.(weight|bias)$")
_HEAD_V1 = re.compile(r"^head\.(classification_head|regression_head)\.conv\.(\d+)\.(weight|bias)$")


def _conv_positions(subnet: nn.Sequential) -> list[int]:
    return [i for i, m in enumerate(subnet) if isinstance(m, nn.Conv2d)]


def convert_torchvision_retinanet(
    state_dict: Mapping[str, Tensor], model: RetinaNet | None = None
) -> dict[str, Tensor]:
    r"""Rename a torchvision RetinaNet ``state_dict`` to this library's names.

    Args:
        state_dict: From ``torchvision.models.detection.retinanet_resnet50_fpn``
            (or any torchvision ``RetinaNet`` on a ``BackboneWithFPN`` of a
            ResNet with ``LastLevelP6P7``); old (v1) and new key layouts.
        model: The target model, used to place the head's hidden convs (their
            positions in ``cls_subnet`` / ``box_subnet`` depend on GroupNorm);
            ``None`` assumes no GroupNorm (conv ``j`` at position ``2j``).

    Returns:
        A new dict with the same tensors under this library's keys.

    Raises:
        ValueError: A key that is not part of a torchvision RetinaNet.

    Example:
        >>> sd = {"backbone.body.conv1.weight": torch.zeros(1),
        ...       "backbone.fpn.inner_blocks.0.0.bias": torch.zeros(1),
        ...       "head.regression_head.conv.3.0.weight": torch.zeros(1)}
        >>> sorted(convert_torchvision_retinanet(sd))
        ['backbone.conv1.weight', 'fpn.lateral.0.bias', 'head.box_subnet.6.weight']
    """
    fn = "convert_torchvision_retinanet"
    if model is not None:
        positions = {
            "classification_head": _conv_positions(model.head.cls_subnet),
            "regression_head": _conv_positions(model.head.box_subnet),
        }
    else:
        positions = {}
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        new = None
        for old_prefix, new_prefix in _SIMPLE:
            if key.startswith(old_prefix):
                new = new_prefix + key[len(old_prefix) :]
                break
        if new is None and (m := _FPN.match(key)):
            block = "lateral" if m.group(1) == "inner_blocks" else "output"
            new = f"fpn.{block}.{m.group(2)}.{m.group(3)}"
        if new is None and ((m := _HEAD_V2.match(key)) or (m2 := _HEAD_V1.match(key))):
            if m is not None:
                j = int(m.group(2))
            else:
                assert m2 is not None
                m = m2
                j = int(m.group(2)) // 2  # v1: Sequential(conv, relu, conv, relu, ...)
            branch = m.group(1)
            sub = "cls_subnet" if branch == "classification_head" else "box_subnet"
            pos = positions[branch][j] if positions else 2 * j
            new = f"head.{sub}.{pos}.{m.group(3)}"
        if new is None:
            raise ValueError(f"{fn}: state_dict must hold torchvision RetinaNet keys, got {key!r}")
        out[new] = value
    return out


def load_torchvision_retinanet(model: RetinaNet, state_dict: Mapping[str, Tensor]) -> None:
    """Load a torchvision RetinaNet ``state_dict`` into ``model`` (strict, in place).

    Keys the torchvision model does not have (the loss normaliser's running
    count) keep their values; ``num_batches_tracked`` is dropped for frozen
    BatchNorm.

    Args:
        model: Configured like the source (see the module docstring).
        state_dict: torchvision parameter names.

    Raises:
        ValueError: Missing or unexpected keys, or a shape mismatch (for example
            a different number of classes or anchors).

    Example:
        >>> from focal_detect.models.config import RetinaNetConfig
        >>> cfg = RetinaNetConfig.preset("tiny", 2, anchors={"convention": "torchvision"}, fpn={"p6_from": "p5"})
        >>> a, b = RetinaNet(cfg), RetinaNet(cfg)
        >>> tv_names = {"head.regression_head.bbox_reg.bias": a.head.bbox_pred.bias.detach() + 1}
        >>> load_torchvision_retinanet(b, tv_names)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ValueError: load_torchvision_retinanet: state_dict must have every key of the model ...
    """
    fn = "load_torchvision_retinanet"
    converted = convert_torchvision_retinanet(state_dict, model)
    own = model.state_dict()
    bad = [
        f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in converted.items()
        if k in own and v.shape != own[k].shape
    ]
    if bad:
        raise ValueError(f"{fn}: state_dict shapes must match the model's, got {bad[:5]}")
    extra = [k for k in own if k not in converted and k.startswith("normalizer.")]
    for k in extra:
        converted[k] = own[k]
    result = model.load_state_dict(converted, strict=False)
    unexpected = [k for k in result.unexpected_keys if not k.endswith("num_batches_tracked")]
    if result.missing_keys or unexpected:
        raise ValueError(
            f"{fn}: state_dict must have every key of the model and no other, got missing "
            f"{list(result.missing_keys)[:5]} and unexpected {unexpected[:5]}"
        )
