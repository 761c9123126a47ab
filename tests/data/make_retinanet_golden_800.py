"""Write ``tests/data/retinanet_tv_golden_800.pt``: torchvision RetinaNet at its default sizes.

Run once from the repository root with the peer environment (torchvision installed):

    OMP_NUM_THREADS=1 ~/peer-venv/bin/python tests/data/make_retinanet_golden_800.py

(one intra-op thread: the test compares at one thread, see its ``_one_thread`` fixture)

Same slim network as ``make_retinanet_golden.py`` (torchvision's own classes: a ResNet-50
trunk with every stage's width scaled by 1/8, ``BackboneWithFPN`` with
``LastLevelP6P7(32, 32)``, the default RetinaNet anchor generator, head and matcher,
trainable BatchNorm as ``weights=None``), but with torchvision's *default* transform
``min_size=800, max_size=1333, size_divisible=32``. Padded sides are then multiples of 32,
not of 128, so torchvision's anchor strides at P6/P7 (``image_size // feature_size``) are
not the nominal 64/128: this is the case the file pins down.

Cases (``cases``: name, mode, image shapes, targets): the four COCO-like shapes 480x640,
427x640, 640x480, 375x500, one image each, in eval mode (detections) and train mode
(losses); a 2-image batch of different sizes (427x640 + 640x480: padded 1088x1216) in
both modes; and, in train mode, an image with a box that overlaps no anchor (torchvision's
``Matcher`` has no minimum-IoU guard: every anchor of that image becomes foreground).

Images are not stored: ``image(h, w, seed)`` below is an integer hash (exact on every
platform) and the file keeps its checksum. Random weights are made informative as in
the other generator: BatchNorm statistics and affine parameters randomised, the
classifier's weights and bias raised so that thousands of scores pass 0.05.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

# torchvision is imported in the functions that build the model: the test imports
# ``image`` and ``cases`` from here without it.

OUT = Path(__file__).resolve().parent / "retinanet_tv_golden_800.pt"

WIDTH = 8  # stem channels (64 in ResNet-50)
CHANNELS = 32  # FPN / head channels (256 in torchvision)
NUM_CLASSES = 20
SHAPES = [(480, 640), (427, 640), (640, 480), (375, 500)]


def image(h: int, w: int, seed: int) -> torch.Tensor:
    """A ``(3, h, w)`` float image in ``[0, 1]`` from an integer hash (uint8 values / 255)."""
    c = torch.arange(3, dtype=torch.int64)[:, None, None]
    y = torch.arange(h, dtype=torch.int64)[None, :, None]
    x = torch.arange(w, dtype=torch.int64)[None, None, :]
    v = (x * 7919 + y * 104729 + c * 1299709 + seed * 15485863) % 2147483647
    v = (v * v) % 1000003
    # a smooth part too (blobs the backbone responds to), all in integers
    smooth = ((x // 16 + y // 16 + c * 3 + seed) % 8) * 24
    return ((v % 64 + smooth) % 256).to(torch.uint8).float() / 255.0


def targets_for(h: int, w: int, n: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    wh = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.5, h * 0.5]) + 8.0
    xy = torch.rand(n, 2, generator=g) * (torch.tensor([float(w), float(h)]) - wh)
    boxes = torch.cat([xy, xy + wh], dim=1).round()
    # and one large object (matched at P6/P7, where the derived strides differ)
    big = torch.tensor([[0.1 * w, 0.15 * h, 0.95 * w, 0.9 * h]]).round()
    labels = torch.randint(0, NUM_CLASSES, (n + 1,), generator=g)
    return {"boxes": torch.cat([boxes, big]), "labels": labels}


def cases() -> list[dict]:
    out = []
    for k, (h, w) in enumerate(SHAPES):
        out.append(
            {
                "name": f"{h}x{w}",
                "shapes": [(h, w)],
                "seeds": [k],
                "targets": [targets_for(h, w, 3 + k, 100 + k)],
            }
        )
    out.append(
        {
            "name": "batch 427x640+640x480",
            "shapes": [SHAPES[1], SHAPES[2]],
            "seeds": [11, 12],
            "targets": [targets_for(*SHAPES[1], 4, 201), targets_for(*SHAPES[2], 2, 202)],
        }
    )
    far = targets_for(375, 500, 2, 301)
    far["boxes"] = torch.cat([far["boxes"], torch.tensor([[9000.0, 9000.0, 9010.0, 9012.0]])])
    far["labels"] = torch.cat([far["labels"], torch.tensor([5])])
    out.append(
        {
            "name": "375x500, box off every anchor (train only)",
            "shapes": [(375, 500)],
            "seeds": [21],
            "targets": [far],
            "train_only": True,
        }
    )
    return out


def main() -> None:
    import torchvision

    # The same slim trunk as the first golden (that script imports torchvision at the top,
    # so it is imported here, not where the tests import this file's torch-only helpers).
    from make_retinanet_golden import slim_resnet50
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.retinanet import RetinaNet
    from torchvision.models.resnet import Bottleneck
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

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
    model = RetinaNet(backbone, NUM_CLASSES)  # torchvision's defaults: 800 / 1333 / 32
    assert model.transform.min_size == (800,) and model.transform.max_size == 1333
    assert model.transform.size_divisible == 32

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
        cls.bias.normal_(-4.0, 0.5, generator=g)
        reg = model.head.regression_head.bbox_reg
        reg.weight.normal_(0.0, 0.05, generator=g)
    state_dict = {k: v.clone() for k, v in model.state_dict().items()}

    records = []
    for case in cases():
        images = [image(h, w, s) for (h, w), s in zip(case["shapes"], case["seeds"])]
        rec = {k: v for k, v in case.items()}
        rec["image_sums"] = [float(im.double().sum()) for im in images]
        if not case.get("train_only"):
            model.load_state_dict(state_dict)
            model.eval()
            with torch.no_grad():
                dets = model([im.clone() for im in images])
            rec["detections"] = [{k: v.clone() for k, v in d.items()} for d in dets]
        model.load_state_dict(state_dict)
        model.train()
        losses = model(
            [im.clone() for im in images], [{k: v.clone() for k, v in t.items()} for t in case["targets"]]
        )
        rec["losses"] = {k: v.detach().clone() for k, v in losses.items()}
        records.append(rec)
        n_det = [int(d["boxes"].shape[0]) for d in rec.get("detections", [])]
        print(
            case["name"],
            "detections",
            n_det,
            "losses",
            {k: round(float(v), 5) for k, v in rec["losses"].items()},
        )

    record = {
        "state_dict": state_dict,
        "cases": records,
        "settings": {
            "backbone_depth": 50,
            "backbone_width": WIDTH,
            "fpn_channels": CHANNELS,
            "num_classes": NUM_CLASSES,
        },
        "versions": {"torch": str(torch.__version__), "torchvision": str(torchvision.__version__)},
        "call": "torchvision.models.detection.RetinaNet(BackboneWithFPN(slim ResNet-50, layers 2-4, "
        "LastLevelP6P7(32, 32), out_channels=32), num_classes=20) with its default transform "
        "(min_size=800, max_size=1333, size_divisible=32)",
    }
    torch.save(record, OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
