"""Generate tests/data/box_goldens.json from torchvision (the peer implementation).

Run from the repository root with the peer environment (not needed by the tests):

    ~/peer-venv/bin/python tests/data/make_box_goldens.py

Inputs and outputs are stored as JSON numbers; every float32 value is exactly
representable as a double, so the tests can compare bit for bit. The calls recorded:

* ``torchvision.ops.box_iou(a, b)``, ``torchvision.ops.generalized_box_iou(a, b)``
  on valid boxes with a positive union;
* ``torchvision.ops.nms(boxes, scores, t)`` and ``torchvision.ops.batched_nms(boxes,
  scores, idxs, t)`` on integer-grid boxes with many score ties, duplicates and
  zero-area / degenerate boxes;
* ``BoxCoder(weights).encode_single(reference_boxes=boxes, proposals=anchors)`` and
  ``BoxCoder(weights, bbox_xform_clip=math.log(1000 / 16)).decode_single(deltas,
  anchors)`` from ``torchvision.models.detection._utils``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torchvision
from torchvision.models.detection._utils import BoxCoder

OUT = Path(__file__).with_name("box_goldens.json")


def rand_boxes(g: torch.Generator, n: int, scale: float = 100.0, min_side: float = 0.5) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g) * scale
    wh = torch.rand(n, 2, generator=g) * scale / 2 + min_side
    return torch.cat([xy, xy + wh], dim=1)


def grid_boxes(g: torch.Generator, n: int) -> torch.Tensor:
    # small integer grid: duplicates, shared edges, zero-area and degenerate boxes
    xy = torch.randint(0, 12, (n, 2), generator=g).float()
    wh = torch.randint(-2, 8, (n, 2), generator=g).float()
    return torch.cat([xy, xy + wh], dim=1)


def main() -> None:
    g = torch.Generator().manual_seed(20170807)
    out: dict = {"torchvision": torchvision.__version__, "torch": torch.__version__}

    a, b = rand_boxes(g, 9), rand_boxes(g, 7)
    b[0] = a[0]  # one identical pair (IoU exactly 1)
    out["iou"] = {
        "boxes1": a.tolist(),
        "boxes2": b.tolist(),
        "box_iou": torchvision.ops.box_iou(a, b).tolist(),
        "generalized_box_iou": torchvision.ops.generalized_box_iou(a, b).tolist(),
        "box_area": torchvision.ops.box_area(a).tolist(),
    }

    cases = []
    for k, thr in enumerate([0.0, 0.3, 0.5, 0.7, 1.0, 0.5, 0.45]):
        n = 40 if k < 5 else 120
        boxes = grid_boxes(g, n)
        scores = torch.randint(0, 6, (n,), generator=g).float() / 5  # many ties
        idxs = torch.randint(0, 3, (n,), generator=g)
        cases.append(
            {
                "boxes": boxes.tolist(),
                "scores": scores.tolist(),
                "idxs": idxs.tolist(),
                "iou_threshold": thr,
                "nms": torchvision.ops.nms(boxes, scores, thr).tolist(),
                "batched_nms": torchvision.ops.batched_nms(boxes, scores, idxs, thr).tolist(),
            }
        )
    out["nms"] = cases

    anchors, boxes = rand_boxes(g, 10, min_side=4.0), rand_boxes(g, 10, min_side=1.0)
    deltas = torch.randn(10, 4, generator=g) * 2
    deltas[0, 2:] = torch.tensor([9.0, 5.0])  # beyond the clamp
    deltas[1, 2:] = torch.tensor([-9.0, -5.0])  # below -clamp: not clamped by torchvision
    clip = math.log(1000.0 / 16)
    coding = {
        "anchors": anchors.tolist(),
        "boxes": boxes.tolist(),
        "deltas": deltas.tolist(),
        "clamp": clip,
        "cases": [],
    }
    for w in [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]:
        coder = BoxCoder(w, bbox_xform_clip=clip)
        coding["cases"].append(
            {
                "weights": list(w),
                "encode": coder.encode_single(boxes, anchors).tolist(),
                "decode": coder.decode_single(deltas, anchors).tolist(),
            }
        )
    out["coding"] = coding

    OUT.write_text(json.dumps(out, indent=None, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
