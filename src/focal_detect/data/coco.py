r"""COCO-format detection data (an annotation JSON plus an image folder) for your own sets.

The whole annotation file is validated when the dataset is built, and every image file
is checked to exist (and, by default, that its header's size matches the JSON), so a
bad record stops the run at once with a message naming the file and the record instead
of crashing in the middle of an epoch. Records that are structurally wrong (missing
keys, wrong types, unknown ``image_id`` or ``category_id``, duplicate ids) raise
``ValueError``; *boxes* that cannot be used (zero or negative width or height,
NaN/infinite coordinates, nothing left inside the image) are skipped, counted and
reported in one warning (``strict=True`` turns them into errors too).

``iscrowd`` annotations are not objects to detect: they are returned among the boxes
with ``target["iscrowd"]`` set, which :class:`~focal_detect.models.RetinaNet` turns
into ignore regions for the anchors inside them; COCO evaluation ignores them too.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["CocoDetection", "load_coco_json", "load_image"]


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def load_image(path: str | os.PathLike[str]) -> Tensor:
    r"""Read an image file as an RGB ``float32`` tensor ``(3, H, W)`` in ``[0, 1]`` (needs Pillow).

    Example:
        >>> import tempfile, os
        >>> from PIL import Image
        >>> path = os.path.join(tempfile.mkdtemp(), "a.png")
        >>> Image.new("RGB", (5, 2), (255, 0, 0)).save(path)
        >>> img = load_image(path); tuple(img.shape), img[:, 0, 0].tolist()
        ((3, 2, 5), [1.0, 0.0, 0.0])
    """
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)


def load_coco_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    r"""Read a COCO annotation file; raise ``ValueError`` naming the file if it is not one.

    Example:
        >>> import tempfile, os, json
        >>> p = os.path.join(tempfile.mkdtemp(), "a.json")
        >>> _ = open(p, "w").write(json.dumps({"images": [], "annotations": [], "categories": []}))
        >>> sorted(load_coco_json(p))
        ['annotations', 'categories', 'images']
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"COCO annotation file {path!r} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a valid JSON file ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise ValueError(f"{path}: missing top-level key {key!r}")
        if not isinstance(data[key], list):
            raise ValueError(f"{path}: {key!r} must be a list, got {type(data[key]).__name__}")
    return data


class CocoDetection(Dataset):
    r"""A COCO-format detection dataset: ``images_dir`` plus an annotation JSON.

    Item ``i`` is ``(image, target)``: ``image`` a ``float32`` tensor ``(3, H, W)`` in
    ``[0, 1]``; ``target`` holds ``"boxes"`` ``(M, 4)`` ``float32`` in
    ``(x1, y1, x2, y2)`` pixels (COCO's ``[x, y, w, h]`` converted and clipped to the
    image), ``"labels"`` ``(M,)`` ``int64`` in ``0 .. K-1`` (categories sorted by id),
    ``"iscrowd"`` ``(M,)`` ``bool`` (crowd regions: ignored in training, not objects)
    and ``"image_id"`` (the COCO image id).

    Args:
        images_dir: Folder the images' ``file_name`` entries are relative to.
        annotation_file: COCO JSON with ``images``, ``annotations`` and ``categories``.
        transform: Optional callable ``(image, target) -> (image, target)``.
        strict: Raise on unusable boxes instead of skipping them with a warning.
        check_image_sizes: Read each image header at construction and compare its size
            with the JSON's ``width``/``height``.

    Attributes:
        num_skipped: Number of annotations skipped for unusable boxes.

    Raises:
        FileNotFoundError: The annotation file or an image file is missing.
        ValueError: A malformed record (the message names the file and the record).

    Example:
        >>> import tempfile, os, json
        >>> from PIL import Image
        >>> d = tempfile.mkdtemp()
        >>> Image.new("RGB", (8, 6)).save(os.path.join(d, "a.png"))
        >>> ann = {"images": [{"id": 7, "file_name": "a.png", "width": 8, "height": 6}],
        ...        "categories": [{"id": 3, "name": "cat"}],
        ...        "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [1, 1, 2, 3]}]}
        >>> _ = open(os.path.join(d, "ann.json"), "w").write(json.dumps(ann))
        >>> ds = CocoDetection(d, os.path.join(d, "ann.json"))
        >>> img, t = ds[0]
        >>> tuple(img.shape), t["boxes"].tolist(), t["labels"].tolist(), t["image_id"]
        ((3, 6, 8), [[1.0, 1.0, 3.0, 4.0]], [0], 7)
    """

    def __init__(
        self,
        images_dir: str | os.PathLike[str],
        annotation_file: str | os.PathLike[str],
        transform: Callable[[Tensor, dict[str, Any]], tuple[Tensor, dict[str, Any]]] | None = None,
        strict: bool = False,
        check_image_sizes: bool = True,
    ) -> None:
        self.images_dir = os.fspath(images_dir)
        self.annotation_file = os.fspath(annotation_file)
        self.transform = transform
        if not os.path.isdir(self.images_dir):
            raise FileNotFoundError(f"CocoDetection: images_dir {self.images_dir!r} is not a directory")
        data = load_coco_json(self.annotation_file)
        cats = self._read_categories(data["categories"])
        self.category_ids: list[int] = sorted(cats)
        self.class_names: tuple[str, ...] = tuple(cats[k] for k in self.category_ids)
        index_of = self._read_images(data["images"])
        if check_image_sizes:
            self._check_sizes()
        kept = self._read_annotations(data["annotations"], index_of, strict)
        self._coco = {
            "images": self._images,
            "annotations": kept,
            "categories": [{"id": k, "name": cats[k]} for k in self.category_ids],
        }

    def _read_categories(self, records: list[Any]) -> dict[int, str]:
        """``{category id: name}``; every record checked."""
        src = self.annotation_file
        cats: dict[int, str] = {}
        for i, c in enumerate(records):
            where = f"{src}: categories[{i}]"
            if not isinstance(c, dict):
                raise ValueError(f"{where} must be an object, got {type(c).__name__}")
            if not _is_int(c.get("id")):
                raise ValueError(f"{where} must have an integer 'id', got {c.get('id')!r}")
            if c["id"] in cats:
                raise ValueError(f"{where}: duplicate category id {c['id']}")
            cats[c["id"]] = str(c.get("name", c["id"]))
        if not cats:
            raise ValueError(f"{src}: 'categories' must not be empty")
        return cats

    def _read_images(self, records: list[Any]) -> dict[int, int]:
        """Fill ``self._images``; ``{image id: index}``. Missing files are one error."""
        src = self.annotation_file
        self._images: list[dict[str, Any]] = []
        index_of: dict[int, int] = {}
        missing: list[str] = []
        for i, im in enumerate(records):
            where = f"{src}: images[{i}]"
            if not isinstance(im, dict):
                raise ValueError(f"{where} must be an object, got {type(im).__name__}")
            if not _is_int(im.get("id")):
                raise ValueError(f"{where} must have an integer 'id', got {im.get('id')!r}")
            where = f"{src}: image id {im['id']}"
            if im["id"] in index_of:
                raise ValueError(f"{where}: duplicate image id")
            if not isinstance(im.get("file_name"), str) or not im["file_name"]:
                raise ValueError(
                    f"{where} must have a non-empty string 'file_name', got {im.get('file_name')!r}"
                )
            for key in ("width", "height"):
                if key in im and not (_is_number(im[key]) and math.isfinite(im[key]) and im[key] > 0):
                    raise ValueError(f"{where}: {key!r} must be a positive finite number, got {im[key]!r}")
            if not os.path.isfile(os.path.join(self.images_dir, im["file_name"])):
                missing.append(im["file_name"])
            index_of[im["id"]] = len(self._images)
            self._images.append(im)
        if missing:
            raise FileNotFoundError(
                f"CocoDetection: {len(missing)} image file(s) listed in {src} are missing from "
                f"{self.images_dir!r}, e.g. {missing[:3]}"
            )
        return index_of

    def _read_annotations(
        self, records: list[Any], index_of: dict[int, int], strict: bool
    ) -> list[dict[str, Any]]:
        """Fill ``self._targets`` and ``self.num_skipped``; the kept records."""
        src = self.annotation_file
        label_of = {cid: k for k, cid in enumerate(self.category_ids)}
        per_image: list[list[tuple[list[float], int, bool]]] = [[] for _ in self._images]
        kept: list[dict[str, Any]] = []
        skipped: list[str] = []
        for i, a in enumerate(records):
            where = self._check_annotation(i, a, index_of, label_of)
            im = self._images[index_of[a["image_id"]]]
            reason = self._box_problem(a["bbox"], im)
            if reason is not None:
                if strict:
                    raise ValueError(f"{where}: {reason}")
                skipped.append(f"{where.split(': ', 1)[1]} ({reason})")
                continue
            x, y, w, h = (float(v) for v in a["bbox"])
            box = [x, y, x + w, y + h]
            if "width" in im:
                box = [
                    min(max(box[0], 0.0), im["width"]),
                    min(max(box[1], 0.0), im["height"]),
                    min(max(box[2], 0.0), im["width"]),
                    min(max(box[3], 0.0), im["height"]),
                ]
            crowd = bool(a.get("iscrowd", 0))
            per_image[index_of[a["image_id"]]].append((box, label_of[a["category_id"]], crowd))
            kept.append(a)
        self.num_skipped = len(skipped)
        if skipped:
            warnings.warn(
                f"CocoDetection: skipped {len(skipped)} annotation(s) with unusable boxes in {src}: "
                + "; ".join(skipped[:5])
                + (" ..." if len(skipped) > 5 else ""),
                stacklevel=3,  # the caller of CocoDetection(...)
            )
        self._targets = per_image
        return kept

    def _check_annotation(self, i: int, a: object, index_of: dict[int, int], label_of: dict[int, int]) -> str:
        """Raise on a malformed annotation record; its name for messages."""
        src = self.annotation_file
        where = f"{src}: annotations[{i}]"
        if not isinstance(a, dict):
            raise ValueError(f"{where} must be an object, got {type(a).__name__}")
        if "id" in a:
            where = f"{src}: annotation id {a['id']!r}"
        for key in ("image_id", "category_id", "bbox"):
            if key not in a:
                raise ValueError(f"{where}: missing key {key!r}")
        if a["image_id"] not in index_of:
            raise ValueError(f"{where}: unknown image_id {a['image_id']!r}")
        if a["category_id"] not in label_of:
            raise ValueError(
                f"{where}: unknown category_id {a['category_id']!r} (categories: {self.category_ids})"
            )
        bbox = a["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            raise ValueError(f"{where}: 'bbox' must be a list of 4 numbers [x, y, w, h], got {bbox!r}")
        if a.get("iscrowd", 0) not in (0, 1, True, False):
            raise ValueError(f"{where}: 'iscrowd' must be 0 or 1, got {a.get('iscrowd')!r}")
        return where

    def _check_sizes(self) -> None:
        from PIL import Image

        for im in self._images:
            path = os.path.join(self.images_dir, im["file_name"])
            try:
                with Image.open(path) as f:
                    w, h = f.size
            except Exception as e:
                raise ValueError(
                    f"{self.annotation_file}: image id {im['id']}: cannot read {path!r} ({e})"
                ) from None
            if ("width" in im and im["width"] != w) or ("height" in im and im["height"] != h):
                raise ValueError(
                    f"{self.annotation_file}: image id {im['id']}: JSON size "
                    f"{im.get('width')}x{im.get('height')} differs from the file's {w}x{h} ({path})"
                )
            im.setdefault("width", w)
            im.setdefault("height", h)

    @staticmethod
    def _box_problem(bbox: list[Any], im: dict[str, Any]) -> str | None:
        if not all(math.isfinite(float(v)) for v in bbox):
            return f"non-finite bbox {bbox}"
        x, y, w, h = (float(v) for v in bbox)
        if w <= 0 or h <= 0:
            return f"non-positive width or height in bbox {bbox}"
        if "width" in im:
            iw = min(x + w, im["width"]) - max(x, 0.0)
            ih = min(y + h, im["height"]) - max(y, 0.0)
            if iw <= 0 or ih <= 0:
                return f"bbox {bbox} lies outside the {im['width']}x{im['height']} image"
        return None

    @property
    def num_classes(self) -> int:
        """Number of classes ``K``."""
        return len(self.category_ids)

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        im = self._images[index]
        image = load_image(os.path.join(self.images_dir, im["file_name"]))
        objs = self._targets[index]
        target: dict[str, Any] = {
            "boxes": torch.tensor([b for b, _, _ in objs], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([lab for _, lab, _ in objs], dtype=torch.int64),
            "iscrowd": torch.tensor([crowd for _, _, crowd in objs], dtype=torch.bool),
            "image_id": im["id"],
        }
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target

    def to_coco(self) -> dict[str, Any]:
        """The validated ground truth as a COCO dict (unusable boxes removed)."""
        return self._coco
