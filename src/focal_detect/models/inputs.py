r"""Input checks of :class:`~focal_detect.models.RetinaNet`: images and training targets.

Shapes and dtypes are checked on the host; target values (finite, ordered boxes and
labels in range) cost one device synchronisation per batch, and only a bad batch is
inspected image by image to name the first offending one.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

__all__ = ["check_images", "check_target_values", "check_targets"]

# uint8 images are refused rather than guessed at: dividing by 255 is one convention, the
# model's pixel_mean/pixel_std are for [0, 1] inputs, and a silent scale hides a wrong one.
_UINT8_HINT = " (for uint8 images in [0, 255] pass image.float() / 255)"


def check_images(images: object, dtype: torch.dtype) -> list[Tensor] | Tensor:
    """Validated images cast to ``dtype``: a ``(B, 3, H, W)`` tensor or a list of ``(3, H, W)``.

    Shape:
        images: ``(B, 3, H, W)``, or ``B`` tensors ``(3, H_i, W_i)``.

    Raises:
        TypeError: Not a tensor / list of tensors, or integer images.
        ValueError: Wrong shape or an empty batch.

    Example:
        >>> check_images([torch.zeros(3, 4, 5)], torch.float64)[0].dtype
        torch.float64
    """
    fn = "RetinaNet"
    if isinstance(images, Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{fn}: images must have shape (B, 3, H, W), got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(
                f"{fn}: images must be a floating-point tensor in [0, 1], got dtype {images.dtype}"
                + _UINT8_HINT * (images.dtype == torch.uint8)
            )
        if images.shape[0] == 0:
            raise ValueError(f"{fn}: images must hold at least one image, got batch size 0")
        return images.to(dtype)
    if not isinstance(images, (list, tuple)) or not images:
        raise TypeError(
            f"{fn}: images must be a non-empty list of (3, H, W) tensors or a (B, 3, H, W) "
            f"tensor, got {type(images).__name__}"
        )
    for i, img in enumerate(images):
        if not isinstance(img, Tensor):
            raise TypeError(f"{fn}: images[{i}] must be a torch.Tensor, got {type(img).__name__}")
        if img.ndim != 3 or img.shape[0] != 3 or img.shape[1] < 1 or img.shape[2] < 1:
            raise ValueError(f"{fn}: images[{i}] must have shape (3, H, W), got {tuple(img.shape)}")
        if not img.is_floating_point():
            raise TypeError(
                f"{fn}: images[{i}] must be a floating-point tensor in [0, 1], got dtype {img.dtype}"
                + _UINT8_HINT * (img.dtype == torch.uint8)
            )
    return [img.to(dtype) for img in images]


def check_targets(targets: object, num_images: int, num_classes: int) -> list[dict[str, Tensor]]:
    """Validated training targets (shallow copies): keys, shapes, dtypes, then values.

    Values (finite boxes with ``x2 >= x1, y2 >= y1``, labels in ``[0, K)``) cost one
    device synchronisation for the whole batch (:func:`check_target_values`).

    Raises:
        TypeError: Wrong container or dtype.
        ValueError: Missing keys, wrong shapes or bad values, naming ``targets[i]``.

    Example:
        >>> t = check_targets([{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}], 1, 3)
        >>> sorted(t[0])
        ['boxes', 'labels']
    """
    fn = "RetinaNet"
    if not isinstance(targets, (list, tuple)):
        raise TypeError(f"{fn}: targets must be a list of dicts, got {type(targets).__name__}")
    if len(targets) != num_images:
        raise ValueError(f"{fn}: targets must have one dict per image ({num_images}), got {len(targets)}")
    k = num_classes
    out = []
    for i, t in enumerate(targets):
        if not isinstance(t, Mapping):
            raise TypeError(f"{fn}: targets[{i}] must be a dict, got {type(t).__name__}")
        for key in ("boxes", "labels"):
            if key not in t:
                raise ValueError(f"{fn}: targets[{i}] must have key {key!r}, got keys {sorted(t)}")
            if not isinstance(t[key], Tensor):
                raise TypeError(
                    f"{fn}: targets[{i}]['{key}'] must be a torch.Tensor, got {type(t[key]).__name__}"
                )
        boxes, labels = t["boxes"], t["labels"]
        if boxes.ndim != 2 or boxes.shape[-1] != 4:
            raise ValueError(f"{fn}: targets[{i}]['boxes'] must have shape (M, 4), got {tuple(boxes.shape)}")
        if not boxes.is_floating_point():
            raise TypeError(
                f"{fn}: targets[{i}]['boxes'] must be a floating-point tensor, got dtype {boxes.dtype}"
            )
        if labels.ndim != 1 or labels.shape[0] != boxes.shape[0]:
            raise ValueError(
                f"{fn}: targets[{i}]['labels'] must have shape (M,) with M = {boxes.shape[0]}, "
                f"got {tuple(labels.shape)}"
            )
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(
                f"{fn}: targets[{i}]['labels'] must be an integer tensor, got dtype {labels.dtype}"
            )
        crowd = t.get("iscrowd")
        if crowd is not None:
            if not isinstance(crowd, Tensor) or crowd.shape != labels.shape:
                raise ValueError(
                    f"{fn}: targets[{i}]['iscrowd'] must be a tensor of shape (M,) with "
                    f"M = {boxes.shape[0]}, got {getattr(crowd, 'shape', type(crowd).__name__)}"
                )
        out.append(dict(t))
    check_target_values(out, k)
    return out


def check_target_values(targets: list[dict[str, Tensor]], k: int) -> None:
    """Finite boxes with ``x2 >= x1, y2 >= y1`` and labels in ``[0, K)``.

    One device synchronisation for the whole batch; only when something is wrong
    are the images inspected one by one to name the first offending one.

    Shape:
        targets: per image ``"boxes"`` ``(M_i, 4)`` and ``"labels"`` ``(M_i,)``.

    Raises:
        ValueError: The first bad image, naming ``targets[i]``.

    Example:
        >>> check_target_values([{"boxes": torch.tensor([[4.0, 0.0, 2.0, 8.0]]), "labels": torch.tensor([0])}], 3)
        Traceback (most recent call last):
        ...
        ValueError: RetinaNet: targets[0]['boxes'] must have x2 >= x1 and y2 >= y1, got [4.0, 0.0, 2.0, 8.0] at row 0
    """
    fn = "RetinaNet"
    nonempty = [t for t in targets if t["boxes"].numel()]
    if not nonempty:
        return
    device = nonempty[0]["boxes"].device
    if all(t["boxes"].device == device and t["labels"].device == device for t in nonempty):
        boxes = torch.cat([t["boxes"].float() for t in nonempty])
        labels = torch.cat([t["labels"] for t in nonempty])
        bad = (
            ~torch.isfinite(boxes).all()
            | (boxes[:, 2:] < boxes[:, :2]).any()
            | ((labels < 0) | (labels >= k)).any()
        )
        if not bool(bad):
            return
    for i, t in enumerate(targets):
        boxes, labels = t["boxes"], t["labels"]
        if not boxes.numel():
            continue
        if not bool(torch.isfinite(boxes).all()):
            raise ValueError(f"{fn}: targets[{i}]['boxes'] must be finite, got NaN or infinity")
        if bool((boxes[:, 2:] < boxes[:, :2]).any()):
            j = int((boxes[:, 2:] < boxes[:, :2]).any(1).nonzero()[0, 0])
            raise ValueError(
                f"{fn}: targets[{i}]['boxes'] must have x2 >= x1 and y2 >= y1, "
                f"got {boxes[j].tolist()} at row {j}"
            )
        if bool(((labels < 0) | (labels >= k)).any()):
            raise ValueError(
                f"{fn}: targets[{i}]['labels'] must be in [0, {k}), got "
                f"min {int(labels.min())}, max {int(labels.max())}"
            )
