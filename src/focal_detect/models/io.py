r"""Build, save and load :class:`~focal_detect.models.RetinaNet` models.

A model file (``save_model``) is a :func:`torch.save` dict, written atomically::

    {"format": MODEL_FORMAT, "model": state_dict, "model_config": RetinaNetConfig.to_dict(),
     "class_names": [...], "category_ids": [...]}

A training checkpoint (``focal_detect.engine.train``'s ``checkpoint_last.pt``) holds the
same ``"model"`` and ``"model_config"`` keys, so :func:`load_model` reads both. The
config may be the nested form of this release or the flat form of 0.1.0 (mapped by
:func:`~focal_detect.models.config.flat_config_to_nested`): files written by 0.1.0 load
unchanged and give the same outputs (``tests/test_model_io.py``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from focal_detect.models.config import RetinaNetConfig
from focal_detect.models.presets import preset_config
from focal_detect.models.retinanet import RetinaNet

__all__ = ["MODEL_FORMAT", "build_model", "load_model", "save_model"]

#: The ``"format"`` tag of a file written by :func:`save_model`.
MODEL_FORMAT = "focal-detect-model"


def build_model(num_classes: int, preset: str = "paper", **changes: Any) -> RetinaNet:
    """A :class:`~focal_detect.models.RetinaNet` from a preset plus config changes.

    ``RetinaNet(RetinaNetConfig.preset(preset, num_classes, **changes))``.

    Args:
        num_classes: ``K``.
        preset: A key of :data:`~focal_detect.models.presets.PRESETS` (``"paper"``,
            ``"torchvision_v1"``, ``"demo"``, ``"tiny"``).
        **changes: ``group={field: value}`` (or a whole group), as
            :meth:`RetinaNetConfig.replace`.

    Raises:
        ValueError: Unknown preset, group or field.

    Example:
        >>> model = build_model(3, "tiny", inference={"score_threshold": 0.1})
        >>> model.config.num_classes, model.config.inference.score_threshold
        (3, 0.1)
    """
    return RetinaNet(preset_config(preset, num_classes, **changes))


def save_model(
    model: RetinaNet,
    path: str | os.PathLike[str],
    class_names: Sequence[str],
    category_ids: Sequence[int],
) -> None:
    """Save weights, config and class metadata for ``evaluate``/``predict`` (atomically).

    Args:
        model: The model (its ``config`` is stored with :meth:`RetinaNetConfig.to_dict`).
        path: The file to write.
        class_names: ``K`` class names.
        category_ids: ``K`` dataset category ids (COCO ids).

    Raises:
        TypeError: ``model`` is not a ``RetinaNet``.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "m.pt")
        >>> save_model(build_model(2, "tiny"), p, ["a", "b"], [1, 2])
        >>> load_model(p)[1]
        {'class_names': ['a', 'b'], 'category_ids': [1, 2]}
    """
    from focal_detect.engine import save_checkpoint

    if not isinstance(model, RetinaNet):
        raise TypeError(f"save_model: model must be a RetinaNet, got {type(model).__name__}")
    save_checkpoint(
        {
            "format": MODEL_FORMAT,
            "model": model.state_dict(),
            "model_config": model.config.to_dict(),
            "class_names": list(class_names),
            "category_ids": [int(c) for c in category_ids],
        },
        path,
    )


def load_model(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[RetinaNet, dict[str, Any]]:
    """Load a model saved by :func:`save_model` or a training checkpoint (this release's or 0.1.0's).

    Args:
        path: A ``save_model`` file or a ``checkpoint_last.pt``.
        device: Where to put the model.

    Returns:
        ``(model in eval mode, {"class_names", "category_ids"})``; without stored
        names the classes are called ``"0"`` … and numbered from 1.

    Raises:
        focal_detect.engine.CheckpointError: No model in the file, an invalid
            config or weights that do not fit it.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "m.pt")
        >>> save_model(build_model(2, "tiny"), p, ["a", "b"], [1, 2])
        >>> load_model(p)[0].training
        False
    """
    from focal_detect.engine import CheckpointError, load_checkpoint

    ckpt = load_checkpoint(path, map_location="cpu")
    where = f"load_model: {os.fspath(path)!r}"
    if not isinstance(ckpt.get("model"), Mapping) or not isinstance(ckpt.get("model_config"), Mapping):
        raise CheckpointError(
            f"{where} holds no model weights and config (keys: {sorted(map(str, ckpt))[:8]})"
        )
    try:
        model = RetinaNet(RetinaNetConfig.from_dict(ckpt["model_config"]))
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
