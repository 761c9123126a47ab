"""Detection data: a seeded synthetic shapes set, COCO-format sets, flips and batching.

Images are ``float32`` tensors ``(3, H, W)`` in ``[0, 1]``; targets are dicts with
``"boxes"`` ``(M, 4)`` in ``(x1, y1, x2, y2)`` pixels, ``"labels"`` ``(M,)`` in
``0 .. K-1`` and ``"image_id"``; COCO sets add ``"iscrowd"`` ``(M,)`` (crowd regions, ignored in training).
Pillow is imported only when an image file is read or written.
"""

from __future__ import annotations

from focal_detect.data.coco import CocoDetection, load_coco_json, load_image
from focal_detect.data.synthetic import (
    SHAPE_CLASSES,
    SHAPE_FREQUENCIES,
    SyntheticShapes,
    export_coco,
    render_shapes,
)
from focal_detect.data.transforms import (
    RandomHorizontalFlip,
    SeededAugment,
    collate_detection,
    hflip,
    sample_seed,
)

__all__ = [
    "SHAPE_CLASSES",
    "SHAPE_FREQUENCIES",
    "CocoDetection",
    "RandomHorizontalFlip",
    "SeededAugment",
    "SyntheticShapes",
    "collate_detection",
    "export_coco",
    "hflip",
    "load_coco_json",
    "load_image",
    "render_shapes",
    "sample_seed",
]
