r"""ResNet backbones whose parameters load torchvision / ImageNet ResNet weights.

The module tree mirrors ``torchvision.models.resnet`` name for name (``conv1``,
``bn1``, ``layer1`` … ``layer4`` made of ``BasicBlock`` or ``Bottleneck`` blocks,
each with an optional ``downsample.0`` convolution and ``downsample.1`` norm), so
a torchvision ResNet ``state_dict`` loads with :func:`load_resnet_state_dict`
(the classifier ``fc.*`` is dropped). The stride-2 convolution of a bottleneck is
the 3×3 one (the "v1.5" layout torchvision uses).

Instead of an ImageNet classifier the network returns the last feature map of
stages 3, 4 and 5, :math:`C_3, C_4, C_5`, with strides 8, 16 and 32, which is
what the feature pyramid of RetinaNet (Lin et al. 2017, Sec. 4) is built on.

Deviation from torchvision: ``width`` (the channels of the stem, 64 in every
published ResNet) scales every stage. ``width=64`` gives the standard network
and loads standard weights; a smaller width gives a slim network for CPU demos
and tests, which then has no published weights.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

__all__ = [
    "FrozenBatchNorm2d",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "RESNET_DEPTHS",
    "freeze_batch_norm",
    "load_resnet_state_dict",
]

#: Blocks per stage (layer1 .. layer4) for each supported depth.
RESNET_DEPTHS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}


class FrozenBatchNorm2d(nn.Module):
    r"""Batch normalisation with fixed statistics and affine parameters.

    .. math:: y = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}}\,\gamma + \beta

    where :math:`\gamma, \beta, \mu, \sigma^2` are the *buffers* ``weight``,
    ``bias``, ``running_mean`` and ``running_var`` (the names of
    :class:`torch.nn.BatchNorm2d`, so its ``state_dict`` loads; its
    ``num_batches_tracked`` entry is ignored). Nothing is learned and training
    mode behaves like evaluation mode, as detectors trained with small
    per-device batches do (the paper's ResNets keep ImageNet statistics).

    Args:
        num_features: Channels ``C``.
        eps: :math:`\epsilon`, added to the variance (torchvision's 1e-5).

    Example:
        >>> bn = FrozenBatchNorm2d(2)
        >>> bn.running_var.fill_(4.0)
        tensor([4., 4.])
        >>> bn(torch.ones(1, 2, 1, 1)).flatten()
        tensor([0.5000, 0.5000])
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.weight: Tensor
        self.bias: Tensor
        self.running_mean: Tensor
        self.running_var: Tensor
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Tensor],
        prefix: str,
        local_metadata: dict[str, object],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def scale_shift(self) -> tuple[Tensor, Tensor]:
        """Per-channel ``(scale, shift)`` with ``y = x * scale + shift``, shape ``(C,)``."""
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: Tensor) -> Tensor:
        scale, shift = self.scale_shift()
        scale = scale.to(x.dtype).reshape(1, -1, 1, 1)
        shift = shift.to(x.dtype).reshape(1, -1, 1, 1)
        return torch.addcmul(shift, x, scale)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def _norm(channels: int, frozen: bool) -> nn.Module:
    return FrozenBatchNorm2d(channels) if frozen else nn.BatchNorm2d(channels)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual connection (ResNet-18/34).

    Args:
        inplanes: Input channels.
        planes: Output channels (``expansion = 1``).
        stride: Stride of the first convolution.
        downsample: Projection of the shortcut, or ``None`` for identity.
        frozen_bn: Use :class:`FrozenBatchNorm2d` instead of ``nn.BatchNorm2d``.
    """

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        frozen_bn: bool = True,
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = _norm(planes, frozen_bn)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = _norm(planes, frozen_bn)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (strided), 1×1 expand, plus residual (ResNet-50/101).

    Args:
        inplanes: Input channels.
        planes: Inner channels; the output has ``4 * planes``.
        stride: Stride of the 3×3 convolution.
        downsample: Projection of the shortcut, or ``None`` for identity.
        frozen_bn: Use :class:`FrozenBatchNorm2d` instead of ``nn.BatchNorm2d``.
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        frozen_bn: bool = True,
    ) -> None:
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = _norm(planes, frozen_bn)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = _norm(planes, frozen_bn)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = _norm(planes * self.expansion, frozen_bn)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


# Names of the parameters that each value of ``trainable_layers`` leaves trainable
# (the same counting as torchvision's detection backbones: stages from the top).
_TRAINABLE_ORDER = ("layer4", "layer3", "layer2", "layer1", "conv1")


class ResNet(nn.Module):
    r"""ResNet trunk returning :math:`C_3, C_4, C_5` for a feature pyramid.

    Shapes: an input ``(B, 3, H, W)`` gives ``C_l`` of shape
    ``(B, out_channels[l-3], ceil(H / 2^l), ceil(W / 2^l))`` for
    ``H, W`` multiples of 32.

    Args:
        depth: 18, 34 (basic blocks), 50 or 101 (bottleneck blocks).
        width: Stem channels (64 in the published ResNets). Stage ``s`` has
            ``width * 2^(s-1)`` inner channels. A deviation from torchvision for
            slim CPU models; only ``width=64`` loads published weights.
        frozen_bn: Use :class:`FrozenBatchNorm2d` (fixed statistics, no learned
            affine) instead of ``nn.BatchNorm2d``.
        trainable_layers: How many stages, counted from ``layer4`` down to the
            stem, have trainable parameters: 0 freezes everything, 5 trains all
            (as torchvision's ``trainable_backbone_layers``).
        include_fc: Keep an ImageNet classifier ``avgpool`` + ``fc`` (1000
            classes) so a full torchvision ``state_dict`` loads with
            ``strict=True``; it is not used by :meth:`forward`.

    Raises:
        ValueError: Unknown depth, or ``width`` / ``trainable_layers`` out of range.

    Example:
        >>> net = ResNet(18, width=8)
        >>> [tuple(c.shape) for c in net(torch.zeros(1, 3, 64, 64))]
        [(1, 16, 8, 8), (1, 32, 4, 4), (1, 64, 2, 2)]
        >>> net.out_channels
        (16, 32, 64)
    """

    def __init__(
        self,
        depth: int = 50,
        width: int = 64,
        frozen_bn: bool = True,
        trainable_layers: int = 3,
        include_fc: bool = False,
    ) -> None:
        super().__init__()
        fn = "ResNet"
        if depth not in RESNET_DEPTHS:
            raise ValueError(f"{fn}: depth must be one of {sorted(RESNET_DEPTHS)}, got {depth!r}")
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"{fn}: width must be a positive int, got {width!r}")
        if (
            isinstance(trainable_layers, bool)
            or not isinstance(trainable_layers, int)
            or not 0 <= trainable_layers <= 5
        ):
            raise ValueError(f"{fn}: trainable_layers must be an int in [0, 5], got {trainable_layers!r}")
        kind, blocks = RESNET_DEPTHS[depth]
        block: type[BasicBlock] | type[Bottleneck] = BasicBlock if kind == "basic" else Bottleneck
        self.depth = depth
        self.width = width
        self.frozen_bn = frozen_bn
        self.trainable_layers = int(trainable_layers)

        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = _norm(width, frozen_bn)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = width
        stages = []
        for i, n in enumerate(blocks):
            planes = width * 2**i
            stride = 1 if i == 0 else 2
            downsample = None
            if stride != 1 or inplanes != planes * block.expansion:
                downsample = nn.Sequential(
                    _conv1x1(inplanes, planes * block.expansion, stride),
                    _norm(planes * block.expansion, frozen_bn),
                )
            layer = [block(inplanes, planes, stride, downsample, frozen_bn)]
            inplanes = planes * block.expansion
            layer += [block(inplanes, planes, 1, None, frozen_bn) for _ in range(1, n)]
            stages.append(nn.Sequential(*layer))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_channels: tuple[int, int, int] = tuple(  # type: ignore[assignment]
            width * 2**i * block.expansion for i in (1, 2, 3)
        )
        if include_fc:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(inplanes, 1000)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self._freeze(self.trainable_layers)

    def _freeze(self, trainable_layers: int) -> None:
        train = list(_TRAINABLE_ORDER[:trainable_layers])
        if trainable_layers == 5:
            train.append("bn1")
        for name, p in self.named_parameters():
            if name.startswith(("avgpool", "fc")):
                continue
            if not any(name.startswith(t) for t in train):
                p.requires_grad_(False)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Return ``[C3, C4, C5]`` for images ``x`` of shape ``(B, 3, H, W)``.

        Shape:
            x: ``(B, 3, H, W)``.
            output: ``[C3, C4, C5]``, ``C_l`` of shape
                ``(B, out_channels[l-3], ceil(H / 2^l), ceil(W / 2^l))``.
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer1(x)
        c3 = self.layer2(x)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c3, c4, c5]


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` inside ``module`` by a :class:`FrozenBatchNorm2d`
    holding its current statistics and affine parameters (in place; returns ``module``).

    Example:
        >>> m = freeze_batch_norm(nn.Sequential(nn.BatchNorm2d(3)))
        >>> type(m[0]).__name__
        'FrozenBatchNorm2d'
    """
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            with torch.no_grad():
                if child.affine:
                    frozen.weight.copy_(child.weight)
                    frozen.bias.copy_(child.bias)
                if child.running_mean is not None and child.running_var is not None:
                    frozen.running_mean.copy_(child.running_mean)
                    frozen.running_var.copy_(child.running_var)
            frozen.to(child.weight.device if child.affine else frozen.weight.device)
            setattr(module, name, frozen)
        else:
            freeze_batch_norm(child)
    return module


def load_resnet_state_dict(backbone: ResNet, state_dict: Mapping[str, Tensor], prefix: str = "") -> None:
    """Load a torchvision ResNet ``state_dict`` (e.g. ImageNet weights) into ``backbone``.

    Keys are matched by name; ``fc.*`` is dropped unless the backbone keeps its
    classifier, ``num_batches_tracked`` is dropped for frozen norms, and every
    other key must be present with the same shape (a strict load).

    Args:
        backbone: The :class:`ResNet` to fill (same depth, ``width=64`` for
            published weights).
        state_dict: torchvision ResNet parameters and buffers.
        prefix: Only keys starting with it are used, with it removed (for
            example ``"backbone.body."`` inside a torchvision detector).

    Raises:
        ValueError: Missing or unexpected keys, or shape mismatch.

    Example:
        >>> a, b = ResNet(18, width=8), ResNet(18, width=8)
        >>> load_resnet_state_dict(b, a.state_dict())
        >>> torch.equal(a.conv1.weight, b.conv1.weight)
        True
    """
    fn = "load_resnet_state_dict"
    keep_fc = hasattr(backbone, "fc")
    sd = {}
    for k, v in state_dict.items():
        if not k.startswith(prefix):
            continue
        k = k[len(prefix) :]
        if k.startswith("fc.") and not keep_fc:
            continue
        sd[k] = v
    own = backbone.state_dict()
    bad = [
        f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in sd.items()
        if k in own and v.shape != own[k].shape
    ]
    if bad:
        raise ValueError(f"{fn}: state_dict must match the backbone's shapes, got {bad[:5]}")
    result = backbone.load_state_dict(sd, strict=False)
    missing = list(result.missing_keys)
    unexpected = [k for k in result.unexpected_keys if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(
            f"{fn}: state_dict must have the backbone's keys, got missing {missing[:5]} "
            f"and unexpected {unexpected[:5]}"
        )
