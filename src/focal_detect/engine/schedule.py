r"""The learning-rate schedule: linear warmup, then step (the paper's) or cosine decay.

.. math::

    \mathrm{lr}(t) = \mathrm{lr}_0 \cdot w(t) \cdot d(t), \qquad
    w(t) = f + (1 - f)\,\min(1, t / T_w)

with :math:`d(t) = \gamma^{\#\{m \le t\}}` over the milestones :math:`m` (step) or
:math:`d(t) = \tfrac12 (1 + \cos(\pi \min(t, T) / T))` (cosine).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from focal_detect._checks import check_choice
from focal_detect.engine.budget import BudgetLR, FractionSchedule
from focal_detect.engine.config import TrainConfig

__all__ = ["WarmupMultiStep", "make_scheduler"]


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


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig
) -> torch.optim.lr_scheduler.LRScheduler:
    """The scheduler of ``config``'s schedule.

    Stepped once after every optimizer step, so step :math:`t` (counted from 0) runs
    at ``base_lr * WarmupMultiStep(...)(t)`` (a
    :class:`~torch.optim.lr_scheduler.LambdaLR`). With ``config.time_budget_s`` it is a
    :class:`~focal_detect.engine.budget.BudgetLR` over the fraction of the budget used,
    or of ``iterations`` if that is further (``milestones``, ``gamma``,
    ``warmup_fraction``, ``warmup_factor``, ``schedule``).

    Example:
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        >>> sched = make_scheduler(opt, TrainConfig(iterations=9, warmup_iters=2, warmup_factor=0.5))
        >>> lrs = []
        >>> for _ in range(9):
        ...     lrs.append(round(opt.param_groups[0]["lr"], 6)); opt.step(); sched.step()
        >>> lrs
        [0.05, 0.075, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001]
    """
    if config.time_budget_s is not None:
        fractions = FractionSchedule(
            config.milestones, config.gamma, config.warmup_fraction, config.warmup_factor, config.schedule
        )
        return BudgetLR(optimizer, fractions, config.time_budget_s, max_steps=config.iterations)
    schedule = WarmupMultiStep(
        config.iterations,
        config.milestone_steps,
        config.gamma,
        config.warmup_iters,
        config.warmup_factor,
        config.schedule,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
