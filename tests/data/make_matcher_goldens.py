"""Generate tests/data/matcher_torchvision.json from torchvision's Matcher.

Run with the peer environment (torchvision installed):

    ~/peer-venv/bin/python tests/data/make_matcher_goldens.py

Peer: torchvision (version recorded in the file),
``torchvision.models.detection._utils.Matcher(high, low, allow_low_quality_matches)``
called on an (M, N) float32 quality matrix, and on
``torchvision.ops.box_iou(gt_boxes, anchors)`` for box cases. The inputs are stored
with the outputs, so the tests need neither torchvision nor this script.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torchvision
from torchvision.models.detection._utils import Matcher
from torchvision.ops import box_iou

OUT = Path(__file__).with_name("matcher_torchvision.json")


def matrix_cases(gen: torch.Generator) -> list[dict]:
    """Quality matrices stored as integers ``k``; the matrix is ``float32(k) / scale``."""
    cases = []
    # Quantised values: many exact ties, values exactly at both thresholds.
    for i in range(40):
        m = int(torch.randint(1, 7, (), generator=gen))
        n = int(torch.randint(1, 25, (), generator=gen))
        k = torch.randint(0, 11, (m, n), generator=gen)
        if i % 8 == 0:
            k[0] = 0  # a box overlapping nothing: torchvision's "all zero" quirk
        if i % 8 == 1 and m > 1:
            k[1] = k[0]  # duplicate box rows
        cases.append({"quality_int": k.tolist(), "scale": 10})
    # Continuous values with a tie planted on each box's best anchor.
    for _ in range(15):
        m = int(torch.randint(1, 6, (), generator=gen))
        n = int(torch.randint(2, 20, (), generator=gen))
        k = torch.randint(0, 800, (m, n), generator=gen)
        best = k.argmax(1)
        other = (best + 1) % n
        k[torch.arange(m), other] = k[torch.arange(m), best]
        cases.append({"quality_int": k.tolist(), "scale": 1000})
    out = []
    for c in cases:
        q = torch.tensor(c["quality_int"], dtype=torch.float32) / c["scale"]
        for high, low in ((0.5, 0.4), (0.5, 0.5), (0.7, 0.3)):
            for lq in (True, False):
                res = Matcher(high, low, lq)(q.clone())
                out.append(
                    {**c, "high": high, "low": low, "allow_low_quality_matches": lq, "expected": res.tolist()}
                )
    return out


def box_cases(gen: torch.Generator) -> list[dict]:
    # A small regular anchor grid (stride 8, 3 shapes) and random boxes on a 64 px image.
    ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    shifts = torch.stack((xs, ys, xs, ys), -1).reshape(-1, 1, 4) * 8
    cell = torch.tensor([[-8.0, -8.0, 8.0, 8.0], [-12.0, -6.0, 12.0, 6.0], [-6.0, -12.0, 6.0, 12.0]])
    anchors = (shifts + cell).reshape(-1, 4)
    out = []
    for i in range(12):
        m = int(torch.randint(1, 6, (), generator=gen))
        # quarter-pixel coordinates: exact in float32 and short in JSON
        xy = (torch.rand(m, 2, generator=gen) * 280).round() / 4 - 3
        wh = (torch.rand(m, 2, generator=gen) * 160).round() / 4 + 2
        boxes = torch.cat((xy, xy + wh), 1)
        if i == 0:
            boxes[0] = torch.tensor([100.0, 100.0, 110.0, 110.0])  # overlaps no anchor
        if i == 1:
            boxes = torch.cat((boxes, boxes[:1]))  # duplicate box
        if i == 2:
            boxes[0] = torch.tensor([8.0, 8.0, 24.0, 24.0])  # exactly an anchor
        res = Matcher(0.5, 0.4, True)(box_iou(boxes, anchors))
        out.append({"gt_boxes": boxes.tolist(), "expected": res.tolist()})
    return [{"anchors": anchors.tolist(), "images": out}]


def main() -> None:
    gen = torch.Generator().manual_seed(20170807)
    data = {
        "peer": f"torchvision {torchvision.__version__}, torch {torch.__version__}",
        "call": "torchvision.models.detection._utils.Matcher(high, low, allow_low_quality_matches)(quality)",
        "matrix_cases": matrix_cases(gen),
        "box_cases": box_cases(gen),
    }
    OUT.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
