"""Generate tests/data/tutorial_tv_golden.json for the torchvision tutorial.

Run with the peer environment (torch 2.14.1, torchvision 0.29.1)::

    ~/peer-venv/bin/python tests/data/make_tutorial_tv_golden.py

It builds the tutorial's tiny torchvision RetinaNet (docs/tutorials/
torchvision_retinanet.py), runs one training forward pass on the tutorial's batch and
records what torchvision's ``RetinaNet.compute_loss`` received (head outputs, anchors,
targets after the model's transform), torchvision's two loss values, and the
foreground / ignored anchor counts of torchvision's own ``Matcher``. The test
``tests/test_docs.py::test_torchvision_tutorial_loss_matches_golden`` recomputes the
loss from these inputs with focal-detect only and compares.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torchvision
from torchvision.ops import box_iou

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "docs" / "tutorials"))

import torchvision_retinanet as tutorial


def main() -> None:
    torch.manual_seed(0)
    model = tutorial.tiny_retinanet().train()
    images, targets = tutorial.demo_batch()
    captured: dict = {}
    original = model.compute_loss

    def spy(targets, head_outputs, anchors):
        captured.update(targets=targets, head_outputs=head_outputs, anchors=anchors)
        return original(targets, head_outputs, anchors)

    model.compute_loss = spy
    with torch.no_grad():
        losses = model(images, targets)

    anchors = captured["anchors"]
    assert all(torch.equal(a, anchors[0]) for a in anchors)
    num_fg, num_ignored = [], []
    for t in captured["targets"]:
        matched = model.proposal_matcher(box_iou(t["boxes"], anchors[0]))
        num_fg.append(int((matched >= 0).sum()))
        num_ignored.append(int((matched == model.proposal_matcher.BETWEEN_THRESHOLDS).sum()))

    out = {
        "generator": "tests/data/make_tutorial_tv_golden.py",
        "peer": f"torch {torch.__version__}, torchvision {torchvision.__version__}",
        "call": "torchvision.models.detection.RetinaNet.compute_loss(targets, head_outputs, anchors)",
        "targets": [
            {"boxes": t["boxes"].tolist(), "labels": t["labels"].tolist()} for t in captured["targets"]
        ],
        "cls_logits": captured["head_outputs"]["cls_logits"].tolist(),
        "bbox_regression": captured["head_outputs"]["bbox_regression"].tolist(),
        "anchors": anchors[0].tolist(),
        "torchvision_loss": {k: float(v) for k, v in losses.items()},
        "torchvision_num_foreground": num_fg,
        "torchvision_num_ignored": num_ignored,
    }
    path = Path(__file__).with_name("tutorial_tv_golden.json")
    path.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(
        f"wrote {path} ({path.stat().st_size} bytes): {out['torchvision_loss']}, "
        f"fg {num_fg}, ignored {num_ignored}"
    )


if __name__ == "__main__":
    main()
