"""focal-detect: the pieces of RetinaNet (Lin et al. 2017), exact and fast.

The top level holds what a detector author reaches for: the label codes, the focal loss
in its three forms (:func:`sigmoid_focal_loss`, the torchvision-compatible drop-in on
dense targets; :func:`sigmoid_focal_loss_from_labels`, on class indices;
:func:`sigmoid_focal_loss_star`, FL*) and as a module (:class:`SigmoidFocalLoss`, either
target form), the foreground normaliser and box losses, the prior initialisation, the box
ops, the box coder, the anchor generator and its :class:`Anchors` value, and the
matcher. Everything else lives in its submodule: :mod:`focal_detect.losses` (also
``compiled_sigmoid_focal_loss``, the fast route), :mod:`focal_detect.anchors`
(conventions), :mod:`focal_detect.matching` (rule constants),
:mod:`focal_detect.sampling` (the OHEM baseline), :mod:`focal_detect.analysis`
(Figure 4, anchor coverage). The reference model lives in :mod:`focal_detect.models`
and the training tools in :mod:`focal_detect.data`, :mod:`focal_detect.engine` and
:mod:`focal_detect.evaluation`, imported only when asked for.

Example:
    >>> import torch
    >>> from focal_detect import sigmoid_focal_loss
    >>> sigmoid_focal_loss(torch.zeros(2), torch.tensor([1.0, 0.0]))
    tensor([0.0433, 0.1300])
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from focal_detect.anchors import AnchorGenerator, Anchors
from focal_detect.boxes import (
    batched_nms,
    box_area,
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    clip_boxes,
    generalized_box_iou,
    nms,
    remove_small_boxes,
)
from focal_detect.coding import MAX_LOG_SCALE, BoxCoder, decode_boxes, encode_boxes
from focal_detect.constants import BACKGROUND, IGNORE
from focal_detect.init import init_conv_, init_prior_bias_, prior_bias
from focal_detect.losses import (
    FocalLossNormalizer,
    SigmoidFocalLoss,
    giou_loss,
    l1_loss,
    sigmoid_focal_loss,
    sigmoid_focal_loss_from_labels,
    sigmoid_focal_loss_star,
    smooth_l1_loss,
)
from focal_detect.matching import AnchorAssigner, AnchorAssignment, Matcher, assign_anchors, match_anchors

__version__ = "0.1.0"

__all__ = [
    # label codes
    "BACKGROUND",
    "IGNORE",
    # losses
    "sigmoid_focal_loss",
    "sigmoid_focal_loss_from_labels",
    "sigmoid_focal_loss_star",
    "SigmoidFocalLoss",
    "FocalLossNormalizer",
    "smooth_l1_loss",
    "l1_loss",
    "giou_loss",
    # init
    "prior_bias",
    "init_conv_",
    "init_prior_bias_",
    # boxes
    "box_area",
    "box_iou",
    "generalized_box_iou",
    "box_xyxy_to_cxcywh",
    "box_cxcywh_to_xyxy",
    "clip_boxes",
    "remove_small_boxes",
    "nms",
    "batched_nms",
    # coding
    "MAX_LOG_SCALE",
    "encode_boxes",
    "decode_boxes",
    "BoxCoder",
    # anchors
    "AnchorGenerator",
    "Anchors",
    # matching
    "match_anchors",
    "Matcher",
    "AnchorAssignment",
    "assign_anchors",
    "AnchorAssigner",
    "__version__",
]

#: Names 0.1.0 exported at the top level that now live only in their submodule; reading
#: one from here still works for this release, with a DeprecationWarning.
MOVED: dict[str, str] = {
    "compiled_sigmoid_focal_loss": "focal_detect.losses",
    "AnchorLevel": "focal_detect.anchors",
    "CONVENTIONS": "focal_detect.anchors",
    "LOW_QUALITY_MODES": "focal_detect.matching",
    "CROWD_IOA_THRESHOLD": "focal_detect.matching",
    "ohem_sample": "focal_detect.sampling",
    "focal_loss_cdf": "focal_detect.analysis",
    "plot_focal_loss_cdf": "focal_detect.analysis",
}


def __getattr__(name: str) -> Any:
    if name in MOVED:
        module = MOVED[name]
        warnings.warn(
            f"focal_detect.{name} moved to {module}.{name}; import it from there "
            "(the top-level alias goes in the next release)",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'focal_detect' has no attribute {name!r}")
