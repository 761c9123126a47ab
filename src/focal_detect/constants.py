"""Label codes shared by the matcher and the focal loss.

A per-anchor label is a class index ``0 .. K-1`` for a foreground anchor, or one of
the two negative codes below. The codes are the same numbers torchvision's
``Matcher`` returns for unmatched anchors, so a matcher's output can be turned into
focal-loss labels without remapping the special values.
"""

from __future__ import annotations

__all__ = ["BACKGROUND", "IGNORE"]

#: Anchor matched to no object: every class is a negative (all-zero one-hot row).
#: Equal to torchvision's ``Matcher.BELOW_LOW_THRESHOLD``.
BACKGROUND: int = -1

#: Anchor excluded from the classification loss (IoU between the two thresholds,
#: or inside a crowd region). Equal to torchvision's ``Matcher.BETWEEN_THRESHOLDS``.
IGNORE: int = -2
