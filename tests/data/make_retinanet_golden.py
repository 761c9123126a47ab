"""Write ``tests/data/retinanet_tv_golden.pt``: a torchvision RetinaNet, its input and outputs.

Run once from the repository root with the peer environment (torchvision installed):

    ~/peer-venv/bin/python tests/data/make_retinanet_golden.py

The network is built the way ``torchvision.models.detection.retinanet_resnet50_fpn``
(v1) builds its own, from torchvision's classes: a ResNet-50 trunk (``Bottleneck``,
blocks 3-4-6-3) returning layers 2-4, a ``BackboneWithFPN`` with
``LastLevelP6P7(C, C)`` (P6 from P5), the default RetinaNet anchor generator and head,
and ``weights=None`` behaviour (plain ``BatchNorm2d``, every layer trainable). Only the
widths are reduced so the file stays small: stem width 8 instead of 64 (every stage
scaled by 1/8) and ``C = 32`` pyramid/head channels instead of 256.

Random weights are made informative: BatchNorm statistics and affine parameters are
randomised (so evaluation differs from training), and the classifier's weights and
bias are raised so that thousands of scores pass 0.05 (so top-k, NMS and the
detection cap are exercised).

Stored (``torch.load(..., weights_only=True)`` compatible): ``state_dict`` (torchvision
key names), ``images`` (three images of different sizes), ``targets`` (one image
without boxes), ``detections`` (eval mode), ``losses`` (train mode, after the eval
pass), the settings needed to build the same model, and the versions used.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.retinanet import RetinaNet
from torchvision.models.resnet import Bottleneck, ResNet
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

OUT = Path(__file__).resolve().parent / "retinanet_tv_golden.pt"

WIDTH = 8  # stem channels (64 in ResNet-50)
CHANNELS = 32  # FPN / head channels (256 in the paper)
NUM_CLASSES = 4
MIN_SIZE, MAX_SIZE = 200, 256


def slim_resnet50(width: int) -> ResNet:
    """torchvision's ResNet-50 with every stage's width scaled by ``width / 64``."""

    class SlimResNet(ResNet):
        def _make_layer(self, block, planes, blocks, stride=1, dilate=False):  # type: ignore[no-untyped-def]
            if planes == 64:  # first stage: the stem now has ``width`` channels
                self.inplanes = width
            return super()._make_layer(block, planes * width // 64, blocks, stride, dilate)

    net = SlimResNet(Bottleneck, [3, 4, 6, 3])
    net.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    return net


def main() -> None:
    torch.manual_seed(0)
    trunk = slim_resnet50(WIDTH)
    c3 = WIDTH * 2 * Bottleneck.expansion
    backbone = BackboneWithFPN(
        trunk,
        return_layers={"layer2": "0", "layer3": "1", "layer4": "2"},
        in_channels_list=[c3, 2 * c3, 4 * c3],
        out_channels=CHANNELS,
        extra_blocks=LastLevelP6P7(CHANNELS, CHANNELS),
    )
    model = RetinaNet(backbone, NUM_CLASSES, min_size=MIN_SIZE, max_size=MAX_SIZE)

    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
        cls = model.head.classification_head.cls_logits
        cls.weight.normal_(0.0, 0.5, generator=g)
        cls.bias.normal_(-3.5, 0.5, generator=g)
        reg = model.head.regression_head.bbox_reg
        reg.weight.normal_(0.0, 0.05, generator=g)

    images = [
        torch.rand(3, 100, 140, generator=g),
        torch.rand(3, 120, 90, generator=g),
        torch.rand(3, 128, 128, generator=g),
    ]
    targets = [
        {
            "boxes": torch.tensor(
                [[10.0, 12.0, 60.0, 70.0], [70.0, 20.0, 130.0, 90.0], [5.0, 5.0, 25.0, 20.0]]
            ),
            "labels": torch.tensor([0, 3, 1]),
        },
        {"boxes": torch.tensor([[20.0, 30.0, 80.0, 110.0]]), "labels": torch.tensor([2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    state_dict = {k: v.clone() for k, v in model.state_dict().items()}

    model.eval()
    with torch.no_grad():
        detections = model([im.clone() for im in images])
    model.train()
    losses = model([im.clone() for im in images], [{k: v.clone() for k, v in t.items()} for t in targets])

    record = {
        "state_dict": state_dict,
        "images": images,
        "targets": targets,
        "detections": [{k: v.detach().clone() for k, v in d.items()} for d in detections],
        "losses": {k: v.detach().clone() for k, v in losses.items()},
        "settings": {
            "backbone_depth": 50,
            "backbone_width": WIDTH,
            "fpn_channels": CHANNELS,
            "num_classes": NUM_CLASSES,
            "min_size": MIN_SIZE,
            "max_size": MAX_SIZE,
            "detections_per_img": model.detections_per_img,
            "topk_candidates": model.topk_candidates,
            "score_thresh": model.score_thresh,
            "nms_thresh": model.nms_thresh,
        },
        "versions": {"torch": str(torch.__version__), "torchvision": str(torchvision.__version__)},
        "call": "torchvision.models.detection.RetinaNet(BackboneWithFPN(slim ResNet-50, "
        "layers 2-4, LastLevelP6P7(32, 32), out_channels=32), num_classes=4, "
        "min_size=200, max_size=256)",
    }
    torch.save(record, OUT)
    n_det = [int(d["boxes"].shape[0]) for d in detections]
    print(
        f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB); detections per image {n_det}; "
        f"losses { {k: round(float(v.detach()), 5) for k, v in losses.items()} }"
    )


if __name__ == "__main__":
    main()
