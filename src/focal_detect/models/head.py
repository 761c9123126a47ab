r"""The RetinaNet subnets (Sec. 4, "Classification Subnet", "Box Regression Subnet")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from focal_detect.init import init_conv_, init_prior_bias_

__all__ = ["RetinaNetHead"]


def _positive_int(fn: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{fn}: {name} must be a positive int, got {value!r}")
    return value


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
        >>> round(float(torch.sigmoid(cls[0][0, 0, 0].detach())), 4)  # the prior
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
