"""Tutorial: focal-detect's matcher, box coder and focal loss inside torchvision's RetinaNet.

torchvision's ``RetinaNet.compute_loss(targets, head_outputs, anchors)`` matches the
anchors of each image in a Python loop, builds a dense one-hot target per image and
calls ``torchvision.ops.sigmoid_focal_loss`` per image. :func:`retinanet_loss` below
computes the same two numbers for the whole batch at once with focal-detect:

1. ``assign_anchors`` matches every image's anchors (IoU 0.5 / 0.4 with torchvision's
   low-quality rule) and encodes the box targets with a ``BoxCoder``;
2. ``sigmoid_focal_loss_from_labels`` takes the class-index labels directly (no
   one-hot tensor; ``IGNORE`` anchors drop out), with a per-anchor weight that divides
   each image by its own number of foreground anchors, as torchvision does;
3. ``l1_loss`` on the foreground anchors' deltas, normalised the same way.

:func:`use_focal_detect_loss` plugs it into a torchvision model. Only the demo at the
bottom needs torchvision; :func:`retinanet_loss` itself is pure focal-detect.

Run ``python docs/tutorials/torchvision_retinanet.py`` (needs torchvision) to train a
tiny torchvision RetinaNet for a few steps with both losses and compare them.
"""

from __future__ import annotations

import types
from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor, nn

from focal_detect.coding import BoxCoder
from focal_detect.losses import l1_loss, sigmoid_focal_loss_from_labels
from focal_detect.matching import assign_anchors


def retinanet_loss(
    targets: list[dict[str, Tensor]],
    head_outputs: dict[str, Tensor],
    anchors: list[Tensor],
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> dict[str, Tensor]:
    """torchvision's RetinaNet training loss, computed with focal-detect for the batch.

    Args:
        targets: ``B`` dicts with ``"boxes"`` ``(M_i, 4)`` (x1, y1, x2, y2) and
            ``"labels"`` ``(M_i,)`` int64, as torchvision's model receives them.
        head_outputs: ``"cls_logits"`` ``(B, N, K)`` and ``"bbox_regression"``
            ``(B, N, 4)`` from ``RetinaNetHead``.
        anchors: ``B`` tensors ``(N, 4)`` (torchvision passes one per image; they are
            identical within a batch).
        alpha: Focal-loss α (torchvision: 0.25).
        gamma: Focal-loss γ (torchvision: 2).

    Returns:
        ``{"classification": ..., "bbox_regression": ...}``, the keys torchvision uses.
    """
    cls_logits = head_outputs["cls_logits"]  # (B, N, K)
    bbox_regression = head_outputs["bbox_regression"]  # (B, N, 4)
    batch = cls_logits.shape[0]

    # 1. Matching and box targets for all images in one call.
    assignment = assign_anchors(
        anchors[0],
        [t["boxes"] for t in targets],
        [t["labels"] for t in targets],
        box_coder=BoxCoder(weights=(1.0, 1.0, 1.0, 1.0)),  # torchvision's RetinaNet coder
        min_low_quality_iou=None,  # torchvision's low-quality rule, without our guard
        crowd_ioa_threshold=None,  # torchvision has no crowd regions
    )

    # 2. torchvision divides each image's summed loss by max(1, its foreground count)
    #    and averages over images: a per-anchor weight 1 / count_i does both at once.
    num_foreground = assignment.foreground.sum(dim=1).clamp(min=1)  # (B,)
    weights = (1.0 / num_foreground).to(cls_logits.dtype)[:, None]  # (B, 1)
    weights = weights.expand_as(assignment.labels)  # (B, N)
    classification = (
        sigmoid_focal_loss_from_labels(
            cls_logits,
            assignment.labels,
            weights=weights,
            alpha=alpha,
            gamma=gamma,
            reduction="sum",
        )
        / batch
    )

    # 3. L1 on the encoded deltas of foreground anchors (torchvision's "l1" box loss).
    fg = assignment.foreground  # (B, N) bool
    per_box = l1_loss(bbox_regression[fg], assignment.box_targets[fg]).sum(dim=-1)
    box_loss = (per_box * weights[fg]).sum() / batch
    return {"classification": classification, "bbox_regression": box_loss}


def use_focal_detect_loss(model: nn.Module) -> nn.Module:
    """Make a torchvision ``RetinaNet`` train with :func:`retinanet_loss` (in place).

    ``RetinaNet.forward`` calls ``self.compute_loss(targets, head_outputs, anchors)``
    in training mode; this replaces that one method on the instance. Inference
    (``model.eval()``) is unchanged.
    """

    def compute_loss(self: Any, targets, head_outputs, anchors):
        return retinanet_loss(targets, head_outputs, anchors)

    model.compute_loss = types.MethodType(compute_loss, model)
    return model


# ------------------------------------------------------------- demo (needs torchvision)


class TinyBackbone(nn.Module):
    """Three feature maps (strides 8, 16, 32) of 16 channels: enough for a demo."""

    out_channels = 16

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=4, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.down1 = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.down2 = nn.Conv2d(16, 16, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        p3 = self.stem(x)
        p4 = self.down1(torch.relu(p3))
        p5 = self.down2(torch.relu(p4))
        return OrderedDict([("p3", p3), ("p4", p4), ("p5", p5)])


def tiny_retinanet(num_classes: int = 3, image_size: int = 32) -> nn.Module:
    """A torchvision ``RetinaNet`` small enough to run in a test (about 25k weights)."""
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    sizes = ((8, 10, 12), (16, 20, 25), (32, 40, 50))
    anchor_generator = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    return RetinaNet(
        TinyBackbone(),
        num_classes,
        min_size=image_size,
        max_size=image_size,
        image_mean=[0.0, 0.0, 0.0],
        image_std=[1.0, 1.0, 1.0],
        anchor_generator=anchor_generator,
    )


def demo_batch() -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """Two 32 x 32 images with 2 and 1 boxes (different foreground counts)."""
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 32, 32, generator=g) for _ in range(2)]
    targets = [
        {
            "boxes": torch.tensor([[2.0, 3.0, 14.0, 12.0], [10.0, 14.0, 30.0, 31.0]]),
            "labels": torch.tensor([1, 2]),
        },
        {"boxes": torch.tensor([[5.0, 5.0, 21.0, 27.0]]), "labels": torch.tensor([0])},
    ]
    return images, targets


def compare(seed: int = 0) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """torchvision's own loss and focal-detect's on the same model and batch."""
    torch.manual_seed(seed)
    model = tiny_retinanet().train()
    images, targets = demo_batch()
    reference = model(images, targets)  # torchvision's compute_loss
    use_focal_detect_loss(model)
    ours = model(images, targets)
    return reference, ours


def train(steps: int = 20, seed: int = 0) -> list[float]:
    """A few SGD steps of the tiny model with focal-detect's loss; the total losses."""
    torch.manual_seed(seed)
    model = use_focal_detect_loss(tiny_retinanet().train())
    images, targets = demo_batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    history = []
    for _ in range(steps):
        losses = model(images, targets)
        total = losses["classification"] + losses["bbox_regression"]
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append(float(total.detach()))
    return history


if __name__ == "__main__":
    reference, ours = compare()
    for key in ("classification", "bbox_regression"):
        print(f"{key:16s} torchvision {reference[key].item():.6f}   focal-detect {ours[key].item():.6f}")
    history = train()
    print(f"20 SGD steps with focal-detect's loss: {history[0]:.4f} -> {history[-1]:.4f}")
