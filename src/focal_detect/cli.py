r"""The ``focal-detect`` command: ``demo``, ``train``, ``evaluate``, ``predict``, ``export``, ``export-synthetic``.

Run ``focal-detect COMMAND --help`` for the options of each. ``train`` reads an
optional TOML or JSON config with three optional tables::

    [data]                      # a COCO-format set (or: synthetic = {num_images = 2000})
    train_images = "coco/train2017"
    train_annotations = "coco/annotations/instances_train2017.json"
    val_images = "coco/val2017"
    val_annotations = "coco/annotations/instances_val2017.json"

    [model]                     # any RetinaNetConfig field; preset = "paper" | "demo" | "tiny"
    preset = "paper"
    backbone_depth = 50

    [train]                     # any TrainConfig field
    iterations = 90000
    batch_size = 16

Command-line flags override the file. The script runs unchanged under ``torchrun``
(one process per device; see the distributed-training tutorial).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

__all__ = ["DEMO_MODEL", "DEMO_TRAIN", "build_model", "load_config_file", "load_model", "main", "save_model"]

MODEL_FORMAT = "focal-detect-model"

#: Model settings of ``focal-detect demo`` (a CPU configuration; deviations from the
#: paper are listed by ``_demo_deviations``). ``num_classes`` comes from the data.
DEMO_MODEL: dict[str, Any] = {
    "backbone_depth": 18,
    "backbone_width": 16,
    "frozen_bn": False,
    "trainable_layers": 5,
    "fpn_channels": 64,
    "head_convs": 2,
    "head_channels": 64,
    "use_group_norm": True,
    "anchor_sizes": (12.0, 24.0, 48.0, 96.0, 192.0),
    "box_loss": "giou",
    "min_size": None,
    "size_divisible": 128,
}

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
    "warmup_iters": 100,
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
    "warmup_iters": 1,
    "amp": False,
}
QUICK_ITERATIONS = 3


# ------------------------------------------------------------------------------ helpers


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``.toml`` or ``.json`` config file into a dict.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "c.toml")
        >>> _ = open(p, "w").write("[train]\\niterations = 5\\n")
        >>> load_config_file(p)
        {'train': {'iterations': 5}}
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    if path.endswith(".toml"):
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            try:
                import tomli as tomllib  # type: ignore[no-redef]
            except ModuleNotFoundError:
                raise ValueError(
                    f"{path}: reading TOML on Python 3.10 needs 'tomli'; use JSON instead"
                ) from None
        with open(path, "rb") as f:
            try:
                data = tomllib.load(f)
            except tomllib.TOMLDecodeError as e:
                raise ValueError(f"{path}: invalid TOML ({e})") from None
    elif path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: invalid JSON ({e})") from None
    else:
        raise ValueError(f"config file {path!r} must end in .toml or .json")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a table/object")
    unknown = sorted(set(data) - {"data", "model", "train"})
    if unknown:
        raise ValueError(f"{path}: unknown section(s) {unknown}; expected 'data', 'model', 'train'")
    return data


def _tuples(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def build_model(num_classes: int, preset: str = "paper", **overrides: Any) -> torch.nn.Module:
    """A :class:`~focal_detect.models.RetinaNet` from a preset plus config overrides.

    Args:
        num_classes: ``K``.
        preset: ``"paper"`` (``RetinaNetConfig`` defaults), ``"demo"`` (:data:`DEMO_MODEL`)
            or ``"tiny"`` (``RetinaNetConfig.tiny``).
        **overrides: Any ``RetinaNetConfig`` field.

    Example:
        >>> build_model(3, "tiny").config.num_classes
        3
    """
    from focal_detect.models import RetinaNet, RetinaNetConfig

    fields = {f.name for f in dataclasses.fields(RetinaNetConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"build_model: unknown RetinaNetConfig field(s) {unknown}")
    overrides = _tuples(overrides)
    if preset == "paper":
        cfg = RetinaNetConfig(num_classes=num_classes, **overrides)
    elif preset == "demo":
        cfg = RetinaNetConfig(num_classes=num_classes, **{**DEMO_MODEL, **overrides})
    elif preset == "tiny":
        cfg = RetinaNetConfig.tiny(num_classes=num_classes, **overrides)
    else:
        raise ValueError(f"build_model: preset must be one of 'paper', 'demo', 'tiny', got {preset!r}")
    return RetinaNet(cfg)


def save_model(
    model: torch.nn.Module,
    path: str | os.PathLike[str],
    class_names: Sequence[str],
    category_ids: Sequence[int],
) -> None:
    """Save weights, config and class metadata for ``evaluate``/``predict`` (atomically).

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "m.pt")
        >>> save_model(build_model(2, "tiny"), p, ["a", "b"], [1, 2])
        >>> load_model(p)[1]
        {'class_names': ['a', 'b'], 'category_ids': [1, 2]}
    """
    from focal_detect.engine import save_checkpoint

    save_checkpoint(
        {
            "format": MODEL_FORMAT,
            "model": model.state_dict(),
            "model_config": dataclasses.asdict(model.config),  # type: ignore[arg-type]
            "class_names": list(class_names),
            "category_ids": [int(c) for c in category_ids],
        },
        path,
    )


def load_model(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load a model saved by :func:`save_model` or a training checkpoint.

    Returns:
        ``(model in eval mode, {"class_names", "category_ids"})``.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "m.pt")
        >>> save_model(build_model(2, "tiny"), p, ["a", "b"], [1, 2])
        >>> load_model(p)[0].training
        False
    """
    from focal_detect.engine import CheckpointError, load_checkpoint
    from focal_detect.models import RetinaNet, RetinaNetConfig

    ckpt = load_checkpoint(path, map_location="cpu")
    where = f"load_model: {os.fspath(path)!r}"
    if not isinstance(ckpt.get("model"), Mapping) or not isinstance(ckpt.get("model_config"), Mapping):
        raise CheckpointError(
            f"{where} holds no model weights and config (keys: {sorted(map(str, ckpt))[:8]})"
        )
    try:
        model = RetinaNet(RetinaNetConfig(**_tuples(ckpt["model_config"])))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where} has an invalid model config: {str(e).splitlines()[0]}") from None
    try:
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, TypeError, ValueError, KeyError) as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = "; ".join(lines[1:3] if len(lines) > 1 else lines)[:300]
        raise CheckpointError(f"{where}: the weights do not fit its model config ({detail})") from None
    model.to(device).eval()
    k = model.config.num_classes
    meta = {
        "class_names": list(ckpt.get("class_names", [str(i) for i in range(k)])),
        "category_ids": list(ckpt.get("category_ids", list(range(1, k + 1)))),
    }
    return model, meta


def _set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


def _init_distributed(timeout_s: float | None = None) -> tuple[int, int]:
    """Initialise torch.distributed when launched by torchrun (``WORLD_SIZE`` > 1);
    ``timeout_s``: collective timeout in seconds (``None``: torch's default)."""
    import datetime

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        importlib.import_module("torch._dynamo")  # before the group: see focal_detect.engine, Teardown
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        if timeout_s is None:
            torch.distributed.init_process_group(backend=backend)
        else:
            torch.distributed.init_process_group(
                backend=backend, timeout=datetime.timedelta(seconds=timeout_s)
            )
    if torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


# ------------------------------------------------------------------------------ commands


def _cmd_export_synthetic(args: argparse.Namespace) -> int:
    from focal_detect.data import SyntheticShapes, export_coco

    ds = SyntheticShapes(num_images=args.num_images, image_size=args.image_size, seed=args.seed)
    path = export_coco(ds, args.output_dir)
    print(f"wrote {args.num_images} images to {os.path.join(args.output_dir, 'images')} and {path}")
    return 0


def _datasets(data: Mapping[str, Any]):  # type: ignore[no-untyped-def]
    from focal_detect.data import CocoDetection, SyntheticShapes

    if "synthetic" in data:
        syn = dict(data["synthetic"])
        n_val = int(syn.pop("val_images", 200))
        seed = int(syn.pop("seed", 0))
        train_ds = SyntheticShapes(seed=seed, **syn)
        val_ds = SyntheticShapes(seed=seed + 1_000_003, **{**syn, "num_images": n_val})
        return train_ds, val_ds
    for key in ("train_images", "train_annotations"):
        if key not in data:
            raise ValueError(f"data.{key} (or --{key.replace('_', '-')}, or --synthetic N) is required")
    train_ds = CocoDetection(data["train_images"], data["train_annotations"])
    val_ds = None
    if data.get("val_images") and data.get("val_annotations"):
        val_ds = CocoDetection(data["val_images"], data["val_annotations"])
    return train_ds, val_ds


def _cmd_train(args: argparse.Namespace) -> int:
    from focal_detect.engine import TrainConfig, seed_everything, train
    from focal_detect.evaluation import evaluate_coco, format_metrics

    _set_threads(args.threads)
    cfg = load_config_file(args.config) if args.config else {}
    data = dict(cfg.get("data", {}))
    for key in ("train_images", "train_annotations", "val_images", "val_annotations"):
        if getattr(args, key):
            data[key] = getattr(args, key)
    if args.synthetic:
        data["synthetic"] = {"num_images": args.synthetic, "image_size": args.image_size}
    model_cfg = dict(cfg.get("model", {}))
    preset = model_cfg.pop("preset", args.preset or "paper")
    if args.preset:
        preset = args.preset
    train_cfg = dict(cfg.get("train", {}))
    for key in (
        "iterations",
        "batch_size",
        "lr",
        "optimizer",
        "clip_grad_norm",
        "num_workers",
        "checkpoint_every",
        "log_every",
        "output_dir",
        "device",
        "seed",
        "dist_timeout",
    ):
        if getattr(args, key) is not None:
            train_cfg[key] = getattr(args, key)
    if args.amp:
        train_cfg["amp"] = True
    if args.resume is not None:
        train_cfg["resume"] = True if args.resume == "required" else "auto"
    if args.no_progress:
        train_cfg["progress"] = False
    config = TrainConfig.from_dict(train_cfg)

    rank, world = _init_distributed(config.dist_timeout)
    if world > 1:
        # The foreground count must be all-reduced for DDP to reproduce the global loss.
        model_cfg["distributed"] = True
    train_ds, val_ds = _datasets(data)
    seed_everything(config.seed)  # --seed also fixes the initial weights (the same on every rank)
    model = build_model(train_ds.num_classes, preset, **model_cfg)
    if rank == 0:
        print(
            f"training {preset} RetinaNet on {len(train_ds)} images x {world} process(es); "
            f"global batch {config.batch_size * world}, lr {config.global_lr(world):g}"
        )
    result = train(model, train_ds, config)
    if rank == 0:
        final = os.path.join(config.output_dir, "model_final.pt")
        save_model(model, final, train_ds.class_names, train_ds.category_ids)
        print(f"{result.step} steps in {result.seconds:.0f} s; model: {final}")
        if val_ds is not None:
            metrics = evaluate_coco(model, val_ds, batch_size=config.batch_size)
            print(format_metrics(metrics))
            _write_json(os.path.join(config.output_dir, "eval_metrics.json"), metrics)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


def _write_json(path: str, obj: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from focal_detect.data import CocoDetection
    from focal_detect.evaluation import COCO_METRICS, evaluate_coco, format_metrics

    _set_threads(args.threads)
    model, meta = load_model(args.checkpoint, device=args.device)
    ds = CocoDetection(args.images, args.annotations)
    if list(ds.category_ids) != list(meta["category_ids"]):
        raise SystemExit(
            f"focal-detect evaluate: the model's category ids {meta['category_ids']} differ from "
            f"{args.annotations}'s {ds.category_ids}"
        )
    metrics = evaluate_coco(model, ds, batch_size=args.batch_size)
    print(format_metrics(metrics, COCO_METRICS))
    if args.output:
        _write_json(args.output, metrics)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from focal_detect.data import load_image
    from focal_detect.evaluation import draw_detections

    _set_threads(args.threads)
    if args.onnx:
        return _predict_onnx(args)
    model, meta = load_model(args.checkpoint, device=args.device)
    os.makedirs(args.output_dir, exist_ok=True)
    for path in args.images:
        if not os.path.isfile(path):
            raise SystemExit(f"focal-detect predict: image {path!r} does not exist")
    for path in args.images:
        image = load_image(path)
        with torch.no_grad():
            det = model([image.to(args.device)])[0]
        keep = det["scores"] >= args.score_threshold
        pil = draw_detections(
            image,
            det["boxes"][keep],
            det["labels"][keep],
            det["scores"][keep],
            meta["class_names"],
            score_threshold=args.score_threshold,
            scale=args.scale,
        )
        out = os.path.join(args.output_dir, os.path.splitext(os.path.basename(path))[0] + "_detections.png")
        pil.save(out)
        print(f"{path}: {int(keep.sum())} detection(s) -> {out}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from focal_detect.models.export import export_onnx

    model, meta = load_model(args.checkpoint)
    metadata = {
        "class_names": json.dumps(meta["class_names"]),
        "category_ids": json.dumps(meta["category_ids"]),
    }
    try:
        export_onnx(model, args.output, opset_version=args.opset, metadata=metadata)
    except ImportError as e:
        raise SystemExit(f"focal-detect export: {e}") from None
    print(f"wrote {args.output} (ONNX opset {args.opset}; inputs 'images' (B, 3, H, W) float32 in [0, 1])")
    return 0


def _predict_onnx(args: argparse.Namespace) -> int:
    """``predict --onnx``: onnxruntime runs the exported graph; no model code is used."""
    import numpy as np
    from PIL import Image

    from focal_detect.evaluation import draw_detections

    try:
        import onnxruntime
    except ImportError:
        raise SystemExit(
            "focal-detect predict: --onnx needs onnxruntime (pip install 'focal-detect[export]')"
        ) from None
    if not os.path.isfile(args.onnx):
        raise FileNotFoundError(f"ONNX model {args.onnx!r} does not exist")
    for path in args.images:
        if not os.path.isfile(path):
            raise SystemExit(f"focal-detect predict: image {path!r} does not exist")
    options = onnxruntime.SessionOptions()
    if args.threads:
        options.intra_op_num_threads = args.threads
    session = onnxruntime.InferenceSession(args.onnx, options, providers=["CPUExecutionProvider"])
    props = session.get_modelmeta().custom_metadata_map
    names = json.loads(props["class_names"]) if "class_names" in props else None
    os.makedirs(args.output_dir, exist_ok=True)
    for path in args.images:
        with Image.open(path) as im:
            image = np.asarray(im.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0
        boxes, scores, labels, num = session.run(None, {"images": image[None]})
        n = int(num[0])
        keep = scores[0, :n] >= args.score_threshold
        pil = draw_detections(
            torch.from_numpy(image),
            torch.from_numpy(boxes[0, :n][keep]),
            torch.from_numpy(labels[0, :n][keep]),
            torch.from_numpy(scores[0, :n][keep]),
            names,
            score_threshold=args.score_threshold,
            scale=args.scale,
        )
        out = os.path.join(args.output_dir, os.path.splitext(os.path.basename(path))[0] + "_detections.png")
        pil.save(out)
        print(f"{path}: {int(keep.sum())} detection(s) -> {out}")
    return 0


def _demo_deviations(model_cfg: Mapping[str, Any], train_cfg: Mapping[str, Any]) -> list[str]:
    size = train_cfg["image_size"]
    return [
        f"images {size}x{size} px, no resizing (paper: short side 600-800 px)",
        f"ResNet-{model_cfg['backbone_depth']} of width {model_cfg['backbone_width']} (paper: 64) trained from "
        "scratch with trainable BatchNorm (paper: ImageNet-pretrained ResNet-50/101, frozen BatchNorm)",
        f"FPN/heads with {model_cfg['fpn_channels']}/{model_cfg['head_channels']} channels, "
        f"{model_cfg['head_convs']} convs per subnet"
        + (", GroupNorm in the heads" if model_cfg.get("use_group_norm") else "")
        + " (paper: 256 channels, 4 convs, no normalisation)",
        f"anchor base sizes {tuple(int(s) for s in model_cfg['anchor_sizes'])} on P3-P7, matched to "
        "objects of 8 px to most of the image (paper: 32-512 px)",
        f"{model_cfg['box_loss']} box loss (paper: smooth L1)",
        f"{train_cfg['optimizer']} lr {train_cfg['lr']:g} with {train_cfg['warmup_iters']} warmup steps and "
        f"{train_cfg['schedule']} decay, gradient clipping at {train_cfg['clip_grad_norm']:g}"
        + (", bfloat16 autocast" if train_cfg["amp"] else "")
        + f", batch {train_cfg['batch_size']}, as many steps as fit in "
        f"{train_cfg['time_budget_s']:.0f} s (paper: SGD lr 0.01, momentum 0.9, step decay, batch 16, 90k steps)",
    ]


def _cmd_demo(args: argparse.Namespace) -> int:
    from focal_detect.data import SyntheticShapes
    from focal_detect.engine import TrainConfig, seed_everything, train
    from focal_detect.evaluation import COCO_METRICS, evaluate_coco, format_metrics

    t0 = time.perf_counter()
    _set_threads(args.threads)
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
    if args.quick:
        model = build_model(train_ds.num_classes, "tiny", size_divisible=32)
        print("focal-detect demo --quick: a seconds-long smoke test with a tiny model; its AP means nothing")
    else:
        model = build_model(train_ds.num_classes, "demo")
        print(
            f"focal-detect demo: RetinaNet in a small CPU configuration ({torch.get_num_threads()} CPU thread(s))."
        )
        print("Deviations from the paper, to train from scratch in minutes on a CPU:")
        for d in _demo_deviations(DEMO_MODEL, settings):
            print(f"  - {d}")
    print(
        f"Data: synthetic {', '.join(train_ds.class_names)} (imbalanced); {len(train_ds)} training images "
        f"(seed {args.seed}), {len(val_ds)} held-out images (seed {val_seed}), {size}x{size} px"
    )

    if args.iterations:
        iterations = args.iterations
    elif args.quick:
        iterations = QUICK_ITERATIONS
    else:
        iterations = _calibrate_iterations(model, train_ds, settings, choose_threads=not args.threads)
    config = TrainConfig(
        iterations=iterations,
        batch_size=settings["batch_size"],
        lr=settings["lr"],
        optimizer=settings["optimizer"],
        weight_decay=settings["weight_decay"],
        schedule=settings["schedule"],
        warmup_iters=min(settings["warmup_iters"], iterations // 4),
        warmup_factor=settings["warmup_factor"],
        clip_grad_norm=settings["clip_grad_norm"],
        amp=settings["amp"],
        log_every=max(1, min(20, iterations // 10)),
        checkpoint_every=0,
        output_dir=os.path.join(out, "train"),
        seed=args.seed,
        device="cpu",  # the configuration (and its calibration) is a CPU one
        progress=not args.no_progress,
    )
    print(f"Training {iterations} steps of {config.batch_size} images ...")
    # Safety net only (the step count was fitted to the budget and the schedule assumes
    # it): keeps the whole demo under 10 minutes if the machine slows down mid-run.
    # An explicit --iterations means exactly that many steps.
    limit = None if (args.quick or args.iterations) else settings["time_budget_s"] * 1.1
    result = train(model, train_ds, config, time_limit_s=limit)
    save_model(model, os.path.join(out, "model.pt"), train_ds.class_names, train_ds.category_ids)
    t_train = result.seconds
    print(
        f"trained {result.step} steps in {t_train:.0f} s "
        f"({result.step * config.batch_size / max(t_train, 1e-9):.1f} images/s)"
        + ("" if result.step == iterations else f": stopped early by the {limit:.0f} s time limit")
    )

    t_eval = time.perf_counter()
    metrics = evaluate_coco(model, val_ds, batch_size=16)
    t_eval = time.perf_counter() - t_eval
    print(f"\nCOCO box AP on the {len(val_ds)} held-out images ({t_eval:.0f} s):")
    print(format_metrics(metrics, COCO_METRICS[:6]))
    total = time.perf_counter() - t0
    _write_json(
        os.path.join(out, "metrics.json"),
        {**metrics, "train_steps": result.step, "train_seconds": t_train, "total_seconds": total},
    )
    shutil.copyfile(os.path.join(config.output_dir, "loss_curve.png"), os.path.join(out, "loss_curve.png"))
    _detections_grid(model, val_ds, os.path.join(out, "detections.png"))
    total = time.perf_counter() - t0
    print(
        f"\nwrote {out}/detections.png, loss_curve.png, metrics.json, model.pt "
        f"(evaluate/predict with --checkpoint {out}/model.pt)"
    )
    print(f"total wall time {total:.0f} s")
    return 0


def _calibrate_iterations(
    model: torch.nn.Module, dataset: Any, settings: Mapping[str, Any], choose_threads: bool = True
) -> int:
    """Time rendering and a few training steps (on a copy), fit the step count to the budget.

    Rendering is paid once per training image (the set is cached), a step every step:
    ``n_steps * t_step + min(n_steps * B, n_images) * t_render = budget``. With
    ``choose_threads`` it also times one thread against the default count and keeps the
    faster: on a machine busy with other work, several OpenMP threads that wait for
    each other can be several times slower than one.
    """
    import copy

    from focal_detect.data import collate_detection

    budget, batch = settings["time_budget_s"], settings["batch_size"]
    n_probe = min(batch, len(dataset) // 2)
    images, targets = collate_detection([dataset[i % n_probe] for i in range(batch)])  # fills the cache
    probe = copy.deepcopy(model).train()
    opt = torch.optim.AdamW(probe.parameters(), lr=0.0)

    def one_step() -> float:
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=settings["amp"]):
            loss = sum(probe(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        return time.perf_counter() - t

    def step_time(threads: int, give_up: float = math.inf) -> float:
        torch.set_num_threads(threads)
        if one_step() > 3 * give_up:  # warm-up step; hopelessly slow: do not time further
            return math.inf
        return min(one_step(), one_step())

    default = torch.get_num_threads()
    if choose_threads and default > 1:
        timed = {1: step_time(1)}
        timed[default] = step_time(default, give_up=timed[1])
    else:
        timed = {default: step_time(default)}
    threads = min(timed, key=timed.__getitem__)
    torch.set_num_threads(threads)
    t = time.perf_counter()  # rendering, timed with the thread count training will use
    collate_detection([dataset[i] for i in range(n_probe, 2 * n_probe)])
    t_render = (time.perf_counter() - t) / n_probe
    t_step = timed[threads] * 1.05  # + logging overhead
    render_all = len(dataset) * t_render
    n = (budget - render_all) / t_step
    if n * batch < len(dataset):  # fewer samples than images: not every image gets rendered
        n = budget / (t_step + batch * t_render)
    n = int(min(settings["max_iterations"], max(50, n)))
    per = ", ".join(
        f"{k} thread(s) {v:.3f} s" if math.isfinite(v) else f"{k} thread(s) too slow"
        for k, v in timed.items()
    )
    print(
        f"Calibration: {per} per step -> {threads} thread(s); {1000 * t_render:.1f} ms to render an "
        f"image -> {n} steps fit the {budget:.0f} s training budget"
    )
    return n


def _detections_grid(model: torch.nn.Module, dataset: Any, path: str, n: int = 8) -> None:
    from PIL import Image

    from focal_detect.evaluation import draw_detections, predict_dataset

    subset = [dataset[i] for i in range(min(n, len(dataset)))]
    dets = predict_dataset(model, subset, batch_size=len(subset))
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


# ------------------------------------------------------------------------------ parser


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="focal-detect", description="RetinaNet / focal loss: train, evaluate, predict."
    )
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="train a small CPU RetinaNet on synthetic shapes and print COCO AP")
    d.add_argument("--output-dir", default="demo_output")
    d.add_argument("--quick", action="store_true", help="a seconds-long smoke test (meaningless AP)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument(
        "--iterations", type=int, default=None, help="fix the step count (default: fit the time budget)"
    )
    d.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help=f"training seconds to fit (default {DEMO_TRAIN['time_budget_s']:.0f})",
    )
    d.add_argument("--threads", type=int, default=None)
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(func=_cmd_demo)

    t = sub.add_parser("train", help="train RetinaNet on a COCO-format or synthetic set (torchrun-ready)")
    t.add_argument("--config", help="TOML or JSON file with [data], [model], [train] tables")
    t.add_argument("--train-images")
    t.add_argument("--train-annotations")
    t.add_argument("--val-images")
    t.add_argument("--val-annotations")
    t.add_argument(
        "--synthetic", type=int, default=None, metavar="N", help="train on N synthetic images instead"
    )
    t.add_argument("--image-size", type=int, default=128, help="synthetic image size")
    t.add_argument("--preset", choices=("paper", "demo", "tiny"), default=None)
    t.add_argument("--iterations", type=int)
    t.add_argument("--batch-size", type=int, help="images per step per process")
    t.add_argument("--lr", type=float, help="default 0.01 x global batch / 16")
    t.add_argument("--optimizer", choices=("sgd", "adamw", "adam"))
    t.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    t.add_argument("--clip-grad-norm", type=float)
    t.add_argument("--num-workers", type=int)
    t.add_argument("--checkpoint-every", type=int)
    t.add_argument("--log-every", type=int)
    t.add_argument("--output-dir")
    t.add_argument("--device")
    t.add_argument("--seed", type=int)
    t.add_argument(
        "--resume",
        nargs="?",
        const="required",
        choices=("required", "auto"),
        default=None,
        help="continue from OUTPUT_DIR/checkpoint_last.pt (an error if there is none); "
        "'--resume auto': continue if it exists, else start afresh",
    )
    t.add_argument(
        "--dist-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="timeout of torch.distributed collectives under torchrun (default: torch's)",
    )
    t.add_argument("--threads", type=int, default=None)
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("evaluate", help="COCO AP of a trained model on a COCO-format set")
    e.add_argument("--checkpoint", required=True, help="model.pt / model_final.pt / checkpoint_last.pt")
    e.add_argument("--images", required=True)
    e.add_argument("--annotations", required=True)
    e.add_argument("--batch-size", type=int, default=8)
    e.add_argument("--device", default="cpu")
    e.add_argument("--output", help="also write the metrics to this JSON file")
    e.add_argument("--threads", type=int, default=None)
    e.set_defaults(func=_cmd_evaluate)

    r = sub.add_parser("predict", help="draw a model's detections on images")
    r.add_argument("images", nargs="+", metavar="IMAGE")
    source = r.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint")
    source.add_argument("--onnx", help="run this exported model with onnxruntime instead (see `export`)")
    r.add_argument("--output-dir", default="predictions")
    r.add_argument("--score-threshold", type=float, default=0.3)
    r.add_argument("--scale", type=int, default=1, help="upscale the drawn images by this factor")
    r.add_argument("--device", default="cpu")
    r.add_argument("--threads", type=int, default=None)
    r.set_defaults(func=_cmd_predict)

    o = sub.add_parser(
        "export", help="export a model's whole inference path (pre/post-processing, NMS) to ONNX"
    )
    o.add_argument("--checkpoint", required=True, help="model.pt / model_final.pt / checkpoint_last.pt")
    o.add_argument("--format", choices=("onnx",), default="onnx")
    o.add_argument("--output", required=True, help="the .onnx file to write")
    o.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 17)")
    o.set_defaults(func=_cmd_export)

    x = sub.add_parser("export-synthetic", help="write the synthetic set as COCO JSON + PNG images")
    x.add_argument("output_dir")
    x.add_argument("--num-images", type=int, default=500)
    x.add_argument("--image-size", type=int, default=128)
    x.add_argument("--seed", type=int, default=0)
    x.set_defaults(func=_cmd_export_synthetic)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``focal-detect`` command.

    Example:
        >>> import tempfile
        >>> main(["export-synthetic", tempfile.mkdtemp(), "--num-images", "2", "--image-size", "32"])  # doctest: +ELLIPSIS
        wrote 2 images to ...
        0
    """
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError) as e:
        if os.environ.get("FOCAL_DETECT_DEBUG"):
            raise
        print(f"focal-detect {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
