"""Tutorial: train and evaluate the reference RetinaNet on a COCO-format set from Python.

The CPU route of the COCO tutorial, in Python: the same model and settings as
``focal-detect train --config retinanet_cpu.toml`` (the configuration of
``focal-detect demo``, 1200 steps). Run it in the folder where ``focal-detect
export-synthetic`` wrote ``data/shapes_train`` and ``data/shapes_val``::

    python coco_python.py

It trains for about 3 minutes on 2 CPU cores and prints the COCO AP table. With
``FOCAL_DETECT_TUTORIAL_TINY=1`` (what the test suite sets) it trains a tiny model for
4 steps instead: a seconds-long check that the code runs, with a meaningless AP.
"""

from __future__ import annotations

import os

from focal_detect.data import CocoDetection
from focal_detect.engine import TrainConfig, train
from focal_detect.evaluation import evaluate_coco, format_metrics
from focal_detect.models import build_model

TINY = os.environ.get("FOCAL_DETECT_TUTORIAL_TINY") == "1"


def main() -> dict[str, float]:
    train_set = CocoDetection("data/shapes_train/images", "data/shapes_train/annotations.json")
    val_set = CocoDetection("data/shapes_val/images", "data/shapes_val/annotations.json")
    if TINY:
        model = build_model(train_set.num_classes, "tiny", transform={"size_divisible": 32})
    else:  # the CPU configuration of `focal-detect demo` (a small ResNet-FPN)
        model = build_model(train_set.num_classes, "demo")
    config = TrainConfig(
        iterations=4 if TINY else 1200,
        batch_size=4 if TINY else 16,
        optimizer="adamw",
        lr=4e-3,
        weight_decay=1e-4,
        schedule="cosine",
        warmup_iters=1 if TINY else 100,
        warmup_factor=0.1,
        clip_grad_norm=10.0,
        amp=not TINY,  # bfloat16 autocast, on the CPU too
        checkpoint_every=200,
        output_dir="runs/cpu_python",
        progress=False,
    )
    result = train(model, train_set, config)
    print(f"trained {result.step} steps in {result.seconds:.0f} s")
    metrics = evaluate_coco(model, val_set, batch_size=config.batch_size)
    print(format_metrics(metrics))
    return metrics


if __name__ == "__main__":
    main()
