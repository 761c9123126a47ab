r"""The run's hyper-parameters (:class:`TrainConfig`) and the paper's learning rate."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from focal_detect._checks import check_choice, check_number

__all__ = ["TrainConfig", "paper_lr"]


def paper_lr(global_batch_size: int) -> float:
    r"""The paper's learning rate scaled linearly: :math:`0.01 \cdot B / 16`.

    Args:
        global_batch_size: Images per step over all processes, :math:`B \ge 1`.

    Example:
        >>> paper_lr(16), paper_lr(4)
        (0.01, 0.0025)
    """
    b = check_number("paper_lr", "global_batch_size", global_batch_size, low=1)
    return 0.01 * b / 16


@dataclass(frozen=True)
class TrainConfig:
    r"""Hyper-parameters of :func:`~focal_detect.engine.train`; the defaults are the paper's recipe.

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
        time_budget_s: Train for this many seconds of wall time instead of a step
            count (``None``: off). The schedule (warmup, step or cosine decay) then runs
            over the *fraction of the budget used* (:mod:`focal_detect.engine.budget`),
            so it completes at the budget however fast the machine is; training stops
            when another step would end past it, and ``iterations`` is only an upper
            bound (if it comes first, the schedule completes there instead). Seconds used are stored in checkpoints, so a resumed run continues
            the schedule and stops when the total reaches the budget.
        warmup_fraction: With ``time_budget_s``: the warmup's length as a fraction of
            the budget (``warmup_iters`` is then not used), in ``[0, 1)``.
        amp: Mixed precision: autocast to bfloat16 (CPU or GPU).
        clip_grad_norm: Clip the global gradient norm to this value (``None``: off);
            the norm before clipping is logged as ``grad_norm``.
        hflip: Horizontal-flip probability.
        augment: Further small-data augmentation on top of the flip, as the settings
            of :func:`~focal_detect.data.build_augmentation` (``scale_jitter``,
            ``aspect_jitter``, ``photometric``, ``output_size``, ``min_visibility``,
            ``fill``; e.g. ``{"scale_jitter": (0.5, 1.5), "photometric": 0.2}``);
            ``None`` (default) is the flip alone, sample for sample as before. Seeded
            per ``(seed, epoch, index)`` like the flip, so runs stay resumable.
        seed: Seed of the initial RNG states, data order and augmentation.
        num_workers: Data-loader worker processes.
        log_every: Log averaged metrics every this many steps (the metrics are read
            from the device only then: see the module's host-sync policy).
        checkpoint_every: Write ``checkpoint_last.pt`` every this many steps (and at
            the end); ``0`` only at the end.
        output_dir: Folder for checkpoints, ``metrics.csv``/``metrics.jsonl`` and
            ``loss_curve.png``.
        device: ``"auto"`` (CUDA if available, else CPU) or a torch device string.
        progress: Show a tqdm progress bar (process 0 only).
        resume: ``False``: start afresh (an existing checkpoint is overwritten);
            ``True``: continue from ``output_dir/checkpoint_last.pt``, and raise
            :class:`~focal_detect.engine.CheckpointError` if there is none;
            ``"auto"``: continue if it exists, else start afresh.
        dist_timeout: Seconds a collective may wait before the process group gives
            up (``None``: torch's default). ``focal-detect train`` passes it to
            :func:`torch.distributed.init_process_group`; from Python, pass
            ``timeout=datetime.timedelta(seconds=...)`` to it yourself.
        nonfinite_check: When a non-finite loss is detected. ``"step"``: every step,
            before the update (one host sync per step); the error names the step and
            the model keeps the weights of the step before. ``"window"``: when the
            metrics are read (every ``log_every`` steps, before each checkpoint and at
            the end; no sync of its own); the error names the window of steps, and the
            weights have taken the non-finite updates by then. Either way no
            checkpoint is written after a non-finite loss.

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
    time_budget_s: float | None = None
    warmup_fraction: float = 0.05
    amp: bool = False
    clip_grad_norm: float | None = None
    hflip: float = 0.5
    augment: Mapping[str, Any] | None = None
    seed: int = 0
    num_workers: int = 0
    log_every: int = 20
    checkpoint_every: int = 1000
    output_dir: str = "runs/retinanet"
    device: str = "auto"
    progress: bool = True
    resume: bool | str = False
    dist_timeout: float | None = None
    nonfinite_check: str = "step"

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
        check_choice(fn, "nonfinite_check", self.nonfinite_check, ("step", "window"))
        check_number(fn, "momentum", self.momentum, low=0, high=1)
        check_number(fn, "weight_decay", self.weight_decay, low=0)
        check_number(fn, "gamma", self.gamma, low=0, high=1)
        check_number(fn, "warmup_factor", self.warmup_factor, low=0, high=1)
        check_number(fn, "hflip", self.hflip, low=0, high=1)
        if self.time_budget_s is not None:
            check_number(fn, "time_budget_s", self.time_budget_s, low=0, low_open=True)
        check_number(fn, "warmup_fraction", self.warmup_fraction, low=0, high=1)
        if self.warmup_fraction >= 1:
            raise ValueError(f"{fn}: warmup_fraction must be < 1, got {self.warmup_fraction!r}")
        if self.augment is not None:
            object.__setattr__(self, "augment", _augment_settings(fn, self.augment))
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


def _augment_settings(fn: str, augment: object) -> dict[str, Any]:
    """``augment`` as a plain dict (lists made tuples), checked by building it once."""
    from focal_detect.data.augment import build_augmentation

    if not isinstance(augment, Mapping):
        raise TypeError(
            f"{fn}: augment must be a dict of build_augmentation settings or None, got {augment!r}"
        )
    if "hflip" in augment:
        raise ValueError(
            f"{fn}: augment must not set 'hflip' (it is TrainConfig.hflip), got {dict(augment)!r}"
        )
    settings = {str(k): tuple(v) if isinstance(v, list) else v for k, v in augment.items()}
    try:
        build_augmentation(settings)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{fn}: augment must be valid build_augmentation settings: {e}") from None
    return settings
