r"""A synthetic detection dataset generated from a seed: shapes on cluttered backgrounds.

Each image is a pure function of ``(seed, index)``: no files are read or written, any
worker process renders the same pixels, and a held-out split is simply another seed.
Five shape classes appear with imbalanced frequencies (rectangles are about four times
as common as rings), their sizes are log-uniform from ``min_size`` (8 px by default) to
most of the image so that every pyramid level receives objects, and objects may overlap
and partly occlude each other. Backgrounds are smooth colour gradients with blotches,
pixel noise and clutter (thin lines and dots smaller than any object) that the detector
must learn to ignore. Colours are random, so the class is only told by the geometry.

Boxes are exact: ``(x1, y1, x2, y2)`` in continuous pixel coordinates of the analytic
shape (pixel ``(i, j)`` covers ``[j, j + 1) x [i, i + 1)``), rendered with one pixel of
anti-aliasing.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from focal_detect._checks import check_number

__all__ = ["SHAPE_CLASSES", "SHAPE_FREQUENCIES", "SyntheticShapes", "export_coco", "render_shapes"]

#: Class names, in label order (label ``k`` is ``SHAPE_CLASSES[k]``).
SHAPE_CLASSES: tuple[str, ...] = ("rectangle", "ellipse", "triangle", "cross", "ring")

#: Sampling probability of each class: imbalanced on purpose (about 4:1 first to last).
SHAPE_FREQUENCIES: tuple[float, ...] = (0.34, 0.25, 0.18, 0.14, 0.09)

# A new object may hide at most this fraction of an earlier object's box, so every
# object stays recognisable (objects still overlap and occlude each other).
_MAX_HIDDEN_FRACTION = 0.4
# Minimum colour distance (RGB, [0, 1]) between an object and the background under it.
_MIN_CONTRAST = 0.35
_MAX_PLACEMENT_TRIES = 30


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Bilinearly upsampled random grid: a smooth ``float32`` field in ``[0, 1]``, (size, size)."""
    grid = rng.random((cells + 1, cells + 1), dtype=np.float32)
    t = (np.arange(size, dtype=np.float32) + 0.5) * (cells / size)
    i0 = np.minimum(t.astype(np.int64), cells - 1)
    f = t - i0
    rows = grid[i0] * (1 - f)[:, None] + grid[i0 + 1] * f[:, None]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Gradient of two colours, smooth blotches, clutter lines and dots (``float32``)."""
    c0, c1 = rng.random(3, dtype=np.float32), rng.random(3, dtype=np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    u = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    g = np.clip(0.5 + u[None, :] * math.cos(angle) + u[:, None] * math.sin(angle), 0, 1)
    blot = _smooth_field(rng, size, int(rng.integers(3, 7))) - 0.5
    tint = (rng.uniform(0.1, 0.35) * rng.choice([-1, 1], 3)).astype(np.float32)
    img = c0 + g[..., None] * (c1 - c0) + blot[..., None] * tint
    # Clutter: thin line segments and dots, all smaller than the smallest object.
    for _ in range(int(rng.integers(2, 9))):
        color = rng.random(3)
        x0, y0 = rng.uniform(0, size, 2)
        ang = rng.uniform(0, math.pi)
        length = rng.uniform(0.2, 0.8) * size
        t = np.linspace(0, length, int(length * 2) + 2)
        xs = np.clip((x0 + t * math.cos(ang)).astype(int), 0, size - 1)
        ys = np.clip((y0 + t * math.sin(ang)).astype(int), 0, size - 1)
        img[ys, xs] = color
    for _ in range(int(rng.integers(3, 15))):
        r = int(rng.integers(1, 3))
        x, y = rng.integers(0, size - r, 2)
        img[y : y + r, x : x + r] = rng.random(3)
    return img


def _shape_distance(
    label: int, x: np.ndarray, y: np.ndarray, box: np.ndarray, rng_params: dict[str, float]
) -> np.ndarray:
    """Approximate signed distance in pixels (negative inside) of one shape on a grid."""
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    hw, hh = (x2 - x1) / 2, (y2 - y1) / 2
    dx, dy = x - cx, y - cy

    def box_sdf(half_w: float, half_h: float) -> np.ndarray:
        return np.maximum(np.abs(dx) - half_w, np.abs(dy) - half_h)

    def ellipse_sdf(a: float, b: float) -> np.ndarray:
        # First-order distance to the level set r = 1: (r - 1) / |grad r|.
        r = np.maximum(np.sqrt((dx / a) ** 2 + (dy / b) ** 2), 1e-9)
        grad = np.maximum(np.sqrt((dx / a**2) ** 2 + (dy / b**2) ** 2) / r, 1e-9)
        return (r - 1.0) / grad

    name = SHAPE_CLASSES[label]
    if name == "rectangle":
        return box_sdf(hw, hh)
    if name == "ellipse":
        return ellipse_sdf(hw, hh)
    if name == "ring":
        inner = rng_params["inner"]
        return np.maximum(ellipse_sdf(hw, hh), -ellipse_sdf(hw * inner, hh * inner))
    if name == "cross":
        t = rng_params["thickness"]
        return np.minimum(box_sdf(hw, hh * t), box_sdf(hw * t, hh))
    # Triangle: apex on one side of the box, base on the opposite side.
    apex = rng_params["apex"]  # position of the apex along its side, in [0, 1]
    side = int(rng_params["side"])  # 0 up, 1 down, 2 left, 3 right
    if side in (0, 1):
        ay = y1 if side == 0 else y2
        by = y2 if side == 0 else y1
        pts = [(x1 + apex * (x2 - x1), ay), (x1, by), (x2, by)]
    else:
        ax = x1 if side == 2 else x2
        bx = x2 if side == 2 else x1
        pts = [(ax, y1 + apex * (y2 - y1)), (bx, y1), (bx, y2)]
    # Orient positively (cross product > 0), then the signed distance is the max over edge half-planes.
    (px0, py0), (px1, py1), (px2, py2) = pts
    if (px1 - px0) * (py2 - py0) - (py1 - py0) * (px2 - px0) < 0:
        pts = [pts[0], pts[2], pts[1]]
    d = np.full(x.shape, -np.inf)
    for (ax_, ay_), (bx_, by_) in zip(pts, pts[1:] + pts[:1]):
        ex, ey = bx_ - ax_, by_ - ay_
        norm = math.hypot(ex, ey)
        # Positively oriented polygon: the interior lies left of each edge, so the
        # outward normal of edge (ex, ey) is (ey, -ex).
        d = np.maximum(d, ((x - ax_) * ey - (y - ay_) * ex) / norm)
    return d


def render_shapes(
    seed: int,
    index: int,
    image_size: int = 128,
    min_size: float = 8.0,
    max_size: float | None = None,
    max_objects: int = 6,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Render one synthetic image and its boxes, a pure function of ``(seed, index)``.

    Object sizes :math:`s = \sqrt{wh}` are log-uniform in ``[min_size, max_size]`` and
    aspect ratios :math:`w/h` log-uniform in ``[0.6, 1.6]``; classes follow
    :data:`SHAPE_FREQUENCIES`; each image holds 1 to ``max_objects`` objects.

    Args:
        seed: Dataset seed (a different seed gives an independent split).
        index: Image index within the split.
        image_size: Side ``S`` of the square image in pixels.
        min_size: Smallest object size in pixels.
        max_size: Largest object size; default ``0.8 * image_size``.
        max_objects: Most objects per image.

    Returns:
        ``(image, boxes, labels)``: ``uint8`` array ``(S, S, 3)``, ``float32`` boxes
        ``(M, 4)`` in ``(x1, y1, x2, y2)`` pixels and ``int64`` labels ``(M,)`` in
        ``0 .. 4``.

    Example:
        >>> img, boxes, labels = render_shapes(seed=0, index=3, image_size=64)
        >>> img.shape, img.dtype, boxes.shape[1], len(boxes) == len(labels)
        ((64, 64, 3), dtype('uint8'), 4, True)
    """
    fn = "render_shapes"
    size = int(check_number(fn, "image_size", image_size, low=16))
    lo = check_number(fn, "min_size", min_size, low=1, high=size)
    hi = check_number(fn, "max_size", 0.8 * size if max_size is None else max_size, low=lo, high=size)
    n_max = int(check_number(fn, "max_objects", max_objects, low=1))
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(index) & 0xFFFFFFFF, 0x5EED])
    img = _background(rng, size)
    probs = np.asarray(SHAPE_FREQUENCIES) / sum(SHAPE_FREQUENCIES)
    boxes: list[np.ndarray] = []
    labels: list[int] = []
    for _ in range(int(rng.integers(1, n_max + 1))):
        for _try in range(_MAX_PLACEMENT_TRIES):
            s = math.exp(rng.uniform(math.log(lo), math.log(hi)))
            r = math.exp(rng.uniform(math.log(0.6), math.log(1.6)))
            w, h = min(s * math.sqrt(r), size - 1.0), min(s / math.sqrt(r), size - 1.0)
            x1, y1 = rng.uniform(0, size - w), rng.uniform(0, size - h)
            box = np.array([x1, y1, x1 + w, y1 + h])
            if all(_hidden_fraction(b, box) <= _MAX_HIDDEN_FRACTION for b in boxes):
                break
        else:
            continue
        label = int(rng.choice(len(SHAPE_CLASSES), p=probs))
        params = {
            "inner": rng.uniform(0.45, 0.65),
            "thickness": rng.uniform(0.3, 0.45),
            "apex": rng.uniform(0.0, 1.0),
            "side": float(rng.integers(0, 4)),
        }
        # Render inside the box window (plus an anti-aliasing margin) only.
        c0, r0 = max(int(box[0]) - 1, 0), max(int(box[1]) - 1, 0)
        c1, r1 = min(int(math.ceil(box[2])) + 1, size), min(int(math.ceil(box[3])) + 1, size)
        yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float64) + 0.5
        cover = np.clip(0.5 - _shape_distance(label, xx, yy, box, params), 0.0, 1.0)[..., None].astype(
            np.float32
        )
        under = img[r0:r1, c0:c1].reshape(-1, 3).mean(0)
        color = rng.random(3, dtype=np.float32)
        for _c in range(10):  # ensure contrast against the local background
            if np.linalg.norm(color - under) >= _MIN_CONTRAST:
                break
            color = rng.random(3, dtype=np.float32)
        shade = 1.0 + (_smooth_field(rng, max(r1 - r0, c1 - c0), 2)[: r1 - r0, : c1 - c0] - 0.5) * 0.3
        fill = np.clip(color * shade[..., None], 0, 1)
        img[r0:r1, c0:c1] += (fill - img[r0:r1, c0:c1]) * cover
        boxes.append(box)
        labels.append(label)
    img += rng.standard_normal(img.shape, dtype=np.float32) * 0.03
    out = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    box_arr = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return out, box_arr, np.asarray(labels, dtype=np.int64)


def _hidden_fraction(old: np.ndarray, new: np.ndarray) -> float:
    """Fraction of ``old``'s box area covered by ``new``'s box."""
    iw = min(old[2], new[2]) - max(old[0], new[0])
    ih = min(old[3], new[3]) - max(old[1], new[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    return float(iw * ih / ((old[2] - old[0]) * (old[3] - old[1])))


class SyntheticShapes(Dataset):
    r"""Seeded synthetic detection dataset of five shape classes (see the module docs).

    Item ``i`` is ``(image, target)``: ``image`` a ``float32`` tensor ``(3, S, S)`` in
    ``[0, 1]`` and ``target`` a dict with ``"boxes"`` ``(M, 4)`` ``float32`` in
    ``(x1, y1, x2, y2)`` pixels, ``"labels"`` ``(M,)`` ``int64`` in ``0 .. K-1``
    (``K = 5``), ``"image_id"`` (``int``, equal to ``i``). Items are rendered on demand
    from ``(seed, i)``; ``cache=True`` keeps the rendered images in memory.

    Args:
        num_images: Number of images in the split.
        image_size: Side ``S`` of the square images in pixels.
        seed: Split seed; use different seeds for training and held-out splits.
        min_size: Smallest object size (geometric mean of width and height) in pixels.
        max_size: Largest object size; default ``0.8 * image_size``.
        max_objects: Most objects per image.
        transform: Optional callable ``(image, target) -> (image, target)``.
        cache: Keep rendered images (``uint8``) in memory.

    Example:
        >>> ds = SyntheticShapes(num_images=4, image_size=64, seed=1)
        >>> image, target = ds[2]
        >>> image.shape, target["image_id"], ds.class_names[0]
        (torch.Size([3, 64, 64]), 2, 'rectangle')
    """

    class_names: tuple[str, ...] = SHAPE_CLASSES

    def __init__(
        self,
        num_images: int = 1000,
        image_size: int = 128,
        seed: int = 0,
        min_size: float = 8.0,
        max_size: float | None = None,
        max_objects: int = 6,
        transform: Callable[[Tensor, dict[str, Any]], tuple[Tensor, dict[str, Any]]] | None = None,
        cache: bool = False,
    ) -> None:
        fn = "SyntheticShapes"
        self.num_images = int(check_number(fn, "num_images", num_images, low=1))
        self.image_size = int(check_number(fn, "image_size", image_size, low=16))
        self.min_size = check_number(fn, "min_size", min_size, low=1, high=self.image_size)
        self.max_size = check_number(
            fn,
            "max_size",
            0.8 * self.image_size if max_size is None else max_size,
            low=self.min_size,
            high=self.image_size,
        )
        self.max_objects = int(check_number(fn, "max_objects", max_objects, low=1))
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"{fn}: seed must be an int, got {type(seed).__name__}")
        self.seed = seed
        self.transform = transform
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = {} if cache else None

    @property
    def num_classes(self) -> int:
        """Number of classes ``K``."""
        return len(self.class_names)

    @property
    def category_ids(self) -> list[int]:
        """COCO category id of each label (label ``k`` is category ``k + 1``)."""
        return list(range(1, self.num_classes + 1))

    def __len__(self) -> int:
        return self.num_images

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(image uint8 (S, S, 3), boxes (M, 4), labels (M,))`` of one item, untransformed.

        Example:
            >>> img, boxes, labels = SyntheticShapes(num_images=1, image_size=32).raw(0)
            >>> img.shape, boxes.shape == (len(labels), 4)
            ((32, 32, 3), True)
        """
        if not 0 <= index < self.num_images:
            raise IndexError(f"SyntheticShapes: index must be in [0, {self.num_images}), got {index}")
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        item = render_shapes(
            self.seed, index, self.image_size, self.min_size, self.max_size, self.max_objects
        )
        if self._cache is not None:
            self._cache[index] = item
        return item

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        img, boxes, labels = self.raw(int(index))
        image = torch.from_numpy(img).permute(2, 0, 1).float().div_(255.0)
        target: dict[str, Any] = {
            "boxes": torch.from_numpy(boxes.copy()),
            "labels": torch.from_numpy(labels.copy()),
            "image_id": int(index),
        }
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target

    def to_coco(self, file_names: Sequence[str] | None = None) -> dict[str, Any]:
        """The split's ground truth as a COCO-format dict (renders every image once).

        Args:
            file_names: Image file name of each item; default ``"{index:06d}.png"``.

        Returns:
            Dict with ``"images"``, ``"annotations"`` (``bbox`` as ``[x, y, w, h]``,
            ``iscrowd`` 0) and ``"categories"``.

        Example:
            >>> coco = SyntheticShapes(num_images=2, image_size=32, seed=0).to_coco()
            >>> [c["name"] for c in coco["categories"]][:2], len(coco["images"])
            (['rectangle', 'ellipse'], 2)
        """
        if file_names is not None and len(file_names) != self.num_images:
            raise ValueError(
                f"SyntheticShapes.to_coco: file_names must have {self.num_images} entries, "
                f"got {len(file_names)}"
            )
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for i in range(self.num_images):
            name = f"{i:06d}.png" if file_names is None else file_names[i]
            images.append({"id": i, "file_name": name, "width": self.image_size, "height": self.image_size})
            _, boxes, labels = self.raw(i)
            for box, label in zip(boxes.tolist(), labels.tolist()):
                w, h = box[2] - box[0], box[3] - box[1]
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": i,
                        "category_id": self.category_ids[label],
                        "bbox": [box[0], box[1], w, h],
                        "area": w * h,
                        "iscrowd": 0,
                    }
                )
        categories = [
            {"id": cid, "name": name, "supercategory": "shape"}
            for cid, name in zip(self.category_ids, self.class_names)
        ]
        return {"images": images, "annotations": annotations, "categories": categories}


def export_coco(
    dataset: SyntheticShapes,
    output_dir: str | os.PathLike[str],
    images_subdir: str = "images",
    annotation_name: str = "annotations.json",
) -> str:
    r"""Write a synthetic split as a COCO dataset: PNG images plus an annotation JSON.

    The result loads with :class:`focal_detect.data.CocoDetection` and evaluates with
    pycocotools. Files are written to ``output_dir/images_subdir/{index:06d}.png`` and
    ``output_dir/annotation_name`` (the JSON is written atomically). Needs Pillow.

    Args:
        dataset: The split to export.
        output_dir: Target folder (created if needed).
        images_subdir: Image folder name inside ``output_dir``.
        annotation_name: Annotation file name inside ``output_dir``.

    Returns:
        Path of the annotation JSON.

    Example:
        >>> import tempfile, json
        >>> path = export_coco(SyntheticShapes(num_images=2, image_size=32), tempfile.mkdtemp())
        >>> len(json.load(open(path))["images"])
        2
    """
    from PIL import Image

    if not isinstance(dataset, SyntheticShapes):
        raise TypeError(f"export_coco: dataset must be a SyntheticShapes, got {type(dataset).__name__}")
    out = os.fspath(output_dir)
    img_dir = os.path.join(out, images_subdir)
    os.makedirs(img_dir, exist_ok=True)
    coco = dataset.to_coco()
    for i, entry in enumerate(coco["images"]):
        img, _, _ = dataset.raw(i)
        Image.fromarray(img).save(os.path.join(img_dir, entry["file_name"]))
    ann_path = os.path.join(out, annotation_name)
    tmp = ann_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(coco, f)
    os.replace(tmp, ann_path)
    return ann_path
