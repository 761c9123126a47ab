"""The training loop: :func:`train` and its pieces (setup, resume, one step, the steps)."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from focal_detect._checks import check_number
from focal_detect.data.augment import build_augmentation
from focal_detect.data.transforms import SeededAugment, collate_detection
from focal_detect.engine.budget import BudgetClock, BudgetLR
from focal_detect.engine.checkpoint import LAST_CHECKPOINT, CheckpointError
from focal_detect.engine.config import TrainConfig
from focal_detect.engine.metrics import _RunLog, plot_history
from focal_detect.engine.resume import Checkpointer
from focal_detect.engine.rng import seed_everything
from focal_detect.engine.schedule import make_scheduler

__all__ = ["TrainResult", "train", "epoch_batches"]


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
    sampler: DistributedSampler[int] = DistributedSampler(
        range(num_samples),  # type: ignore[arg-type]  # any sized sequence works
        num_replicas=world_size,
        rank=rank,
        shuffle=True,
        seed=seed,
        drop_last=True,
    )
    sampler.set_epoch(epoch)
    idx = list(sampler)
    return [idx[i : i + batch_size] for i in range(0, len(idx) - batch_size + 1, batch_size)]


@dataclass(frozen=True)
class _Run:
    """The facts of one :func:`train` call, fixed at its start."""

    rank: int
    world: int
    device: torch.device
    global_batch: int
    steps_per_epoch: int
    out_dir: str

    @classmethod
    def start(cls, model: nn.Module, dataset: Dataset, config: TrainConfig) -> _Run:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        else:
            rank, world = 0, 1
        device = _resolve_device(config.device)
        model.to(device)
        global_batch = config.batch_size * world
        steps_per_epoch = len(dataset) // global_batch  # type: ignore[arg-type]
        if steps_per_epoch < 1:
            raise ValueError(
                f"train: dataset must hold at least batch_size * world_size = {global_batch} images, "
                f"got {len(dataset)}"  # type: ignore[arg-type]
            )
        if rank == 0:
            os.makedirs(config.output_dir, exist_ok=True)
        return cls(rank, world, device, global_batch, steps_per_epoch, config.output_dir)


@dataclass
class _Parts:
    """What a step updates: the model (and its DDP wrapper), optimizer and scheduler."""

    model: nn.Module
    wrapped: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            rank_local = int(os.environ.get("LOCAL_RANK", "0"))
            return torch.device("cuda", rank_local % torch.cuda.device_count())
        return torch.device("cpu")
    return torch.device(name)


def _to_device(
    images: list[Tensor], targets: list[dict[str, Any]], device: torch.device
) -> tuple[list[Tensor], list[dict[str, Any]]]:
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


def _model_metadata(model: nn.Module, dataset: object) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    cfg = getattr(model, "config", None)
    if cfg is not None and dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        meta["model_config"] = dataclasses.asdict(cfg)
    for key in ("class_names", "category_ids"):
        if hasattr(dataset, key):
            meta[key] = list(getattr(dataset, key))
    return meta


def _build_model(model: nn.Module | Callable[[], nn.Module], seed: int) -> nn.Module:
    if isinstance(model, nn.Module):
        return model
    if not callable(model):
        raise TypeError(
            f"train: model must be an nn.Module or a factory returning one, got {type(model).__name__}"
        )
    seed_everything(seed)  # the same initial weights on every rank
    built = model()
    if not isinstance(built, nn.Module):
        raise TypeError(f"train: model factory must return an nn.Module, got {type(built).__name__}")
    return built


def _resume_or_seed(
    checkpointer: Checkpointer, config: TrainConfig, parts: _Parts, rank: int
) -> tuple[int, list[dict[str, float]]]:
    """``(step, history)`` of the run so far: restored from the checkpoint, or a fresh start."""
    if rank == 0:
        checkpointer.remove_stale_temporaries()
    if config.resume is True and not checkpointer.exists():
        raise CheckpointError(
            f"train: resume=True but there is nothing to resume from: no {checkpointer.path!r} "
            "(wrong output_dir? resume='auto' (--resume auto) starts afresh when there is none)"
        )
    if config.resume and checkpointer.exists():
        return checkpointer.restore(parts.model, parts.optimizer, parts.scheduler)
    seed_everything(config.seed + rank)
    return 0, []


def _train_step(
    parts: _Parts, images: list[Tensor], targets: list[dict[str, Any]], config: TrainConfig, step: int
) -> tuple[dict[str, Tensor], float]:
    """Optimizer step number ``step`` (from 1): the step's metrics (device tensors, not
    read) and the lr it ran at. With ``nonfinite_check="step"`` it reads one bool: the
    only host sync of the step. The caller steps the scheduler."""
    device_type = images[0].device.type if images else "cpu"
    autocast_device = device_type if device_type in ("cpu", "cuda") else "cpu"
    with torch.autocast(autocast_device, dtype=torch.bfloat16, enabled=config.amp):
        losses = parts.wrapped(images, targets)
    loss = sum(losses.values())
    if config.nonfinite_check == "step" and not bool(torch.isfinite(loss.detach())):
        raise FloatingPointError(
            f"train: loss is {float(loss.detach())} at step {step} "
            f"({ {k: float(v.detach()) for k, v in losses.items()} }); lower the lr, "
            "enable clip_grad_norm, or resume from the last checkpoint"
        )
    parts.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    metrics = {"loss": loss.detach()}
    for k, v in losses.items():
        metrics[k if k.startswith("loss_") else f"loss_{k}"] = v.detach()
    if config.clip_grad_norm is not None:
        metrics["grad_norm"] = torch.nn.utils.clip_grad_norm_(parts.model.parameters(), config.clip_grad_norm)
    lr = float(parts.optimizer.param_groups[0]["lr"])
    parts.optimizer.step()
    return metrics, lr


class _Deadline:
    """``time_limit_s`` of a call; process 0's clock decides (one broadcast per check under DDP)."""

    def __init__(self, t_start: float, limit_s: float, run: _Run) -> None:
        self.t_end, self.world = t_start + limit_s, run.world
        self.device = run.device if run.device.type == "cuda" else torch.device("cpu")

    def passed(self) -> bool:
        over = time.perf_counter() > self.t_end
        if self.world == 1:
            return over
        flag = torch.tensor(float(over), device=self.device)
        torch.distributed.broadcast(flag, src=0)
        return bool(flag)


def _budget_clock(config: TrainConfig, parts: _Parts, run: _Run, t_start: float) -> BudgetClock | None:
    """The clock of ``config.time_budget_s``, continuing a resumed run's seconds."""
    if config.time_budget_s is None:
        return None
    sched = cast(BudgetLR, parts.scheduler)
    device = run.device if run.device.type == "cuda" else torch.device("cpu")
    return BudgetClock(config.time_budget_s, t_start, sched.elapsed_s, run.world, device, sched.step_s)


def _epoch_loader(aug: SeededAugment, config: TrainConfig, run: _Run, step: int) -> DataLoader:
    """The batches of the epoch of ``step``, from the batch after ``step``."""
    epoch, first = divmod(step, run.steps_per_epoch)
    aug.set_epoch(epoch)
    batches = epoch_batches(len(aug), config.batch_size, epoch, config.seed, run.world, run.rank)[first:]
    return DataLoader(
        aug,
        batch_sampler=batches,
        collate_fn=collate_detection,
        num_workers=config.num_workers,
        pin_memory=run.device.type == "cuda",
    )


def _run_steps(
    run: _Run,
    config: TrainConfig,
    parts: _Parts,
    aug: SeededAugment,
    log: _RunLog,
    checkpointer: Checkpointer,
    step: int,
    stop: int,
    deadline: _Deadline | None,
    clock: BudgetClock | None,
) -> int:
    """Train from ``step`` to ``stop`` (earlier if the deadline passes or the time
    budget is used up); the last step."""
    while step < stop:
        for images, targets in _epoch_loader(aug, config, run, step):
            metrics, lr = _train_step(parts, *_to_device(images, targets, run.device), config, step + 1)
            step += 1
            if clock is not None:
                elapsed, spent = clock.after_step(step)
                cast(BudgetLR, parts.scheduler).advance(elapsed, clock.step_seconds())
                if spent:
                    stop = step
            parts.scheduler.step()
            if deadline is not None and step < stop and deadline.passed():
                stop = step
            log.record(metrics, lr)
            row = log.flush(step) if step % config.log_every == 0 or step == stop else None
            log.tick(row)
            if checkpointer.due(step, stop):
                log.check_finite(step)
                checkpointer.save(step, parts.model, parts.optimizer, parts.scheduler, log.history)
            if step >= stop:
                break
    return step


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
    model = _build_model(model, config.seed)
    run = _Run.start(model, dataset, config)
    optimizer = _build_optimizer(model, config, config.global_lr(run.world))
    parts = _Parts(model, model, optimizer, make_scheduler(optimizer, config))
    checkpointer = Checkpointer(
        os.path.join(run.out_dir, LAST_CHECKPOINT),
        seed=config.seed,
        global_batch=run.global_batch,
        steps_per_epoch=run.steps_per_epoch,
        every=config.checkpoint_every,
        rank=run.rank,
        world_size=run.world,
        extra={"train_config": dataclasses.asdict(config), **_model_metadata(model, dataset)},
    )
    step, history = _resume_or_seed(checkpointer, config, parts, run.rank)
    stop = min(config.iterations, stop_after) if stop_after is not None else config.iterations
    aug = SeededAugment(
        dataset, build_augmentation({"hflip": config.hflip, **(config.augment or {})}), seed=config.seed
    )
    deadline = None if time_limit_s is None else _Deadline(t_start, time_limit_s, run)
    clock = _budget_clock(config, parts, run, t_start)
    if clock is not None and clock.spent_before():
        stop = step  # a resumed run whose budget is already used up (the loop's own rule)
    log = _RunLog(
        history,
        folder=run.out_dir,
        rank=run.rank,
        world_size=run.world,
        global_batch=run.global_batch,
        steps_per_epoch=run.steps_per_epoch,
        check_window=config.nonfinite_check == "window",
        t_start=t_start,
        callback=callback,
        progress=(config.iterations, step) if config.progress and run.rank == 0 else None,
        clock=clock,
    )
    if run.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [run.device.index] if run.device.type == "cuda" else None
        parts.wrapped = DistributedDataParallel(model, device_ids=ids)
    model.train()
    try:
        step = _run_steps(run, config, parts, aug, log, checkpointer, step, stop, deadline, clock)
    finally:
        log.close()
        parts.wrapped = model  # drop the DDP wrapper (and its reducer) before returning
    if run.rank == 0 and history:
        plot_history(history, os.path.join(run.out_dir, "loss_curve.png"))
    if run.world > 1:
        torch.distributed.barrier()  # every process leaves after process 0's last file write
    return TrainResult(
        step=step,
        history=history,
        checkpoint=checkpointer.last,
        seconds=time.perf_counter() - t_start,
        model=model,
    )
