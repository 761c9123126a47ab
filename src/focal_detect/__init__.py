"""focal-detect: the pieces of RetinaNet (Lin et al. 2017), exact and fast.

Importing the package loads only the low-level ops (losses, init, boxes, anchors,
matching, coding, sampling, analysis), all re-exported here; the reference model lives in
:mod:`focal_detect.models` and the training tools in :mod:`focal_detect.data`,
:mod:`focal_detect.engine` and :mod:`focal_detect.evaluation`, imported only when
asked for.

Example:
    >>> import torch
    >>> from focal_detect import sigmoid_focal_loss
    >>> sigmoid_focal_loss(torch.zeros(2), torch.tensor([1.0, 0.0]))
    tensor([0.0433, 0.1300])
"""

from __future__ import annotations

from focal_detect.analysis import focal_loss_cdf, plot_focal_loss_cdf
from focal_detect.anchors import CONVENTIONS, AnchorGenerator, AnchorLevel
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
    compiled_sigmoid_focal_loss,
    giou_loss,
    l1_loss,
    sigmoid_focal_loss,
    sigmoid_focal_loss_from_labels,
    sigmoid_focal_loss_star,
    smooth_l1_loss,
)
from focal_detect.matching import (
    CROWD_IOA_THRESHOLD,
    LOW_QUALITY_MODES,
    AnchorAssigner,
    AnchorAssignment,
    Matcher,
    assign_anchors,
    match_anchors,
)
from focal_detect.sampling import ohem_sample

__version__ = "0.1.0"

__all__ = [
    # label codes
    "BACKGROUND",
    "IGNORE",
    # losses
    "sigmoid_focal_loss",
    "compiled_sigmoid_focal_loss",
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
    "AnchorLevel",
    "CONVENTIONS",
    # matching
    "LOW_QUALITY_MODES",
    "CROWD_IOA_THRESHOLD",
    "match_anchors",
    "Matcher",
    "AnchorAssignment",
    "assign_anchors",
    "AnchorAssigner",
    # sampling and analysis (the paper's OHEM baseline and Figure 4)
    "ohem_sample",
    "focal_loss_cdf",
    "plot_focal_loss_cdf",
    "__version__",
]
