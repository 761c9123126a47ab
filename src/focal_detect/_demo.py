r"""The pieces of ``focal-detect demo`` (:mod:`focal_detect.cli` runs them).

Trains a small CPU RetinaNet (the ``"demo"`` preset) on the synthetic shapes set for a
time budget and reports COCO AP on held-out images. The budget is the training loop's
own (:attr:`TrainConfig.time_budget_s <focal_detect.engine.TrainConfig.time_budget_s>`):
the cosine schedule runs over the fraction of the budget used, so it ends at the
budget however fast the machine is. A few timed steps first choose the thread count
(:func:`focal_detect._calibrate.choose_threads`) and estimate the steps that will fit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

import torch
from torch import Tensor

from focal_detect.models.config import RetinaNetConfig
from focal_detect.models.io import build_model, save_model
from focal_detect.models.retinanet import RetinaNet

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from focal_detect.data import SyntheticShapes
    from focal_detect.engine import TrainConfig

__all__ = ["DEMO_TRAIN", "QUICK", "QUICK_ITERATIONS", "run_demo"]

#: Training and data settings of ``focal-detect demo``. The training images are
#: rendered once and kept in memory (``cache``): ~50 KB each.
DEMO_TRAIN: dict[str, Any] = {
    "image_size": 128,
    "train_images": 6000,
    "val_images": 300,
    "batch_size": 16,
    "optimizer": "adamw",
    "lr": 4e-3,
    "weight_decay": 1e-4,
    "schedule": "cosine",
    "warmup_fraction": 0.05,
    "warmup_factor": 0.1,
    "clip_grad_norm": 10.0,
    "amp": True,
    "time_budget_s": 500.0,
    "max_iterations": 6000,
}

#: ``--quick``: a smoke test that finishes in seconds with the tiny model (AP is meaningless).
QUICK: dict[str, Any] = {
    "image_size": 32,
    "train_images": 16,
    "val_images": 4,
    "batch_size": 4,
    "lr": 1e-3,
    "warmup_fraction": 0.0,
    "amp": False,
}
QUICK_ITERATIONS = 3


class _RenderedSet(Protocol):
    """What the demo's calibration and detection grid read of a dataset (``SyntheticShapes``)."""

    image_size: int

    @property
    def class_names(self) -> Sequence[str]: ...

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]: ...


def _demo_deviations(cfg: RetinaNetConfig, train_cfg: Mapping[str, Any]) -> list[str]:
    size = train_cfg["image_size"]
    sizes = cfg.anchors.sizes or (32, 64, 128, 256, 512)
    return [
        f"images {size}x{size} px, no resizing (paper: short side 600-800 px)",
        f"ResNet-{cfg.backbone.depth} of width {cfg.backbone.width} (paper: 64) trained from "
        "scratch with trainable BatchNorm (paper: ImageNet-pretrained ResNet-50/101, frozen BatchNorm)",
        f"FPN/heads with {cfg.fpn.channels}/{cfg.channels_for_head} channels, "
        f"{cfg.head.num_convs} convs per subnet"
        + (", GroupNorm in the heads" if cfg.head.use_group_norm else "")
        + " (paper: 256 channels, 4 convs, no normalisation)",
        f"anchor base sizes {tuple(int(s) for s in sizes)} on P3-P7, matched to "
        "objects of 8 px to most of the image (paper: 32-512 px)",
        f"{cfg.loss.box_loss} box loss (paper: smooth L1)",
        f"{train_cfg['optimizer']} lr {train_cfg['lr']:g}, warmup over {100 * train_cfg['warmup_fraction']:g} % "
        f"and {train_cfg['schedule']} decay over a {train_cfg['time_budget_s']:.0f} s time budget, "
        f"gradient clipping at {train_cfg['clip_grad_norm']:g}"
        + (", bfloat16 autocast" if train_cfg["amp"] else "")
        + f", batch {train_cfg['batch_size']} (paper: SGD lr 0.01, momentum 0.9, step decay, batch 16, 90k steps)",
    ]


def run_demo(args: argparse.Namespace) -> int:
    """``focal-detect demo``: data, model, calibrated training, evaluation, pictures."""
    from focal_detect.data import SyntheticShapes
    from focal_detect.engine import seed_everything

    t0 = time.perf_counter()
    out = args.output_dir
    os.makedirs(out, exist_ok=True)
    settings = {**DEMO_TRAIN, **(QUICK if args.quick else {})}
    if args.time_budget:
        settings["time_budget_s"] = args.time_budget
    size = settings["image_size"]
    train_ds = SyntheticShapes(
        num_images=settings["train_images"], image_size=size, seed=args.seed, cache=True
    )
    # Held out: another seed, so no training image is ever seen at evaluation.
    val_seed = args.seed + 1_000_003
    val_ds = SyntheticShapes(num_images=settings["val_images"], image_size=size, seed=val_seed)
    seed_everything(args.seed)  # --seed also fixes the initial weights
    model = _demo_model(train_ds.num_classes, settings, quick=args.quick)
    print(
        f"Data: synthetic {', '.join(train_ds.class_names)} (imbalanced); {len(train_ds)} training images "
        f"(seed {args.seed}), {len(val_ds)} held-out images (seed {val_seed}), {size}x{size} px"
    )
    # An explicit --iterations (or --quick) means exactly that many steps; otherwise the
    # run trains for the time budget.
    budget = None
    if args.iterations:
        iterations = args.iterations
    elif args.quick:
        iterations = QUICK_ITERATIONS
    else:
        iterations, budget = settings["max_iterations"], settings["time_budget_s"]
        _calibrate(model, train_ds, settings, choose=not args.threads)
    config = _demo_train_config(settings, iterations, budget, out, args)
    steps, t_train = _train_demo(model, train_ds, config)
    metrics = _evaluate_demo(model, val_ds)
    _write_json(
        os.path.join(out, "metrics.json"),
        {
            **metrics,
            "train_steps": steps,
            "train_seconds": t_train,
            "total_seconds": time.perf_counter() - t0,
        },
    )
    shutil.copyfile(os.path.join(config.output_dir, "loss_curve.png"), os.path.join(out, "loss_curve.png"))
    _detections_grid(model, val_ds, os.path.join(out, "detections.png"))
    print(
        f"\nwrote {out}/detections.png, loss_curve.png, metrics.json, model.pt "
        f"(evaluate/predict with --checkpoint {out}/model.pt)"
    )
    print(f"total wall time {time.perf_counter() - t0:.0f} s")
    return 0


def _demo_model(num_classes: int, settings: Mapping[str, Any], quick: bool) -> RetinaNet:
    if quick:
        print("focal-detect demo --quick: a seconds-long smoke test with a tiny model; its AP means nothing")
        return build_model(num_classes, "tiny", transform={"size_divisible": 32})
    model = build_model(num_classes, "demo")
    print(
        f"focal-detect demo: RetinaNet in a small CPU configuration ({torch.get_num_threads()} CPU thread(s))."
    )
    print("Deviations from the paper, to train from scratch in minutes on a CPU:")
    for d in _demo_deviations(model.config, settings):
        print(f"  - {d}")
    return model


def _demo_train_config(
    settings: Mapping[str, Any], iterations: int, budget: float | None, out: str, args: argparse.Namespace
) -> TrainConfig:
    from focal_detect.engine import TrainConfig

    # A fixed step count warms up over the same share of the run as the budget does.
    warmup_iters = int(round(settings["warmup_fraction"] * iterations))
    return TrainConfig(
        iterations=iterations,
        time_budget_s=budget,
        warmup_fraction=settings["warmup_fraction"],
        batch_size=settings["batch_size"],
        lr=settings["lr"],
        optimizer=settings["optimizer"],
        weight_decay=settings["weight_decay"],
        schedule=settings["schedule"],
        warmup_iters=warmup_iters,
        warmup_factor=settings["warmup_factor"],
        clip_grad_norm=settings["clip_grad_norm"],
        amp=settings["amp"],
        log_every=20 if budget is not None else max(1, min(20, iterations // 10)),
        checkpoint_every=0,
        output_dir=os.path.join(out, "train"),
        seed=args.seed,
        device="cpu",  # the configuration (and its calibration) is a CPU one
        progress=not args.no_progress,
    )


def _train_demo(model: RetinaNet, train_ds: SyntheticShapes, config: TrainConfig) -> tuple[int, float]:
    """Train, save ``model.pt`` next to the training folder; ``(steps, seconds)``."""
    from focal_detect.engine import train

    if config.time_budget_s is not None:
        print(f"Training for {config.time_budget_s:.0f} s in steps of {config.batch_size} images ...")
    else:
        print(f"Training {config.iterations} steps of {config.batch_size} images ...")
    result = train(model, train_ds, config)
    out = os.path.dirname(config.output_dir)
    save_model(model, os.path.join(out, "model.pt"), train_ds.class_names, train_ds.category_ids)
    t_train = result.seconds
    print(
        f"trained {result.step} steps in {t_train:.0f} s "
        f"({result.step * config.batch_size / max(t_train, 1e-9):.1f} images/s)"
        + _stopped_by(result.step, config)
    )
    return result.step, t_train


def _stopped_by(step: int, config: TrainConfig) -> str:
    """What ended a budgeted run: the budget, or the step cap when it came first."""
    if config.time_budget_s is None:
        return ""
    if step >= config.iterations:
        return f" (the {config.iterations}-step cap came before the {config.time_budget_s:.0f} s budget)"
    return f" (the {config.time_budget_s:.0f} s budget)"


def _evaluate_demo(model: RetinaNet, val_ds: SyntheticShapes) -> dict[str, float]:
    from focal_detect.evaluation import COCO_METRICS, evaluate_coco, format_metrics

    t_eval = time.perf_counter()
    metrics = evaluate_coco(model, val_ds, batch_size=16)
    t_eval = time.perf_counter() - t_eval
    print(f"\nCOCO box AP on the {len(val_ds)} held-out images ({t_eval:.0f} s):")
    print(format_metrics(metrics, COCO_METRICS[:6]))
    return metrics


def _write_json(path: str, obj: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def _calibrate(
    model: torch.nn.Module, dataset: _RenderedSet, settings: Mapping[str, Any], choose: bool
) -> int:
    """Choose the thread count (with ``choose``) and print the steps the budget should fit.

    Rendering is paid once per training image (the set is cached), a step every step:
    ``n_steps * t_step + min(n_steps * B, n_images) * t_render = budget``. The estimate
    is only printed: the run itself trains until its budget is used.
    """
    from focal_detect._calibrate import choose_threads
    from focal_detect.data import collate_detection

    budget, batch = settings["time_budget_s"], settings["batch_size"]
    n_probe = min(batch, len(dataset) // 2)
    probe = collate_detection([dataset[i % n_probe] for i in range(batch)])  # fills the cache
    timing = choose_threads(model, probe, amp=settings["amp"], choose=choose)
    t = time.perf_counter()  # rendering, timed with the thread count training will use
    collate_detection([dataset[i] for i in range(n_probe, 2 * n_probe)])
    t_render = (time.perf_counter() - t) / n_probe
    t_step = timing.step_s * 1.05  # + logging overhead
    n = (budget - len(dataset) * t_render) / t_step
    if n * batch < len(dataset):  # fewer samples than images: not every image gets rendered
        n = budget / (t_step + batch * t_render)
    n = int(min(settings["max_iterations"], max(1, n)))
    print(
        f"Calibration: {timing.describe()}; {1000 * t_render:.1f} ms to render an image "
        f"-> about {n} steps expected in the {budget:.0f} s training budget"
    )
    return n


def _detections_grid(model: torch.nn.Module, dataset: _RenderedSet, path: str, n: int = 8) -> None:
    from PIL import Image

    from focal_detect.evaluation import draw_detections, predict_dataset

    subset = [dataset[i] for i in range(min(n, len(dataset)))]
    # predict_dataset indexes its dataset only: a list of samples serves.
    dets = predict_dataset(model, cast("Dataset[Any]", subset), batch_size=len(subset))
    scale = max(1, 256 // dataset.image_size)
    tiles = [
        draw_detections(img, d["boxes"], d["labels"], d["scores"], dataset.class_names, 0.3, scale)
        for (img, _), d in zip(subset, dets)
    ]
    cols = min(4, len(tiles))
    rows = (len(tiles) + cols - 1) // cols
    w, h = tiles[0].size
    grid = Image.new("RGB", (cols * w, rows * h))
    for i, t in enumerate(tiles):
        grid.paste(t, ((i % cols) * w, (i // cols) * h))
    grid.save(path)
