r"""COCO box AP with pycocotools, batched inference over a dataset, and drawing detections.

:func:`evaluate_coco` runs a detector (eval mode: ``model(images) -> [{"boxes",
"scores", "labels"}]``) over any dataset that has ``category_ids`` and ``to_coco()``
(:class:`~focal_detect.data.SyntheticShapes`, :class:`~focal_detect.data.CocoDetection`)
and returns the standard COCO numbers: AP (IoU .50:.05:.95), AP50, AP75 and AP for
small (< 32²), medium and large (> 96²) objects, plus AR@100.
pycocotools and Pillow are imported only inside the functions that need them.

**Progress.** :func:`predict_dataset` and :func:`evaluate_coco` report progress on
standard error while they run: a tqdm bar when tqdm is installed, else one plain line
per tenth of the dataset. ``progress=None`` (the default) shows it only when standard
error is a terminal (an interactive session), so logs, tests and doctests stay quiet;
``True`` or ``False`` forces it on or off.
"""

from __future__ import annotations

import contextlib
import copy
import io
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from focal_detect.data.transforms import collate_detection

__all__ = [
    "COCO_METRICS",
    "coco_metrics",
    "detections_to_coco",
    "draw_detections",
    "evaluate_coco",
    "format_metrics",
    "predict_dataset",
]

#: Names of the numbers :func:`coco_metrics` returns, in pycocotools' ``stats`` order.
COCO_METRICS: tuple[str, ...] = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)


def detections_to_coco(
    detections: Sequence[Mapping[str, Any]], category_ids: Sequence[int]
) -> list[dict[str, Any]]:
    r"""Convert per-image detections to COCO result records.

    Args:
        detections: One dict per image with ``"image_id"``, ``"boxes"`` ``(D, 4)`` in
            ``(x1, y1, x2, y2)``, ``"scores"`` ``(D,)`` and ``"labels"`` ``(D,)`` in
            ``0 .. K-1``.
        category_ids: COCO category id of each label.

    Returns:
        A list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``.

    Example:
        >>> det = {"image_id": 5, "boxes": torch.tensor([[1.0, 2.0, 4.0, 6.0]]),
        ...        "scores": torch.tensor([0.5]), "labels": torch.tensor([1])}
        >>> detections_to_coco([det], category_ids=[10, 20])
        [{'image_id': 5, 'category_id': 20, 'bbox': [1.0, 2.0, 3.0, 4.0], 'score': 0.5}]
    """
    out = []
    for det in detections:
        boxes = det["boxes"].detach().float().cpu()
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
        for b, s, lab in zip(
            xywh, det["scores"].detach().float().cpu().tolist(), det["labels"].cpu().tolist()
        ):
            if not 0 <= lab < len(category_ids):
                raise ValueError(f"detections_to_coco: label {lab} must be in [0, {len(category_ids)})")
            out.append(
                {"image_id": det["image_id"], "category_id": int(category_ids[lab]), "bbox": b, "score": s}
            )
    return out


def coco_metrics(
    ground_truth: Mapping[str, Any], results: Sequence[Mapping[str, Any]], per_class: bool = False
) -> dict[str, float]:
    r"""COCO box metrics of ``results`` against a COCO-format ground-truth dict.

    Crowd annotations (``iscrowd`` 1) are ignore regions, as in pycocotools. An empty
    result list scores 0 everywhere (pycocotools cannot load one).

    Args:
        ground_truth: Dict with ``images``, ``annotations`` and ``categories``.
        results: Records as made by :func:`detections_to_coco`.
        per_class: Also return each category's AP@[.5:.95] (all sizes, 100
            detections) as ``"AP/<category name>"``: the mean of pycocotools'
            precision over the IoU thresholds and recall points, as its ``AP`` is the
            mean of these over the categories with ground truth (``-1``: none).

    Returns:
        ``{name: value}`` for the names in :data:`COCO_METRICS` (and the per-class
        keys); values in ``[0, 1]``, or ``-1`` where the ground truth has no object of
        that size (or class).

    Example:
        >>> gt = {"images": [{"id": 1, "width": 50, "height": 50}],
        ...       "categories": [{"id": 1, "name": "a"}],
        ...       "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20],
        ...                        "area": 400, "iscrowd": 0}]}
        >>> res = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9}]
        >>> m = coco_metrics(gt, res); m["AP"], m["AP50"], m["APl"]
        (1.0, 1.0, -1.0)
        >>> coco_metrics(gt, res, per_class=True)["AP/a"]
        1.0
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    names = {int(c["id"]): str(c["name"]) for c in ground_truth.get("categories", [])}
    if not results:
        out = {k: 0.0 for k in COCO_METRICS}
        if per_class:
            with_gt = {int(a["category_id"]) for a in ground_truth.get("annotations", [])}
            out.update({f"AP/{n}": (0.0 if k in with_gt else -1.0) for k, n in names.items()})
        return out
    gt = copy.deepcopy(dict(ground_truth))
    for i, a in enumerate(gt.get("annotations", [])):
        a.setdefault("id", i + 1)
        a.setdefault("iscrowd", 0)
        a.setdefault("area", float(a["bbox"][2] * a["bbox"][3]))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes([dict(r) for r in results])
        ev = COCOeval(coco_gt, coco_dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out = {k: float(v) for k, v in zip(COCO_METRICS, ev.stats)}
    if per_class:
        precision = ev.eval["precision"][:, :, :, 0, -1]  # (T, R, K): all areas, 100 detections
        for k, cat in enumerate(ev.params.catIds):
            p = precision[:, :, k]
            p = p[p > -1]
            out[f"AP/{names.get(int(cat), str(cat))}"] = float(p.mean()) if p.size else -1.0
    return out


def format_metrics(metrics: Mapping[str, float], names: Sequence[str] = COCO_METRICS[:6]) -> str:
    r"""A small text table of COCO metrics (values in percent).

    Example:
        >>> print(format_metrics({"AP": 0.5, "AP50": 0.75}, names=("AP", "AP50")))
        AP     AP50
        50.0   75.0
    """
    head = " ".join(f"{n:<6}" for n in names).rstrip()
    vals = " ".join(f"{100 * metrics[n]:<6.1f}" if metrics[n] >= 0 else f"{'n/a':<6}" for n in names).rstrip()
    return head + "\n" + vals


class _Progress:
    """Images done out of ``total`` on stderr: tqdm if installed, else a line per tenth."""

    def __init__(self, fn: str, total: int, progress: bool | None) -> None:
        if progress is not None and not isinstance(progress, bool):
            raise TypeError(f"{fn}: progress must be a bool or None, got {type(progress).__name__}")
        isatty = getattr(sys.stderr, "isatty", None)
        self.enabled = progress if progress is not None else bool(isatty and isatty())
        self.fn, self.total, self.done, self.next_tenth = fn, total, 0, 1
        self.start = time.monotonic()
        self.bar: Any = None
        if self.enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self.bar = tqdm(total=total, desc=fn, unit="img", file=sys.stderr, dynamic_ncols=True)

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(n)
            return
        if self.total > 0 and self.done * 10 >= self.next_tenth * self.total:
            self.next_tenth = self.done * 10 // self.total + 1  # one line per update at most
            elapsed = time.monotonic() - self.start
            print(
                f"{self.fn}: {self.done}/{self.total} images ({100 * self.done // self.total}%), {elapsed:.1f} s",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@torch.no_grad()
def predict_dataset(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int = 8,
    device: torch.device | str | None = None,
    num_workers: int = 0,
    progress: bool | None = None,
) -> list[dict[str, Any]]:
    r"""Run a detector in eval mode over a dataset.

    Args:
        model: Detector; ``model(images)`` returns one dict per image with
            ``"boxes"``, ``"scores"``, ``"labels"``.
        dataset: Returns ``(image, target)`` with ``target["image_id"]``.
        batch_size: Images per forward pass.
        device: Where to run (default: the model's device).
        num_workers: Data-loader workers.
        progress: Report images done on standard error (see the module notes);
            ``None`` (default): only when standard error is a terminal.

    Returns:
        One dict per image (CPU tensors) with ``"image_id"`` added.

    Example:
        >>> class Fixed(nn.Module):
        ...     def forward(self, images):
        ...         return [{"boxes": torch.tensor([[0.0, 0.0, 2.0, 2.0]]), "scores": torch.tensor([0.9]),
        ...                  "labels": torch.tensor([0])} for _ in images]
        >>> data = [(torch.zeros(3, 4, 4), {"image_id": i}) for i in range(3)]
        >>> [d["image_id"] for d in predict_dataset(Fixed(), data, batch_size=2)]
        [0, 1, 2]
    """
    if device is None:
        p = next(iter(model.parameters()), None)
        device = p.device if p is not None else torch.device("cpu")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_detection, num_workers=num_workers
    )
    out: list[dict[str, Any]] = []
    bar = _Progress("predict_dataset", len(dataset), progress)  # type: ignore[arg-type]
    try:
        for images, targets in loader:
            dets = model([im.to(device) for im in images])
            for det, tgt in zip(dets, targets):
                row = {k: v.detach().cpu() for k, v in det.items()}
                row["image_id"] = tgt["image_id"]
                out.append(row)
            bar.update(len(images))
    finally:
        bar.close()
        model.train(was_training)
    return out


def evaluate_coco(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int = 8,
    device: torch.device | str | None = None,
    num_workers: int = 0,
    progress: bool | None = None,
    per_class: bool = False,
) -> dict[str, float]:
    r"""COCO box AP of a detector on a dataset with ``category_ids`` and ``to_coco()``.

    Args:
        model: Detector with torchvision's eval interface.
        dataset: E.g. :class:`~focal_detect.data.SyntheticShapes` or
            :class:`~focal_detect.data.CocoDetection`.
        batch_size: Images per forward pass.
        device: Where to run (default: the model's device).
        num_workers: Data-loader workers.
        progress: Progress of the inference pass on standard error, as in
            :func:`predict_dataset`; ``None`` (default): only on a terminal.
        per_class: Also each class's AP, as ``"AP/<class name>"`` (see :func:`coco_metrics`).

    Returns:
        :func:`coco_metrics` of the model's detections.

    Example:
        >>> from focal_detect.data import SyntheticShapes
        >>> ds = SyntheticShapes(num_images=2, image_size=32, seed=0)
        >>> class Oracle(nn.Module):  # returns the ground truth: perfect AP
        ...     def forward(self, images):
        ...         return [{"boxes": ds[i][1]["boxes"], "labels": ds[i][1]["labels"],
        ...                  "scores": torch.ones(len(ds[i][1]["labels"]))} for i in range(len(images))]
        >>> evaluate_coco(Oracle(), ds, batch_size=2)["AP"]
        1.0
    """
    for attr in ("category_ids", "to_coco"):
        if not hasattr(dataset, attr):
            raise TypeError(
                f"evaluate_coco: dataset must have {attr!r} (a COCO-style dataset), got {type(dataset).__name__}"
            )
    dets = predict_dataset(
        model, dataset, batch_size=batch_size, device=device, num_workers=num_workers, progress=progress
    )
    results = detections_to_coco(dets, dataset.category_ids)  # type: ignore[attr-defined]
    return coco_metrics(dataset.to_coco(), results, per_class=per_class)  # type: ignore[attr-defined]


def draw_detections(
    image: Tensor,
    boxes: Tensor,
    labels: Tensor,
    scores: Tensor | None = None,
    class_names: Sequence[str] | None = None,
    score_threshold: float = 0.3,
    scale: int = 1,
) -> Any:
    r"""Draw boxes with class names and scores on an image (returns a PIL image).

    Shape:
        image: ``(3, H, W)``.
        boxes: ``(D, 4)``.
        labels: ``(D,)``.
        scores: ``(D,)``.

    Args:
        image: ``(3, H, W)`` float in ``[0, 1]``.
        boxes: ``(D, 4)`` in ``(x1, y1, x2, y2)`` pixels.
        labels: ``(D,)`` class indices.
        scores: ``(D,)`` or ``None`` (ground truth: everything drawn).
        class_names: Name of each class index.
        score_threshold: Boxes scoring below are not drawn.
        scale: Integer upscaling of the output (small images read better enlarged).

    Example:
        >>> im = draw_detections(torch.zeros(3, 8, 8), torch.tensor([[1.0, 1.0, 6.0, 6.0]]),
        ...                      torch.tensor([0]), torch.tensor([0.9]), ["a"], scale=2)
        >>> im.size, im.getpixel((2, 2)) != (0, 0, 0)
        ((16, 16), True)
    """
    import numpy as np
    from PIL import Image, ImageDraw

    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"draw_detections: image must have shape (3, H, W), got {tuple(image.shape)}")
    arr = (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    pil = Image.fromarray(arr)
    if scale != 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(pil)
    palette = [
        (230, 25, 75),
        (60, 180, 75),
        (255, 225, 25),
        (0, 130, 200),
        (245, 130, 48),
        (145, 30, 180),
        (70, 240, 240),
        (240, 50, 230),
        (210, 245, 60),
        (250, 190, 190),
    ]
    for i, (box, lab) in enumerate(zip(boxes.detach().cpu().tolist(), labels.cpu().tolist())):
        score = None if scores is None else float(scores[i])
        if score is not None and score < score_threshold:
            continue
        color = palette[int(lab) % len(palette)]
        x1, y1, x2, y2 = (v * scale for v in box)
        draw.rectangle([x1, y1, x2, y2], outline=color, width=max(1, scale))
        name = class_names[int(lab)] if class_names is not None else str(int(lab))
        text = name if score is None else f"{name} {score:.2f}"
        draw.text((x1 + 2, max(y1 - 11, 0)), text, fill=color)
    return pil
