r"""The ``focal-detect`` command: ``demo``, ``train``, ``evaluate``, ``predict``, ``export``, ``export-synthetic``.

Run ``focal-detect COMMAND --help`` for the options of each. ``train`` reads an
optional TOML or JSON config with three optional tables::

    [data]                      # a COCO-format set (or: synthetic = {num_images = 2000})
    train_images = "coco/train2017"
    train_annotations = "coco/annotations/instances_train2017.json"
    val_images = "coco/val2017"
    val_annotations = "coco/annotations/instances_val2017.json"

    [model]                     # preset = "paper" | "torchvision_v1" | "demo" | "tiny"
    preset = "paper"
    [model.backbone]            # one table per RetinaNetConfig group: backbone, fpn,
    depth = 50                  # head, anchors, matcher, coder, loss, transform, inference
    [model.matcher]
    high_threshold = 0.5

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
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from focal_detect._demo import DEMO_TRAIN as _DEMO_TRAIN
from focal_detect._demo import run_demo
from focal_detect.models.config import RetinaNetConfig, flat_config_to_nested
from focal_detect.models.io import build_model, load_model, save_model
from focal_detect.models.presets import PRESETS
from focal_detect.models.retinanet import RetinaNet

if TYPE_CHECKING:
    from focal_detect.data import CocoDetection, SyntheticShapes

# build_model, save_model and load_model live in focal_detect.models.io (0.1.0 defined them
# here); they stay importable from this module.

#: Training and data settings of ``focal-detect demo`` (its model is the ``"demo"``
#: preset). The training images are rendered once and kept in memory: ~50 KB each.
DEMO_TRAIN: dict[str, Any] = _DEMO_TRAIN

__all__ = ["DEMO_TRAIN", "build_model", "load_config_file", "load_model", "main", "save_model"]

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
                import tomli as tomllib
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


def _model_changes(table: Mapping[str, Any], where: str = "[model]") -> tuple[str | None, dict[str, Any]]:
    """Split a config file's ``[model]`` table into the preset name and config changes.

    The table holds an optional ``preset`` and one sub-table per config group
    (``[model.matcher]``, ``[model.loss]`` …, see
    :class:`~focal_detect.models.RetinaNetConfig`). Flat 0.1.0 keys
    (``fg_iou_thresh = 0.6``) are still accepted for one release: they are mapped by
    :func:`~focal_detect.models.config.flat_config_to_nested` with a
    ``DeprecationWarning`` naming their new place.

    Returns:
        ``(preset or None, changes for RetinaNetConfig.replace)``.

    Raises:
        ValueError: A value of the wrong kind for a group (not a table).

    Example:
        >>> _model_changes({"preset": "tiny", "matcher": {"high_threshold": 0.6}})
        ('tiny', {'matcher': {'high_threshold': 0.6}})
    """
    import warnings

    from focal_detect.models.config import FLAT_KEYS

    rest = dict(table)
    preset = rest.pop("preset", None)
    groups = {f.name for f in dataclasses.fields(RetinaNetConfig)}
    flat = {k: rest.pop(k) for k in list(rest) if k not in groups and k in FLAT_KEYS}
    changes: dict[str, Any] = {}
    for key, value in rest.items():
        if key != "num_classes" and key in groups and not isinstance(value, Mapping):
            raise ValueError(f"{where}: {key} must be a table of {key} settings, got {value!r}")
        changes[key] = dict(value) if isinstance(value, Mapping) else value
    if flat:
        moved = ", ".join(f"{k} -> {FLAT_KEYS[k]}" for k in sorted(flat))
        warnings.warn(
            f"{where}: flat 0.1.0 model keys are deprecated; write them in their group tables ({moved})",
            DeprecationWarning,
            stacklevel=2,
        )
        for group, value in flat_config_to_nested(flat).items():
            if isinstance(value, dict):
                changes[group] = {**value, **changes.get(group, {})}
            else:
                changes.setdefault(group, value)
    return preset, changes


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


def _datasets(
    data: Mapping[str, Any],
) -> tuple[SyntheticShapes | CocoDetection, SyntheticShapes | CocoDetection | None]:
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
    coco_train = CocoDetection(data["train_images"], data["train_annotations"])
    coco_val = None
    if data.get("val_images") and data.get("val_annotations"):
        coco_val = CocoDetection(data["val_images"], data["val_annotations"])
    return coco_train, coco_val


def _train_settings(args: argparse.Namespace, cfg: Mapping[str, Any], preset: str) -> dict[str, Any]:
    """The TrainConfig fields of ``train``: the file's ``[train]``, then the flags; with
    ``--preset auto`` its recipe fills what is still open."""
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
        "time_budget_s",
    ):
        if getattr(args, key) is not None:
            train_cfg[key] = getattr(args, key)
    if preset == "auto":  # the recipe that goes with the auto model, where nothing else is set
        from focal_detect.models.auto import AUTO_TRAIN

        train_cfg = {**AUTO_TRAIN, **train_cfg}
    if train_cfg.get("time_budget_s") is not None and "iterations" not in train_cfg:
        train_cfg["iterations"] = _BUDGET_MAX_STEPS  # the budget decides; this only caps
    if args.amp:
        train_cfg["amp"] = True
    if args.resume is not None:
        train_cfg["resume"] = True if args.resume == "required" else "auto"
    if args.no_progress:
        train_cfg["progress"] = False
    return train_cfg


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
    file_preset, model_cfg = _model_changes(cfg.get("model", {}))
    if "num_classes" in model_cfg:
        raise ValueError("[model] num_classes must not be set: it comes from the data")
    preset = args.preset or file_preset or "paper"
    if preset not in PRESETS and preset != "auto":
        raise ValueError(f"[model] preset must be one of {[*PRESETS, 'auto']}, got {preset!r}")
    config = TrainConfig.from_dict(_train_settings(args, cfg, preset))

    rank, world = _init_distributed(config.dist_timeout)
    if world > 1:
        # The foreground count must be all-reduced for DDP to reproduce the global loss.
        model_cfg["loss"] = {**model_cfg.get("loss", {}), "distributed": True}
    train_ds, val_ds = _datasets(data)
    seed_everything(config.seed)  # --seed also fixes the initial weights (the same on every rank)
    if preset == "auto":
        model = _auto_model(train_ds, model_cfg, config, rank)
    else:
        model = build_model(train_ds.num_classes, preset, **model_cfg)
    if rank == 0:
        print(
            f"training {preset} RetinaNet on {len(train_ds)} images x {world} process(es); "
            f"global batch {config.batch_size * world}, lr {config.global_lr(world):g}"
        )
    callback = None
    if config.time_budget_s is not None:
        if args.threads is None and world == 1:
            _calibrate_threads(model, train_ds, config)
        callback = _BudgetReport(config.time_budget_s) if rank == 0 else None
    result = train(model, train_ds, config, callback=callback)
    if rank == 0:
        final = os.path.join(config.output_dir, "model_final.pt")
        save_model(model, final, train_ds.class_names, train_ds.category_ids)
        print(f"{result.step} steps in {result.seconds:.0f} s; model: {final}")
        if val_ds is not None:
            metrics = evaluate_coco(model, val_ds, batch_size=config.batch_size, per_class=True)
            print(format_metrics(metrics))
            print(_per_class_table(metrics))
            _write_json(os.path.join(config.output_dir, "eval_metrics.json"), metrics)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


#: ``iterations`` of a time-budgeted run given no ``--iterations``: a cap, not a plan.
_BUDGET_MAX_STEPS = 10**9


def _auto_model(dataset: Any, model_cfg: Mapping[str, Any], config: Any, rank: int) -> RetinaNet:
    """``--preset auto``: fit the model to the training boxes; print the choice and coverage."""
    from focal_detect.engine.loop import _resolve_device
    from focal_detect.models.auto import auto_config, dataset_boxes

    boxes, sizes = dataset_boxes(dataset)
    high = float(dict(model_cfg.get("matcher", {})).get("high_threshold", 0.5))
    choice = auto_config(
        boxes, sizes, dataset.num_classes, device=_resolve_device(config.device), high_threshold=high
    )
    if rank == 0:
        for line in choice.summary():
            print(line, file=sys.stderr if line.startswith("warning") else sys.stdout)
    cfg = choice.config.replace(**model_cfg) if model_cfg else choice.config
    return RetinaNet(cfg)


def _calibrate_threads(model: torch.nn.Module, dataset: Any, config: Any) -> None:
    """A budgeted run given no ``--threads``: time 1 thread against the default, keep the faster."""
    from focal_detect._calibrate import choose_threads
    from focal_detect.data import collate_detection
    from focal_detect.engine.loop import _resolve_device

    if _resolve_device(config.device).type != "cpu":  # threads are a CPU matter
        return
    n = min(config.batch_size, len(dataset))
    timing = choose_threads(model, collate_detection([dataset[i] for i in range(n)]), amp=config.amp)
    expected = int(config.time_budget_s / timing.step_s)
    print(f"calibration: {timing.describe()}; about {expected} steps expected in {config.time_budget_s:g} s")


class _BudgetReport:
    """Prints the time left and the steps expected about every tenth of the budget."""

    def __init__(self, budget_s: float) -> None:
        self._every = budget_s / 10
        self._next = self._every

    def __call__(self, step: int, row: Mapping[str, float]) -> None:
        if row["time_s"] < self._next or "time_left_s" not in row:
            return
        self._next = row["time_s"] + self._every
        print(
            f"step {step}: {row['time_left_s']:.0f} s left, about {int(row['expected_steps'])} steps "
            f"expected, loss {row.get('loss', float('nan')):.4f}, lr {row['lr']:.2e}",
            flush=True,
        )


def _per_class_table(metrics: Mapping[str, float]) -> str:
    """``AP per class: star 61.2, arrow 48.0, ...`` from the ``AP/<name>`` keys."""
    cells = [
        f"{k[3:]} {100 * v:.1f}" if v >= 0 else f"{k[3:]} n/a"
        for k, v in metrics.items()
        if k.startswith("AP/")
    ]
    return "AP per class: " + ", ".join(cells)


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
    metrics = evaluate_coco(model, ds, batch_size=args.batch_size, per_class=True)
    print(format_metrics(metrics, COCO_METRICS))
    print(_per_class_table(metrics))
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


def _cmd_demo(args: argparse.Namespace) -> int:
    _set_threads(args.threads)
    return run_demo(args)


# ------------------------------------------------------------------------------ parser


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
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
    t.add_argument(
        "--preset",
        choices=(*PRESETS, "auto"),
        default=None,
        help="model preset (default: [model] preset of --config, else 'paper'): "
        + "; ".join(f"{p.name}: {p.summary}" for p in PRESETS.values())
        + "; auto: model size, input size and anchors fitted to the training boxes and the device, "
        "with the small-data training recipe where nothing else is set (prints the anchor coverage)",
    )
    t.add_argument(
        "--time-budget",
        dest="time_budget_s",
        type=float,
        default=None,
        metavar="SECONDS",
        help="train for this many seconds: the lr schedule runs over the fraction of the budget used "
        "(--iterations then only caps the steps); prints the time left and the steps expected",
    )
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

    _add_train_parser(sub)

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
