"""Detection data: a seeded synthetic shapes set, COCO-format sets, augmentation and batching.

Images are ``float32`` tensors ``(3, H, W)`` in ``[0, 1]``; targets are dicts with
``"boxes"`` ``(M, 4)`` in ``(x1, y1, x2, y2)`` pixels, ``"labels"`` ``(M,)`` in
``0 .. K-1`` and ``"image_id"``; COCO sets add ``"iscrowd"`` ``(M,)`` (crowd regions, ignored in training).
Pillow is imported only when an image file is read or written.
"""

from __future__ import annotations

from focal_detect.data.augment import (
    MIN_VISIBILITY,
    AugmentConfig,
    Compose,
    RandomPhotometric,
    RandomScaleJitter,
    Transform,
    adjust_photometric,
    build_augmentation,
    rescale_place,
)
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
    "MIN_VISIBILITY",
    "SHAPE_CLASSES",
    "SHAPE_FREQUENCIES",
    "AugmentConfig",
    "CocoDetection",
    "Compose",
    "RandomHorizontalFlip",
    "RandomPhotometric",
    "RandomScaleJitter",
    "SeededAugment",
    "SyntheticShapes",
    "Transform",
    "adjust_photometric",
    "build_augmentation",
    "collate_detection",
    "export_coco",
    "hflip",
    "load_coco_json",
    "load_image",
    "render_shapes",
    "rescale_place",
    "sample_seed",
]
