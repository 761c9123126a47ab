r"""Feature pyramid P3–P7 on top of a ResNet (Lin et al. 2017, Sec. 4; FPN, Lin et al. 2017a).

.. math::

    L_l = \mathrm{conv}_{1\times1}(C_l), \quad
    T_5 = L_5, \quad T_l = L_l + \mathrm{up}_{2\times}(T_{l+1}), \quad
    P_l = \mathrm{conv}_{3\times3}(T_l) \quad (l = 3, 4, 5)

    P_6 = \mathrm{conv}_{3\times3, s2}(C_5 \text{ or } P_5), \quad
    P_7 = \mathrm{conv}_{3\times3, s2}(\mathrm{ReLU}(P_6))

The paper computes :math:`P_6` from :math:`C_5` (``p6_from="c5"``);
torchvision's ``retinanet_resnet50_fpn`` computes it from :math:`P_5`
(``p6_from="p5"``). Up-sampling is nearest-neighbour to the lateral's size.
Every pyramid level has ``out_channels`` channels (``C = 256`` in the paper).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch  # noqa: F401  (doctest namespace)
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FPN", "P6_SOURCES"]

#: Accepted values of ``p6_from``.
P6_SOURCES = ("c5", "p5")


class FPN(nn.Module):
    r"""Top-down pyramid with lateral connections and two extra coarse levels.

    Shapes: ``[C3, C4, C5]`` with ``C_l`` of shape ``(B, in_channels[l-3], H_l, W_l)``
    gives ``[P3, ..., P7]`` with ``P_l`` of shape ``(B, out_channels, H_l, W_l)``,
    where :math:`H_6 = \lceil H_5 / 2 \rceil`, :math:`H_7 = \lceil H_6 / 2 \rceil`.

    Args:
        in_channels: Channels of ``C3, C4, C5``.
        out_channels: Channels ``C`` of every pyramid level.
        p6_from: ``"c5"`` (paper) or ``"p5"`` (torchvision's RetinaNet).

    Submodules (names used by :mod:`focal_detect.models.convert`): ``lateral``
    (three 1×1), ``output`` (three 3×3), ``p6``, ``p7``. Weights use
    :func:`torch.nn.init.kaiming_uniform_` with ``a=1`` and zero bias (the
    "Xavier/C2" fill of Detectron, which torchvision also uses).

    Example:
        >>> fpn = FPN((8, 16, 32), out_channels=4)
        >>> feats = [torch.zeros(1, 8, 16, 16), torch.zeros(1, 16, 8, 8), torch.zeros(1, 32, 4, 4)]
        >>> [tuple(p.shape[-2:]) for p in fpn(feats)]
        [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256, p6_from: str = "c5") -> None:
        super().__init__()
        fn = "FPN"
        if p6_from not in P6_SOURCES:
            raise ValueError(f"{fn}: p6_from must be one of {P6_SOURCES}, got {p6_from!r}")
        if len(in_channels) != 3:
            raise ValueError(f"{fn}: in_channels must have 3 entries (C3, C4, C5), got {in_channels!r}")
        if isinstance(out_channels, bool) or not isinstance(out_channels, int) or out_channels < 1:
            raise ValueError(f"{fn}: out_channels must be a positive int, got {out_channels!r}")
        self.in_channels = tuple(int(c) for c in in_channels)
        self.out_channels = out_channels
        self.p6_from = p6_from
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in self.in_channels)
        self.output = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in self.in_channels
        )
        p6_in = self.in_channels[-1] if p6_from == "c5" else out_channels
        self.p6 = nn.Conv2d(p6_in, out_channels, 3, stride=2, padding=1)
        self.p7 = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, features: Sequence[Tensor]) -> list[Tensor]:
        """Return ``[P3, P4, P5, P6, P7]`` for ``features = [C3, C4, C5]``.

        Shape:
            features: ``[C3, C4, C5]``, ``C_l`` ``(B, in_channels[l-3], H_l, W_l)``.
            output: ``[P3, ..., P7]``, ``P_l`` ``(B, out_channels, H_l, W_l)``.
        """
        if len(features) != 3:
            raise ValueError(f"FPN: features must be [C3, C4, C5], got {len(features)} maps")
        c3, c4, c5 = features
        t5 = self.lateral[2](c5)
        t4 = self.lateral[1](c4) + F.interpolate(t5, size=c4.shape[-2:], mode="nearest")
        t3 = self.lateral[0](c3) + F.interpolate(t4, size=c3.shape[-2:], mode="nearest")
        p3, p4, p5 = self.output[0](t3), self.output[1](t4), self.output[2](t5)
        p6 = self.p6(c5 if self.p6_from == "c5" else p5)
        p7 = self.p7(F.relu(p6))
        return [p3, p4, p5, p6, p7]
