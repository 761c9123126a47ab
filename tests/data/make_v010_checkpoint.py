"""Write the 0.1.0 checkpoints of ``tests/test_model_io.py`` and 0.1.0's outputs on them.

Needs the 0.1.0 source tree (commit 1dff6bf), not this one: run from the repository root

    PYTHONPATH=/path/to/focal-detect-0.1.0/src python tests/data/make_v010_checkpoint.py

(the script refuses to run against a newer tree: 0.1.0 is recognised by its flat
``RetinaNetConfig`` with a ``fg_iou_thresh`` field). It writes three files:

* ``v010_model.pt``: a ``tiny`` model written by 0.1.0's ``focal_detect.cli.save_model``
  with 0.1.0 flat config keys that differ from their defaults in every group
  (``fg_iou_thresh``, ``bg_iou_thresh``, ``focal_gamma``, ``focal_alpha``,
  ``smooth_l1_beta``, ``score_thresh``, ``nms_thresh``, ``detections_per_img``,
  ``topk_candidates``, ``size_divisible``, ``anchor_sizes``), and the classifier's bias set
  to 0 so that every score is about 0.5 (top-k, NMS and the cap have work);
* ``v010_train/checkpoint_last.pt``: the training checkpoint of
  ``focal-detect train --synthetic 8 --image-size 64 --preset tiny --iterations 2``
  (optimizer, scheduler, RNG and data state included), as 0.1.0 wrote it;
* ``v010_outputs.pt``: a fixed input (two images, targets) and, for each of the two
  checkpoints, what 0.1.0's ``load_model`` made of it: the dense head outputs on the
  padded batch, the evaluation-mode detections and the training-mode losses.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

import focal_detect
from focal_detect import cli
from focal_detect.models import RetinaNetConfig

HERE = Path(__file__).resolve().parent
MODEL = HERE / "v010_model.pt"
TRAIN = HERE / "v010_train" / "checkpoint_last.pt"
OUTPUTS = HERE / "v010_outputs.pt"

FLAT_CHANGES = {
    "size_divisible": 32,
    "fg_iou_thresh": 0.55,
    "bg_iou_thresh": 0.35,
    "focal_gamma": 1.5,
    "focal_alpha": 0.3,
    "smooth_l1_beta": 0.2,
    "score_thresh": 0.1,
    "nms_thresh": 0.6,
    "detections_per_img": 20,
    "topk_candidates": 50,
    "anchor_sizes": (16.0, 32.0, 64.0, 128.0, 256.0),
}


def fixed_input() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(2017)
    images = [torch.rand(3, 48, 64, generator=g), torch.rand(3, 40, 40, generator=g)]
    targets = [
        {
            "boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0], [20.0, 2.0, 60.0, 22.0]]),
            "labels": torch.tensor([0, 2]),
        },
        {"boxes": torch.tensor([[10.0, 10.0, 28.0, 36.0]]), "labels": torch.tensor([1])},
    ]
    return images, targets


def outputs_of(path: Path) -> dict[str, object]:
    model, meta = cli.load_model(path)
    images, targets = fixed_input()
    with torch.no_grad():
        batch, _, _, _ = model.preprocess(images)
        cls, box = model.dense(batch)
        detections = model(images)
    model.train()
    with torch.no_grad():
        losses = model(images, targets)
    return {
        "dense_cls": [c.clone() for c in cls],
        "dense_box": [b.clone() for b in box],
        "detections": [{k: v.clone() for k, v in d.items()} for d in detections],
        "losses": {k: v.clone() for k, v in losses.items()},
        "meta": meta,
    }


def main() -> None:
    if "fg_iou_thresh" not in {f.name for f in __import__("dataclasses").fields(RetinaNetConfig)}:
        raise SystemExit("make_v010_checkpoint.py must run against the 0.1.0 tree (see its docstring)")
    torch.set_num_threads(1)  # the outputs are compared at one intra-op thread (as they were written)
    torch.manual_seed(0)
    model = cli.build_model(3, "tiny", **FLAT_CHANGES)
    with torch.no_grad():
        model.head.cls_logits.bias.fill_(0.0)
    cli.save_model(model, MODEL, ["circle", "square", "triangle"], [1, 2, 5])

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "run")
        argv = ["train", "--synthetic", "8", "--image-size", "64", "--preset", "tiny", "--iterations", "2"]
        argv += ["--batch-size", "2", "--output-dir", out, "--no-progress", "--seed", "0", "--log-every", "1"]
        assert cli.main(argv) == 0
        TRAIN.parent.mkdir(exist_ok=True)
        shutil.copyfile(os.path.join(out, "checkpoint_last.pt"), TRAIN)

    images, targets = fixed_input()
    torch.save(
        {
            "version": focal_detect.__version__,
            "torch": str(torch.__version__),
            "images": images,
            "targets": targets,
            "model": outputs_of(MODEL),
            "train": outputs_of(TRAIN),
        },
        OUTPUTS,
    )
    print(
        f"wrote {MODEL.name}, {TRAIN.parent.name}/{TRAIN.name}, {OUTPUTS.name} with focal-detect "
        f"{focal_detect.__version__}, torch {torch.__version__}"
    )


if __name__ == "__main__":
    main()
