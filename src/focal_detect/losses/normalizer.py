r"""The foreground normaliser of the summed focal loss (the only part that talks to
:mod:`torch.distributed`)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from focal_detect._checks import check_number, check_tensor

__all__ = ["FocalLossNormalizer"]


class FocalLossNormalizer(nn.Module):
    r"""Divisor of the summed focal loss: the number of foreground anchors.

    The paper normalises the summed focal loss by the number of anchors assigned to a
    ground-truth box. This module turns a count tensor into that divisor:

    1. ``distributed=True`` and :mod:`torch.distributed` initialised: the count is
       all-reduced (summed) over workers and divided by the world size - the mean
       count per worker. Since DDP averages gradients over workers, each worker's loss
       ``sum_w / mean_count`` makes the global update ``sum_all / count_all``.
    2. ``momentum=m``: an exponential moving average
       :math:`\bar n \leftarrow m\,\bar n + (1 - m)\,\max(n, 1)`, starting at
       ``initial``; the average is the buffer ``running_count`` (saved in
       ``state_dict``), updated only in training mode (in eval mode the same blend
       is returned but not stored).
    3. The result is clamped to ``>= 1``.

    Everything stays on the device: no ``.item()``, no host synchronisation (keep the
    module on the counts' device, as ``model.to(device)`` does, so that updating the
    buffer is not a cross-device copy).

    Args:
        momentum: EMA momentum in ``[0, 1)``; ``None`` (default) uses the raw count.
        initial: Starting value of the EMA (``>= 1``); 100 as in detectron2.
        distributed: All-reduce the count when :mod:`torch.distributed` is initialised.

    Example:
        >>> norm = FocalLossNormalizer(momentum=0.9, initial=100.0)
        >>> norm(torch.tensor(10))
        tensor(91.)
        >>> FocalLossNormalizer()(torch.tensor(0))
        tensor(1.)
    """

    running_count: Tensor

    def __init__(self, momentum: float | None = None, initial: float = 100.0, distributed: bool = False):
        super().__init__()
        fn = "FocalLossNormalizer"
        if momentum is not None:
            momentum = check_number(fn, "momentum", momentum, low=0.0, high=1.0, high_open=True)
        initial = check_number(fn, "initial", initial, low=1.0)
        if math.isinf(initial):
            raise ValueError(f"{fn}: initial must be finite, got {initial!r}")
        self.momentum = momentum
        self.distributed = bool(distributed)
        self.register_buffer("running_count", torch.tensor(float(initial)))

    def forward(self, num_foreground: Tensor) -> Tensor:
        """Return the divisor (0-d float tensor on ``num_foreground``'s device).

        Shape:
            num_foreground: any shape, summed (e.g. ``()`` or ``(B,)``).
            output: ``()``.
        """
        check_tensor("FocalLossNormalizer", "num_foreground", num_foreground)
        n = num_foreground.detach().to(self.running_count.dtype).sum()
        if self.distributed and _dist_ready():
            import torch.distributed as dist

            n = n.clone()
            dist.all_reduce(n, op=dist.ReduceOp.SUM)
            n = n / dist.get_world_size()
        n = n.clamp(min=1.0)
        if self.momentum is not None:
            m = self.momentum
            n = self.running_count.to(n.device) * m + n * (1.0 - m)
            if self.training:
                self.running_count.copy_(n)
        return n.clamp(min=1.0)

    def extra_repr(self) -> str:
        return f"momentum={self.momentum}, distributed={self.distributed}"


def _dist_ready() -> bool:
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return False
    return dist.is_available() and dist.is_initialized()
