r"""Losses of RetinaNet (Lin et al. 2017, arXiv:1708.02002): focal loss, FL*, box losses.

Which focal loss to use:

* dense targets shaped like the logits (a drop-in for torchvision's):
  :func:`sigmoid_focal_loss`;
* class indices after anchor assignment (``BACKGROUND``/``IGNORE`` codes, no one-hot
  target): :func:`sigmoid_focal_loss_from_labels` - what a detector uses;
* the module form taking either: :class:`SigmoidFocalLoss`;
* FL* (Appendix A): :func:`sigmoid_focal_loss_star`;
* the fast route for repeated calls of one shape: :func:`compiled_sigmoid_focal_loss`
  (:func:`torch.compile` of the dense loss).

Package layout: ``focal`` (the focal family's API),
``_reference`` (the formulas and their numerics), ``_fused`` (the analytic kernels and
the choice between chunked CPU passes and one whole-tensor pass on accelerators),
``_autograd`` (the saved-gradient backward), ``box`` (box
losses) and ``normalizer`` (the foreground normaliser). The
losses own no threads and change no process-wide setting.

The eager focal losses have an analytic backward: the gradient is computed in the
forward pass from the closed forms of the paper's Appendix B, and only that gradient
is kept for the backward pass (one tensor of the size of the logits). When the logits
do not require a gradient, none is computed.
"""

from __future__ import annotations

from focal_detect.losses.box import giou_loss, l1_loss, smooth_l1_loss
from focal_detect.losses.focal import (
    SigmoidFocalLoss,
    compiled_sigmoid_focal_loss,
    sigmoid_focal_loss,
    sigmoid_focal_loss_from_labels,
    sigmoid_focal_loss_star,
)
from focal_detect.losses.normalizer import FocalLossNormalizer

__all__ = [
    "sigmoid_focal_loss",
    "compiled_sigmoid_focal_loss",
    "sigmoid_focal_loss_from_labels",
    "sigmoid_focal_loss_star",
    "SigmoidFocalLoss",
    "FocalLossNormalizer",
    "smooth_l1_loss",
    "l1_loss",
    "giou_loss",
]
