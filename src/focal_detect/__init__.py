"""focal-detect: the pieces of RetinaNet (Lin et al. 2017), exact and fast.

Importing the package loads only the low-level ops (losses, init, boxes, anchors,
matching, coding); the reference model lives in :mod:`focal_detect.models` and is
imported only when asked for.
"""

from __future__ import annotations

from focal_detect.constants import BACKGROUND, IGNORE

__version__ = "0.1.0"

__all__ = ["BACKGROUND", "IGNORE", "__version__"]
