r"""Training loop for detectors with torchvision's interface: checkpoints, logging, DDP.

The default recipe is the paper's, scaled linearly with the global batch size
:math:`B` (images per step over all processes):

.. math::

    \mathrm{lr}(t) = 0.01 \cdot \frac{B}{16} \cdot w(t) \cdot 0.1^{\,[t \ge \frac{2}{3}T] + [t \ge \frac{8}{9}T]},
    \qquad w(t) = f + (1 - f)\,\min(1, t / T_w)

for :math:`T` iterations (the paper's 60k and 80k of 90k), a linear warmup of
:math:`T_w` steps from factor :math:`f`; SGD with momentum 0.9 and weight decay
:math:`10^{-4}`; horizontal flips with probability 0.5.

*Reproducibility.* One seed, :attr:`TrainConfig.seed`, governs everything a run
draws: the initial weights (when :func:`train` gets a model factory it calls
:func:`seed_everything` before building it; ``focal-detect train`` and ``demo`` seed
before building theirs; a model you build yourself needs
``seed_everything(seed)`` first), the data order, the augmentation and the sampler.
Two runs with the same seed, device and thread count give bit-identical weights;
another seed gives another run.

*Exact resumption.* Everything random in a run is a pure function of the step:
the data order of an epoch comes from :class:`torch.utils.data.DistributedSampler`
seeded with ``(seed, epoch)``, each sample's augmentation from
``(seed, epoch, index)`` (:class:`~focal_detect.data.SeededAugment`), and a checkpoint
stores the model, optimizer, scheduler, step, the metric history and the torch, CUDA,
NumPy and Python RNG states. A run interrupted after any checkpoint and resumed gives
bit-for-bit the parameters of an uninterrupted run (on the same device and thread
count). Checkpoints are written to a temporary file in the same folder and moved into
place with :func:`os.replace`, so a crash never leaves a truncated checkpoint;
temporaries left by killed writers are removed.

*Resume semantics.* ``resume=False`` starts afresh; ``resume=True`` (``--resume``)
continues from ``output_dir/checkpoint_last.pt`` and is an error if there is none (a
mistyped ``output_dir`` no longer starts a silent fresh run); ``resume="auto"``
(``--resume auto``) continues if the file exists and starts afresh otherwise.
Resuming needs the same global batch, seed and dataset size, and says so otherwise.

*Integrity.* A checkpoint is a plain dict (``torch.load(path, weights_only=True)``
reads it) with a format version and the SHA-256 of a canonical serialisation of its
content, verified by :func:`load_checkpoint`. Every way a file can be bad (a
directory, empty, truncated, random or overwritten bytes, a bare tensor, missing or
wrong keys, tensors of the wrong shape, a newer format) raises one
:class:`CheckpointError` naming the file and the problem, before the model is
changed; the CLI prints it on one line and exits with status 2. Files written by
0.1.0 (no digest) load with a warning that their integrity cannot be verified.
All loading uses ``torch.load(..., weights_only=True)``.

*Memory.* The training loop holds the model, optimizer state and one batch; anchor
assignment stays within its byte budget
(:func:`~focal_detect.matching.assign_anchors`, ``max_memory_bytes``, 512 MiB by
default) on both of its paths, with one preallocated workspace per call.

*Distributed.* Under ``torchrun`` (``torch.distributed`` initialised) the model is
wrapped in :class:`~torch.nn.parallel.DistributedDataParallel`, each process reads
``batch_size`` images of a :class:`~torch.utils.data.DistributedSampler` shard, and the
global batch is ``batch_size * world_size``. The model's loss normaliser must be
all-reduced for the update to equal a single-process update on the global batch: with
:math:`S_r` the summed loss of process :math:`r` and :math:`N = \sum_r N_r` the global
foreground count, the global loss is :math:`L = \sum_r S_r / N`; DDP *averages*
gradients over the :math:`W` processes, so each process must return
:math:`L_r = W S_r / N` (the normaliser all-reduced as a *mean*, :math:`N / W`), and then
:math:`\frac{1}{W} \sum_r \nabla L_r = \nabla L` exactly (``tests/test_distributed.py``
checks it).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import random
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from focal_detect._checks import check_choice, check_number
from focal_detect.data.transforms import (
    RandomHorizontalFlip,
    SeededAugment,
    collate_detection,
)

__all__ = [
    "TrainConfig",
    "TrainResult",
    "WarmupMultiStep",
    "train",
    "seed_everything",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "get_rng_state",
    "set_rng_state",
    "plot_history",
    "paper_lr",
]

CHECKPOINT_FORMAT = "focal-detect-checkpoint"
#: Version of the file layout written by :func:`save_checkpoint`: 2 adds the ``sha256``
#: digest (0.1.0 wrote version 1, or no version in model files, and no digest).
CHECKPOINT_VERSION = 2
LAST_CHECKPOINT = "checkpoint_last.pt"
# Keys save_checkpoint adds to (or replaces in) every file.
_RESERVED_KEYS = ("version", "sha256")
# Keys a training checkpoint must hold to be resumed.
_TRAIN_KEYS = ("step", "model", "optimizer", "scheduler", "rng", "data", "history")


def paper_lr(global_batch_size: int) -> float:
    r"""The paper's learning rate scaled linearly: :math:`0.01 \cdot B / 16`.

    Example:
        >>> paper_lr(16), paper_lr(4)
        (0.01, 0.0025)
    """
    b = check_number("paper_lr", "global_batch_size", global_batch_size, low=1)
    return 0.01 * b / 16


@dataclass(frozen=True)
class TrainConfig:
    r"""Hyper-parameters of :func:`train`; the defaults are the paper's recipe.

    Args:
        iterations: Number of optimizer steps :math:`T` (paper: 90k).
        batch_size: Images per step *per process*.
        lr: Base learning rate; ``None`` gives :func:`paper_lr` of the global batch.
        optimizer: ``"sgd"`` (paper), ``"adamw"`` or ``"adam"``.
        momentum: SGD momentum.
        weight_decay: Weight decay (decoupled for AdamW).
        milestones: Fractions of ``iterations`` at which the lr is multiplied by
            ``gamma`` (paper: 60k/90k and 80k/90k).
        gamma: Decay factor.
        schedule: ``"step"`` (paper) or ``"cosine"`` (to zero at ``iterations``).
        warmup_iters: Linear warmup length :math:`T_w`.
        warmup_factor: Starting factor :math:`f` of the warmup.
        amp: Mixed precision: autocast to bfloat16 (CPU or GPU).
        clip_grad_norm: Clip the global gradient norm to this value (``None``: off).
        hflip: Horizontal-flip probability.
        seed: Seed of the initial RNG states, data order and augmentation.
        num_workers: Data-loader worker processes.
        log_every: Log averaged metrics every this many steps.
        checkpoint_every: Write ``checkpoint_last.pt`` every this many steps (and at
            the end); ``0`` only at the end.
        output_dir: Folder for checkpoints, ``metrics.csv``/``metrics.jsonl`` and
            ``loss_curve.png``.
        device: ``"auto"`` (CUDA if available, else CPU) or a torch device string.
        progress: Show a tqdm progress bar (process 0 only).
        resume: ``False``: start afresh (an existing checkpoint is overwritten);
            ``True``: continue from ``output_dir/checkpoint_last.pt``, and raise
            :class:`CheckpointError` if there is none; ``"auto"``: continue if it
            exists, else start afresh.
        dist_timeout: Seconds a collective may wait before the process group gives
            up (``None``: torch's default). ``focal-detect train`` passes it to
            :func:`torch.distributed.init_process_group`; from Python, pass
            ``timeout=datetime.timedelta(seconds=...)`` to it yourself.

    Example:
        >>> cfg = TrainConfig(iterations=90, batch_size=4)
        >>> cfg.milestone_steps, cfg.global_lr(world_size=1)
        ((60, 80), 0.0025)
    """

    iterations: int = 90_000
    batch_size: int = 16
    lr: float | None = None
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: tuple[float, ...] = (2 / 3, 8 / 9)
    gamma: float = 0.1
    schedule: str = "step"
    warmup_iters: int = 500
    warmup_factor: float = 1 / 3
    amp: bool = False
    clip_grad_norm: float | None = None
    hflip: float = 0.5
    seed: int = 0
    num_workers: int = 0
    log_every: int = 20
    checkpoint_every: int = 1000
    output_dir: str = "runs/retinanet"
    device: str = "auto"
    progress: bool = True
    resume: bool | str = False
    dist_timeout: float | None = None

    def __post_init__(self) -> None:
        fn = "TrainConfig"
        for name in ("iterations", "batch_size", "log_every"):
            check_number(fn, name, getattr(self, name), low=1)
        for name in ("warmup_iters", "num_workers", "checkpoint_every", "seed"):
            check_number(fn, name, getattr(self, name), low=0)
        if self.lr is not None:
            check_number(fn, "lr", self.lr, low=0, low_open=True)
        check_choice(fn, "optimizer", self.optimizer, ("sgd", "adamw", "adam"))
        check_choice(fn, "schedule", self.schedule, ("step", "cosine"))
        check_number(fn, "momentum", self.momentum, low=0, high=1)
        check_number(fn, "weight_decay", self.weight_decay, low=0)
        check_number(fn, "gamma", self.gamma, low=0, high=1)
        check_number(fn, "warmup_factor", self.warmup_factor, low=0, high=1)
        check_number(fn, "hflip", self.hflip, low=0, high=1)
        if self.clip_grad_norm is not None:
            check_number(fn, "clip_grad_norm", self.clip_grad_norm, low=0, low_open=True)
        if self.dist_timeout is not None:
            check_number(fn, "dist_timeout", self.dist_timeout, low=0, low_open=True)
        if self.resume not in (False, True, "auto") or not isinstance(self.resume, (bool, str)):
            raise ValueError(f"{fn}: resume must be False, True or 'auto', got {self.resume!r}")
        ms = tuple(float(m) for m in self.milestones)
        if any(not 0 < m < 1 for m in ms) or list(ms) != sorted(ms):
            raise ValueError(
                f"{fn}: milestones must be increasing fractions in (0, 1), got {self.milestones!r}"
            )
        object.__setattr__(self, "milestones", ms)

    @property
    def milestone_steps(self) -> tuple[int, ...]:
        """The steps at which the step schedule decays the lr.

        Example:
            >>> TrainConfig(iterations=900).milestone_steps
            (600, 800)
        """
        return tuple(int(round(m * self.iterations)) for m in self.milestones)

    def global_lr(self, world_size: int = 1) -> float:
        """Base lr for ``world_size`` processes (``lr`` if set, else :func:`paper_lr`).

        Example:
            >>> TrainConfig(batch_size=2).global_lr(world_size=8), TrainConfig(lr=0.1).global_lr(8)
            (0.01, 0.1)
        """
        return self.lr if self.lr is not None else paper_lr(self.batch_size * world_size)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build from a mapping; unknown keys raise ``ValueError`` naming them.

        Example:
            >>> TrainConfig.from_dict({"iterations": 10, "milestones": [0.5]}).milestones
            (0.5,)
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"TrainConfig: unknown option(s) {unknown}; known: {sorted(names)}")
        kw = dict(values)
        if "milestones" in kw:
            kw["milestones"] = tuple(kw["milestones"])
        return cls(**kw)


class WarmupMultiStep:
    r"""Learning-rate factor of step :math:`t`: linear warmup, then step or cosine decay.

    Used as the ``lr_lambda`` of :class:`torch.optim.lr_scheduler.LambdaLR` (its
    attributes are plain numbers, so the scheduler's ``state_dict`` stays loadable
    with ``weights_only=True``).

    Args:
        iterations: Total steps :math:`T`.
        milestones: Decay steps (step schedule).
        gamma: Decay factor per milestone.
        warmup_iters: Warmup length :math:`T_w`.
        warmup_factor: Factor :math:`f` at step 0.
        schedule: ``"step"`` or ``"cosine"``.

    Example:
        >>> f = WarmupMultiStep(90, (60, 80), 0.1, warmup_iters=10, warmup_factor=0.5)
        >>> [round(f(t), 4) for t in (0, 5, 10, 59, 60, 80)]
        [0.5, 0.75, 1.0, 1.0, 0.1, 0.01]
    """

    def __init__(
        self,
        iterations: int,
        milestones: Sequence[int],
        gamma: float = 0.1,
        warmup_iters: int = 500,
        warmup_factor: float = 1 / 3,
        schedule: str = "step",
    ) -> None:
        self.iterations = int(iterations)
        self.milestones = [int(m) for m in milestones]
        self.gamma = float(gamma)
        self.warmup_iters = int(warmup_iters)
        self.warmup_factor = float(warmup_factor)
        self.schedule = check_choice("WarmupMultiStep", "schedule", schedule, ("step", "cosine"))

    def __call__(self, step: int) -> float:
        if self.schedule == "step":
            decay = self.gamma ** sum(step >= m for m in self.milestones)
        else:
            decay = 0.5 * (1.0 + math.cos(math.pi * min(step, self.iterations) / self.iterations))
        if step < self.warmup_iters:
            alpha = step / self.warmup_iters
            decay *= self.warmup_factor * (1 - alpha) + alpha
        return decay


# --------------------------------------------------------------------------- RNG state


def get_rng_state() -> dict[str, Any]:
    """Torch (CPU and CUDA), NumPy and Python RNG states as tensors and plain values.

    Example:
        >>> s = get_rng_state(); a = torch.rand(1); set_rng_state(s); torch.equal(a, torch.rand(1))
        True
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss": gauss,
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the states returned by :func:`get_rng_state`.

    Example:
        >>> set_rng_state(get_rng_state())
    """
    torch.set_rng_state(state["torch"])
    npy = state["numpy"]
    np.random.set_state(
        (
            npy["kind"],
            npy["keys"].numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and every CUDA device), NumPy and Python's ``random`` with ``seed``.

    Call it *before building the model* so that the seed also fixes the initial
    weights: :func:`train` seeds the run's RNG streams itself (``seed + rank``), but by
    then the model exists. ``focal-detect train`` and ``demo`` do this for you, and
    :func:`train` does it when given a model factory instead of a model.

    Example:
        >>> seed_everything(3); a = torch.rand(2); seed_everything(3)
        >>> torch.equal(a, torch.rand(2))
        True
    """
    seed = int(check_number("seed_everything", "seed", seed, low=0))
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


# ------------------------------------------------------------------------- checkpoints


class CheckpointError(ValueError):
    """A checkpoint or model file that cannot be used: unreadable, corrupt (digest
    mismatch), of the wrong kind, or not matching the run or model it is loaded into.

    The message names the file and what is wrong, on one line. The CLI prints it and
    exits with status 2.

    Example:
        >>> issubclass(CheckpointError, ValueError)
        True
    """


def _digest(state: Mapping[str, Any]) -> str:
    """SHA-256 of a canonical serialisation of ``state`` without the reserved keys:
    every key and value in order, with type tags; tensors by dtype, shape and bytes."""
    h = hashlib.sha256()

    def feed(obj: Any) -> None:
        if isinstance(obj, Tensor):
            t = obj.detach()
            if t.device.type != "cpu":
                t = t.cpu()
            h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
            if t.numel():
                h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().data)
        elif isinstance(obj, Mapping):
            h.update(f"D{len(obj)}:".encode())
            for k, v in obj.items():
                feed(k)
                feed(v)
        elif isinstance(obj, (list, tuple)):
            h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}:".encode())
            for v in obj:
                feed(v)
        elif isinstance(obj, (str, bytes)):
            b = obj.encode() if isinstance(obj, str) else obj
            h.update(f"{'S' if isinstance(obj, str) else 'B'}{len(b)}:".encode())
            h.update(b)
        else:  # None, bool, int, float (repr round-trips), torch.dtype, torch.Size ...
            h.update(f"{type(obj).__name__}:{obj!r};".encode())

    feed({k: v for k, v in state.items() if k not in _RESERVED_KEYS})
    return h.hexdigest()


_STALE_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")


def _remove_stale_temporaries(path: str) -> list[str]:
    """Remove ``.NAME.<pid>.tmp`` files of ``path`` left by killed writers (pid gone)."""
    folder, name = os.path.split(os.path.abspath(path))
    removed: list[str] = []
    try:
        entries = os.listdir(folder)
    except OSError:
        return removed
    for entry in entries:
        m = _STALE_TMP.match(entry)
        if m is None or m["name"] != name or int(m["pid"]) == os.getpid():
            continue
        try:
            os.kill(int(m["pid"]), 0)
            continue  # a live process is writing it
        except ProcessLookupError:
            pass
        except OSError:  # e.g. PermissionError: the process exists but is not ours
            continue
        try:
            os.remove(os.path.join(folder, entry))
            removed.append(entry)
        except OSError:
            pass
    return removed


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Write ``state`` with :func:`torch.save` atomically, with a format version and digest.

    The file is a plain dict (readable by ``torch.load(path, weights_only=True)``):
    ``state`` plus ``"version"`` (the format version, 2) and ``"sha256"``, the SHA-256
    of a canonical serialisation of every other key and value (tensors by dtype,
    shape and bytes), which :func:`load_checkpoint` verifies; these two keys of
    ``state``, if any (a loaded checkpoint saved again), are replaced. It is written to
    ``.NAME.<pid>.tmp`` in the same folder and moved into place with
    :func:`os.replace`, so a crash never leaves a truncated checkpoint; temporaries
    of killed writers (their process gone) are removed.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "c.pt")
        >>> save_checkpoint({"step": 3}, p); load_checkpoint(p)["step"]
        3
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    _remove_stale_temporaries(path)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    payload = {k: v for k, v in state.items() if k not in _RESERVED_KEYS}
    payload["version"] = CHECKPOINT_VERSION
    payload["sha256"] = _digest(payload)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _first_line(e: BaseException, limit: int = 200) -> str:
    # torch's weights-only failures open with a paragraph on torch.load defaults that
    # suggests weights_only=False; the cause is on the "WeightsUnpickler error" line.
    cause = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(e))
    if cause is not None:
        return f"{type(e).__name__}: {cause.group(1).strip()[:limit]}"
    text = str(e).strip().splitlines()
    line = text[0] if text else ""
    line = line if len(line) <= limit else line[: limit - 3] + "..."
    return f"{type(e).__name__}: {line}" if line else type(e).__name__


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device | None = "cpu"
) -> dict[str, Any]:
    """Load and verify a checkpoint written by :func:`save_checkpoint`.

    Loads with ``torch.load(..., weights_only=True)`` and recomputes the payload's
    SHA-256: every way a file can be bad (a directory, empty, truncated, random or
    overwritten bytes, not a dict, a digest that does not match, a newer format)
    raises :class:`CheckpointError` naming the file and the problem. Files written
    by focal-detect 0.1.0 carry no digest: they load with a :class:`UserWarning`
    that their integrity cannot be verified.

    Raises:
        FileNotFoundError: Nothing at ``path``.
        CheckpointError: The file is not a valid checkpoint.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "c.pt")
        >>> save_checkpoint({"w": torch.ones(2)}, p); load_checkpoint(p)["w"].tolist()
        [1.0, 1.0]
    """
    fn = "load_checkpoint"
    path = os.fspath(path)
    if not os.path.lexists(path):
        raise FileNotFoundError(f"{fn}: no checkpoint at {path!r}")
    if os.path.isdir(path):
        raise CheckpointError(f"{fn}: checkpoint {path!r} is a directory, not a file")
    if not os.path.isfile(path):
        raise CheckpointError(f"{fn}: checkpoint {path!r} is not a regular file")
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointError(f"{fn}: checkpoint {path!r} is empty (0 bytes)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{fn}: checkpoint {path!r} ({size} bytes) is not a readable torch file: truncated, "
            f"overwritten or not a checkpoint ({_first_line(e)})"
        ) from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(
            f"{fn}: checkpoint {path!r} must hold a dict of named entries, got a {type(ckpt).__name__}"
        )
    version = ckpt.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{fn}: checkpoint {path!r} has an invalid format version {version!r}")
    if version > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{fn}: checkpoint {path!r} has format version {version}; this focal-detect reads "
            f"versions up to {CHECKPOINT_VERSION} (upgrade focal-detect)"
        )
    digest = ckpt.get("sha256")
    if digest is None:
        if version >= 2:
            raise CheckpointError(
                f"{fn}: checkpoint {path!r} (format version {version}) lacks its sha256 digest"
            )
        warnings.warn(
            f"{fn}: checkpoint {path!r} has no integrity digest (written by focal-detect 0.1.0?): "
            "it cannot be verified; save it again to add one",
            UserWarning,
            stacklevel=2,
        )
        return ckpt
    actual = _digest(ckpt)
    if digest != actual:
        raise CheckpointError(
            f"{fn}: checkpoint {path!r} is corrupt: its content does not match its sha256 digest "
            f"(stored {str(digest)[:12]}..., computed {actual[:12]}...)"
        )
    del ckpt["sha256"]
    return ckpt


# ----------------------------------------------------------------------------- logging


def plot_history(history: Sequence[Mapping[str, float]], path: str | os.PathLike[str]) -> None:
    """Plot the loss curves (and lr) of a metric history to an image (matplotlib, Agg).

    Args:
        history: Rows with ``"step"``, ``"loss"``, optional per-component losses
            (keys starting with ``"loss_"``) and ``"lr"``.
        path: Output image path (format from the suffix, e.g. ``.png``).

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "loss.png")
        >>> plot_history([{"step": 1, "loss": 2.0, "lr": 0.1}, {"step": 2, "loss": 1.0, "lr": 0.1}], p)
        >>> os.path.getsize(p) > 0
        True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in history]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    keys = ["loss"] + sorted({k for r in history for k in r if k.startswith("loss_")})
    for k in keys:
        ax.plot(steps, [r.get(k, float("nan")) for r in history], label=k, lw=1.5 if k == "loss" else 1.0)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if history and all(r.get("loss", 0) > 0 for r in history):
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if any("lr" in r for r in history):
        ax2 = ax.twinx()
        ax2.plot(
            steps, [r.get("lr", float("nan")) for r in history], color="gray", ls="--", lw=0.8, label="lr"
        )
        ax2.set_ylabel("learning rate")
        h2, l2 = ax2.get_legend_handles_labels()
    else:
        h2, l2 = [], []
    h1, l1 = ax.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper right", fontsize=8)
    ax.set_title("training loss")
    fig.tight_layout()
    fig.savefig(os.fspath(path))
    plt.close(fig)


def _write_metrics(history: Sequence[Mapping[str, float]], folder: str, append: bool = False) -> None:
    """Write metrics.csv and metrics.jsonl: append the last row if its columns match the
    file's header, else rewrite both files from the whole history (atomically)."""
    if not history:
        return
    csv_path, jsonl_path = os.path.join(folder, "metrics.csv"), os.path.join(folder, "metrics.jsonl")
    last = history[-1]
    if append and os.path.isfile(csv_path):
        with open(csv_path, encoding="utf-8") as f:
            header = f.readline().strip().split(",")
        if header == list(last):
            with open(csv_path, "a", newline="", encoding="utf-8") as f:
                csv.DictWriter(f, fieldnames=header).writerow(last)
            with open(jsonl_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(last) + "\n")
            return
    columns: list[str] = []
    for row in history:
        columns += [k for k in row if k not in columns]
    for path in (csv_path, jsonl_path):
        tmp = path + ".tmp"
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            if path == csv_path:
                w = csv.DictWriter(f, fieldnames=columns)
                w.writeheader()
                w.writerows(history)
            else:
                for row in history:
                    f.write(json.dumps(row) + "\n")
        os.replace(tmp, path)


# ---------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        step: Steps completed (equals ``iterations`` unless stopped early).
        history: Logged metric rows.
        checkpoint: Path of the last checkpoint written (``None`` if none).
        seconds: Wall time of this call.
        model: The trained model (the one passed, or the one the factory built).

    Example:
        >>> TrainResult(step=3).history
        []
    """

    step: int
    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: str | None = None
    seconds: float = 0.0
    model: nn.Module | None = None


def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            rank_local = int(os.environ.get("LOCAL_RANK", "0"))
            return torch.device("cuda", rank_local % torch.cuda.device_count())
        return torch.device("cpu")
    return torch.device(name)


def epoch_batches(
    num_samples: int, batch_size: int, epoch: int, seed: int, world_size: int = 1, rank: int = 0
) -> list[list[int]]:
    """The batches of sample indices process ``rank`` reads in ``epoch``.

    A :class:`~torch.utils.data.DistributedSampler` (shuffled with ``seed + epoch``,
    tail dropped so every process gets the same number of full batches) split into
    consecutive batches; incomplete last batches are dropped.

    Example:
        >>> epoch_batches(10, 2, epoch=0, seed=0) == epoch_batches(10, 2, epoch=0, seed=0)
        True
        >>> sorted(sum(epoch_batches(8, 2, 0, 0, 2, 0) + epoch_batches(8, 2, 0, 0, 2, 1), []))
        [0, 1, 2, 3, 4, 5, 6, 7]
    """
    sampler = DistributedSampler(
        range(num_samples), num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
    )
    sampler.set_epoch(epoch)
    idx = list(sampler)
    return [idx[i : i + batch_size] for i in range(0, len(idx) - batch_size + 1, batch_size)]


def _to_device(images: list[Tensor], targets: list[dict[str, Any]], device: torch.device):  # type: ignore[no-untyped-def]
    images = [im.to(device, non_blocking=True) for im in images]
    targets = [
        {k: (v.to(device, non_blocking=True) if isinstance(v, Tensor) else v) for k, v in t.items()}
        for t in targets
    ]
    return images, targets


def _build_optimizer(model: nn.Module, config: TrainConfig, lr: float) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=config.weight_decay)


def _model_metadata(model: nn.Module, dataset: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    cfg = getattr(model, "config", None)
    if cfg is not None and dataclasses.is_dataclass(cfg):
        meta["model_config"] = dataclasses.asdict(cfg)
    for key in ("class_names", "category_ids"):
        if hasattr(dataset, key):
            meta[key] = list(getattr(dataset, key))
    return meta


def _restore(
    ckpt: dict[str, Any],
    path: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    config: TrainConfig,
    global_batch: int,
    steps_per_epoch: int,
    rank: int,
    world: int,
) -> tuple[int, list[dict[str, float]]]:
    """Restore a run from a loaded training checkpoint; any mismatch is a CheckpointError."""
    fn = "train"
    if ckpt.get("format") != CHECKPOINT_FORMAT:
        got = ckpt.get("format", "no 'format' key")
        raise CheckpointError(f"{fn}: {path!r} is not a focal-detect training checkpoint (format: {got})")
    missing = [k for k in _TRAIN_KEYS if k not in ckpt] + (
        ["rng_per_rank"] if world > 1 and "rng_per_rank" not in ckpt else []
    )
    if missing:
        raise CheckpointError(f"{fn}: training checkpoint {path!r} lacks the key(s) {missing}")
    data_state = ckpt["data"]
    if not isinstance(data_state, dict) or not {"seed", "global_batch", "steps_per_epoch"} <= set(data_state):
        raise CheckpointError(f"{fn}: training checkpoint {path!r} has a malformed 'data' entry")
    if data_state["global_batch"] != global_batch or data_state["seed"] != config.seed:
        raise CheckpointError(
            f"{fn}: cannot resume {path} exactly: it used global batch "
            f"{data_state['global_batch']} and seed {data_state['seed']}, this run "
            f"{global_batch} and {config.seed}"
        )
    if data_state["steps_per_epoch"] != steps_per_epoch:
        raise CheckpointError(
            f"{fn}: cannot resume {path} exactly: the dataset changed size "
            f"({data_state['steps_per_epoch']} steps per epoch then, {steps_per_epoch} now)"
        )
    # Keys and shapes are checked before anything changes: a mismatched file leaves the model as it was.
    part = "model"
    try:
        if not isinstance(ckpt["model"], Mapping):
            raise TypeError(f"a {type(ckpt['model']).__name__}, not a state dict")
        own = model.state_dict()
        wrong = [
            k
            for k, v in ckpt["model"].items()
            if k in own and (not isinstance(v, Tensor) or v.shape != own[k].shape)
        ]
        if wrong:
            k = wrong[0]
            got = (
                tuple(ckpt["model"][k].shape)
                if isinstance(ckpt["model"][k], Tensor)
                else type(ckpt["model"][k]).__name__
            )
            raise ValueError(
                f"{len(wrong)} tensor(s) of the wrong shape, e.g. {k!r}: {got} for the model's {tuple(own[k].shape)}"
            )
        keys = set(ckpt["model"])
        if keys != set(own):
            raise ValueError(
                f"missing keys {sorted(set(own) - keys)[:3]}, unexpected keys {sorted(keys - set(own))[:3]}"
            )
        part = "rng"
        rng = ckpt["rng"] if world == 1 else ckpt["rng_per_rank"][rank]
        saved_rng = get_rng_state()
        set_rng_state(rng)  # validates the states; restored below if a later part fails
        try:
            part = "optimizer"
            optimizer.load_state_dict(ckpt["optimizer"])
            part = "scheduler"
            scheduler.load_state_dict(ckpt["scheduler"])
            part = "step"
            step = int(ckpt["step"])
            if not 0 <= step:
                raise ValueError(f"step {step} < 0")
            part = "history"
            history = [dict(r) for r in ckpt["history"]]
            part = "model"  # last: the weights change only when everything else fits
            model.load_state_dict(ckpt["model"])
        except BaseException:
            set_rng_state(saved_rng)
            raise
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as e:
        raise CheckpointError(
            f"{fn}: training checkpoint {path!r} does not fit this run: bad '{part}' entry ({_first_line(e)})"
        ) from None
    return step, history


def train(
    model: nn.Module | Callable[[], nn.Module],
    dataset: Dataset,
    config: TrainConfig | None = None,
    *,
    stop_after: int | None = None,
    time_limit_s: float | None = None,
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    r"""Train a detector (``model(images, targets) -> dict of losses`` in train mode).

    See the module documentation for the recipe, the exact-resume guarantees and
    distributed training. The summed loss is minimised; a non-finite loss raises
    ``FloatingPointError`` naming the step (no checkpoint is written for it).

    Args:
        model: Detector with torchvision's interface; its ``config`` (a dataclass), if
            any, is stored in checkpoints with the dataset's ``class_names`` and
            ``category_ids``. Or a zero-argument factory returning one: it is called
            after :func:`seed_everything` ``(config.seed)``, so the seed also fixes the
            initial weights (the trained model is :attr:`TrainResult.model`). A module
            built by the caller keeps the weights it was built with: call
            :func:`seed_everything` before building it.
        dataset: Training set returning ``(image, target)``; flips are added here.
        config: :class:`TrainConfig` (default: the paper's recipe).
        stop_after: Stop (after writing a checkpoint) once this many steps have been
            completed in total: an interruption that :attr:`TrainConfig.resume` undoes.
        time_limit_s: Stop the same way once this call has run this many seconds (a
            safety net for time-boxed jobs; process 0's clock decides under DDP).
        callback: Called as ``callback(step, row)`` after each logged row.

    Returns:
        A :class:`TrainResult`.

    Example:
        >>> import tempfile
        >>> class Toy(nn.Module):
        ...     def __init__(self):
        ...         super().__init__(); self.w = nn.Parameter(torch.ones(1))
        ...     def forward(self, images, targets):
        ...         return {"loss_l2": sum((im.mean() - self.w) ** 2 for im in images).sum()}
        >>> data = [(torch.zeros(3, 4, 4), {"boxes": torch.zeros(0, 4)})] * 8
        >>> cfg = TrainConfig(iterations=4, batch_size=2, lr=0.1, warmup_iters=0,
        ...                   progress=False, output_dir=tempfile.mkdtemp(), log_every=2)
        >>> res = train(Toy(), data, cfg)
        >>> res.step, round(res.history[-1]["loss"], 2) < 2.0
        (4, True)
    """
    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise TypeError(f"train: config must be a TrainConfig, got {type(config).__name__}")
    if stop_after is not None:
        check_number("train", "stop_after", stop_after, low=1)
    if time_limit_s is not None:
        check_number("train", "time_limit_s", time_limit_s, low=0, low_open=True)
    t_start = time.perf_counter()
    if not isinstance(model, nn.Module):
        if not callable(model):
            raise TypeError(
                f"train: model must be an nn.Module or a factory returning one, got {type(model).__name__}"
            )
        seed_everything(config.seed)  # the same initial weights on every rank
        built = model()
        if not isinstance(built, nn.Module):
            raise TypeError(f"train: model factory must return an nn.Module, got {type(built).__name__}")
        model = built
    rank, world = _dist_info()
    device = _resolve_device(config.device)
    model.to(device)
    global_batch = config.batch_size * world
    steps_per_epoch = len(dataset) // global_batch  # type: ignore[arg-type]
    if steps_per_epoch < 1:
        raise ValueError(
            f"train: dataset must hold at least batch_size * world_size = {global_batch} images, "
            f"got {len(dataset)}"  # type: ignore[arg-type]
        )
    out_dir = config.output_dir
    if rank == 0:
        os.makedirs(out_dir, exist_ok=True)
    ckpt_path = os.path.join(out_dir, LAST_CHECKPOINT)

    optimizer = _build_optimizer(model, config, config.global_lr(world))
    schedule = WarmupMultiStep(
        config.iterations,
        config.milestone_steps,
        config.gamma,
        config.warmup_iters,
        config.warmup_factor,
        config.schedule,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    aug = SeededAugment(dataset, RandomHorizontalFlip(config.hflip), seed=config.seed)

    step = 0
    history: list[dict[str, float]] = []
    if rank == 0:
        _remove_stale_temporaries(ckpt_path)
    if config.resume is True and not os.path.lexists(ckpt_path):
        raise CheckpointError(
            f"train: resume=True but there is nothing to resume from: no {ckpt_path!r} "
            "(wrong output_dir? resume='auto' (--resume auto) starts afresh when there is none)"
        )
    if config.resume and os.path.lexists(ckpt_path):
        ckpt = load_checkpoint(ckpt_path, map_location="cpu")
        step, history = _restore(
            ckpt, ckpt_path, model, optimizer, scheduler, config, global_batch, steps_per_epoch, rank, world
        )
    else:
        seed_everything(config.seed + rank)

    ddp_model: nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ddp_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    model.train()

    meta = _model_metadata(model, dataset)
    written: str | None = None

    def checkpoint() -> None:
        nonlocal written
        rng = get_rng_state()
        if world > 1:
            gathered: list[Any] = [None] * world
            torch.distributed.all_gather_object(gathered, rng)
        if rank != 0:
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng,
            "data": {"seed": config.seed, "global_batch": global_batch, "steps_per_epoch": steps_per_epoch},
            "history": history,
            "train_config": dataclasses.asdict(config),
            **meta,
        }
        if world > 1:
            state["rng_per_rank"] = gathered
        save_checkpoint(state, ckpt_path)
        written = ckpt_path

    pbar = None
    if config.progress and rank == 0:
        from tqdm.auto import tqdm

        pbar = tqdm(total=config.iterations, initial=step, desc="train", dynamic_ncols=True)

    history_synced = False  # metrics files rewritten from the history once per call
    window: dict[str, float] = {}
    n_window = 0
    t_window = t_step = time.perf_counter()
    img_s: float | None = None
    autocast_device = device.type if device.type in ("cpu", "cuda") else "cpu"
    stop = min(config.iterations, stop_after) if stop_after is not None else config.iterations
    while step < stop:
        epoch, first = divmod(step, steps_per_epoch)
        aug.set_epoch(epoch)
        batches = epoch_batches(len(aug), config.batch_size, epoch, config.seed, world, rank)[first:]
        loader = DataLoader(
            aug,
            batch_sampler=batches,
            collate_fn=collate_detection,
            num_workers=config.num_workers,
            pin_memory=device.type == "cuda",
        )
        for images, targets in loader:
            images, targets = _to_device(images, targets, device)
            with torch.autocast(autocast_device, dtype=torch.bfloat16, enabled=config.amp):
                losses = ddp_model(images, targets)
            loss = sum(losses.values())
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise FloatingPointError(
                    f"train: loss is {loss_value} at step {step + 1} "
                    f"({ {k: float(v.detach()) for k, v in losses.items()} }); lower the lr, "
                    "enable clip_grad_norm, or resume from the last checkpoint"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad_norm)
            lr_now = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            step += 1
            if time_limit_s is not None and step < stop:
                over = torch.tensor(float(time.perf_counter() - t_start > time_limit_s))
                if world > 1:
                    torch.distributed.broadcast(over, src=0)
                if over.item():
                    stop = step
            window["loss"] = window.get("loss", 0.0) + loss_value
            for k, v in losses.items():
                key = k if k.startswith("loss_") else f"loss_{k}"
                window[key] = window.get(key, 0.0) + float(v.detach())
            n_window += 1
            if step % config.log_every == 0 or step == stop:
                vals = torch.tensor([window[k] / n_window for k in sorted(window)], dtype=torch.float64)
                if world > 1:
                    torch.distributed.all_reduce(vals)
                    vals /= world
                now = time.perf_counter()
                row: dict[str, float] = {"step": step, "epoch": step / steps_per_epoch, "lr": lr_now}
                row.update({k: float(v) for k, v in zip(sorted(window), vals.tolist())})
                row["images_per_s"] = n_window * global_batch / max(now - t_window, 1e-9)
                row["time_s"] = now - t_start
                history.append(row)
                if rank == 0:
                    _write_metrics(history, out_dir, append=history_synced)
                    history_synced = True
                if callback is not None:
                    callback(step, row)
                window, n_window, t_window = {}, 0, now
            if pbar is not None:
                now = time.perf_counter()
                rate = global_batch / max(now - t_step, 1e-9)
                img_s = rate if img_s is None else 0.9 * img_s + 0.1 * rate
                t_step = now
                pbar.update(1)
                pbar.set_postfix(
                    loss=f"{loss_value:.4f}", lr=f"{lr_now:.2e}", img_s=f"{img_s:.1f}", refresh=False
                )
            if step == stop or (config.checkpoint_every and step % config.checkpoint_every == 0):
                checkpoint()
            if step >= stop:
                break
    if pbar is not None:
        pbar.close()
    if rank == 0 and history:
        plot_history(history, os.path.join(out_dir, "loss_curve.png"))
    return TrainResult(
        step=step, history=history, checkpoint=written, seconds=time.perf_counter() - t_start, model=model
    )
