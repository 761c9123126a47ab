r"""Training for a time budget: the schedule runs over the fraction of the budget used.

With :attr:`TrainConfig.time_budget_s <focal_detect.engine.TrainConfig.time_budget_s>`
set, a run's progress is not the step :math:`t` of :math:`T` but the fraction of the
budget :math:`B` used so far,

.. math::

    u = \min\Big(1, \max\Big(\frac{e}{B}, \frac{t}{T}\Big)\Big), \qquad
    \mathrm{lr}(u) = \mathrm{lr}_0 \cdot w(u) \cdot d(u), \qquad
    w(u) = f + (1 - f)\,\min(1, u / u_w)

with :math:`e` the wall-clock seconds the run has trained (counted over resumes),
:math:`t` the steps done and :math:`T` the step cap (``iterations``; the schedule
completes at whichever of the two ends first),
:math:`u_w` = ``warmup_fraction``, :math:`d(u) = \gamma^{\#\{m \le u\}}` over the
milestone fractions (step) or :math:`d(u) = \tfrac12 (1 + \cos \pi u)` (cosine). The
schedule therefore completes at the budget whatever the machine's speed: a machine
that slows down mid-run takes fewer steps, not a schedule cut short at a high learning
rate. Training stops after the step at which another step (at the recent step time)
would end past the budget, so a run ends at most about one step time before it.

Time runs from the start of :func:`~focal_detect.engine.train` (model set-up, data
loading and checkpoint writes count). A checkpoint stores the seconds used, so a
resumed run continues the schedule where it was and stops when the *total* reaches the
budget of the resumed call. A time-budgeted run is not bit-reproducible (its learning
rates depend on the clock); its data order and augmentation still follow the seed.
Under DDP process 0's clock decides: the fraction and the stop flag are broadcast once
per step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from focal_detect._checks import check_choice, check_number

__all__ = ["BudgetClock", "BudgetLR", "FractionSchedule"]


class FractionSchedule:
    r"""Learning-rate factor at fraction :math:`u \in [0, 1]` of a time budget.

    Args:
        milestones: Increasing fractions in ``(0, 1)`` at which the step schedule
            multiplies the lr by ``gamma``.
        gamma: Decay factor per milestone.
        warmup_fraction: Warmup length :math:`u_w` as a fraction of the budget, in
            ``[0, 1)`` (0: no warmup).
        warmup_factor: Factor :math:`f` at :math:`u = 0`.
        schedule: ``"step"`` or ``"cosine"`` (to zero at :math:`u = 1`).

    Example:
        >>> f = FractionSchedule((2 / 3, 8 / 9), warmup_fraction=0.1, warmup_factor=0.5)
        >>> [round(f(u), 4) for u in (0.0, 0.05, 0.5, 0.7, 0.9, 1.0)]
        [0.5, 0.75, 1.0, 0.1, 0.01, 0.01]
        >>> c = FractionSchedule(schedule="cosine", warmup_fraction=0.0)
        >>> [round(c(u), 4) for u in (0.0, 0.5, 1.0)]
        [1.0, 0.5, 0.0]
    """

    def __init__(
        self,
        milestones: Sequence[float] = (2 / 3, 8 / 9),
        gamma: float = 0.1,
        warmup_fraction: float = 0.05,
        warmup_factor: float = 1 / 3,
        schedule: str = "step",
    ) -> None:
        fn = "FractionSchedule"
        self.milestones = [float(m) for m in milestones]
        if any(not 0 < m < 1 for m in self.milestones) or self.milestones != sorted(self.milestones):
            raise ValueError(f"{fn}: milestones must be increasing fractions in (0, 1), got {milestones!r}")
        self.gamma = float(check_number(fn, "gamma", gamma, low=0, high=1))
        self.warmup_fraction = float(check_number(fn, "warmup_fraction", warmup_fraction, low=0, high=1))
        if self.warmup_fraction >= 1:
            raise ValueError(f"{fn}: warmup_fraction must be < 1, got {warmup_fraction!r}")
        self.warmup_factor = float(check_number(fn, "warmup_factor", warmup_factor, low=0, high=1))
        self.schedule = check_choice(fn, "schedule", schedule, ("step", "cosine"))

    def __call__(self, fraction: float) -> float:
        u = min(max(float(fraction), 0.0), 1.0)
        if self.schedule == "step":
            decay = self.gamma ** sum(u >= m for m in self.milestones)
        else:
            decay = 0.5 * (1.0 + math.cos(math.pi * u))
        if u < self.warmup_fraction:
            alpha = u / self.warmup_fraction
            decay *= self.warmup_factor * (1 - alpha) + alpha
        return decay


class BudgetLR(torch.optim.lr_scheduler.LRScheduler):
    r"""A scheduler whose learning rate is ``base_lr * schedule(fraction)``.

    :meth:`advance` tells it the seconds used; the next ``step()`` sets the lr of the
    fraction ``max(elapsed_s / budget_s, steps / max_steps)``, so the schedule also
    completes when the step cap comes first. Its ``state_dict`` holds plain numbers
    only (``weights_only=True`` loads it), among them ``elapsed_s``, from which a
    resumed run continues its clock.

    Args:
        optimizer: The optimizer.
        schedule: A :class:`FractionSchedule`.
        budget_s: The budget :math:`B` in seconds, ``> 0``.
        max_steps: The step cap :math:`T` (``None``: none).

    Example:
        >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        >>> sched = BudgetLR(opt, FractionSchedule(schedule="cosine", warmup_fraction=0.0), 100.0)
        >>> sched.advance(50.0); opt.step(); sched.step()
        >>> round(opt.param_groups[0]["lr"], 6), sched.fraction
        (0.05, 0.5)
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        schedule: FractionSchedule,
        budget_s: float,
        max_steps: int | None = None,
    ) -> None:
        self.schedule = schedule
        self.budget_s = float(check_number("BudgetLR", "budget_s", budget_s, low=0, low_open=True))
        if max_steps is not None:
            check_number("BudgetLR", "max_steps", max_steps, low=1)
        self.max_steps = None if max_steps is None else int(max_steps)
        self.elapsed_s = 0.0
        self.step_s = 0.0  # recent seconds per step (0: none timed yet)
        super().__init__(optimizer)

    @property
    def fraction(self) -> float:
        """The fraction of the run done, in ``[0, 1]``: of the budget, or of the step cap if further."""
        u = self.elapsed_s / self.budget_s
        if self.max_steps is not None:
            u = max(u, max(self.last_epoch, 0) / self.max_steps)
        return min(1.0, u)

    def advance(self, elapsed_s: float, step_s: float | None = None) -> None:
        """Set the seconds used so far (the next ``step()`` applies them) and the recent
        seconds per step (kept so that a resumed run applies the same stopping rule)."""
        self.elapsed_s = float(elapsed_s)
        if step_s is not None:
            self.step_s = float(step_s)

    def get_lr(self) -> list[float | Tensor]:
        factor = self.schedule(self.fraction)
        return [base * factor for base in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "schedule")}
        state["kind"] = "time_budget"
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("kind") != "time_budget" or "elapsed_s" not in state_dict:
            raise ValueError(
                "the checkpoint's scheduler is a step schedule, not a time budget's: resume it without "
                "time_budget_s (or start afresh)"
            )
        for key in ("elapsed_s", "step_s"):
            value = float(state_dict.get(key, 0.0))
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{key} {value!r} is not a time")
        state = {k: v for k, v in state_dict.items() if k not in ("kind", "budget_s", "max_steps")}
        self.__dict__.update(state)  # the budget and cap of this call apply


class BudgetClock:
    r"""The clock of a time-budgeted run: seconds used, remaining, steps expected, when to stop.

    Args:
        budget_s: The budget :math:`B` in seconds.
        t_start: ``time.perf_counter()`` at the start of this call.
        elapsed_before: Seconds used by earlier calls (a resumed run).
        step_s_before: Their recent seconds per step (0: unknown).
        world_size: Processes; above 1, :meth:`after_step` broadcasts process 0's view.
        device: Device of the broadcast tensor (the run's, for NCCL; else CPU).

    Raises:
        ValueError: A budget that is not positive, negative earlier seconds or step
            time, a world size below 1.

    Example:
        >>> clock = BudgetClock(10.0, t_start=time.perf_counter(), elapsed_before=4.0)
        >>> 4.0 <= clock.elapsed() < 5.0, clock.after_step(step=1)[1]
        (True, False)
    """

    def __init__(
        self,
        budget_s: float,
        t_start: float,
        elapsed_before: float = 0.0,
        world_size: int = 1,
        device: torch.device | None = None,
        step_s_before: float = 0.0,
    ) -> None:
        fn = "BudgetClock"
        self.budget_s = float(check_number(fn, "budget_s", budget_s, low=0, low_open=True))
        self._t_start = float(check_number(fn, "t_start", t_start))
        self._before = float(check_number(fn, "elapsed_before", elapsed_before, low=0))
        self._world = int(check_number(fn, "world_size", world_size, low=1))
        self._device = device if device is not None else torch.device("cpu")
        self._t_last = time.perf_counter()
        self._step_before = float(check_number(fn, "step_s_before", step_s_before, low=0))
        self._step_s: float | None = None  # smoothed seconds per step
        self._steps_here = 0

    def elapsed(self) -> float:
        """Seconds used, this call and the earlier ones."""
        return self._before + time.perf_counter() - self._t_start

    def remaining(self) -> float:
        """Seconds left of the budget (``>= 0``)."""
        return max(0.0, self.budget_s - self.elapsed())

    def spent_before(self) -> bool:
        """Whether the earlier calls used the budget up: by their recorded seconds,
        another step at their step time would end past it (the loop's stopping rule).
        It reads only the checkpoint's numbers, so every process of a run agrees.

        Example:
            >>> t = time.perf_counter()
            >>> BudgetClock(10.0, t, elapsed_before=9.9, step_s_before=0.5).spent_before()
            True
            >>> BudgetClock(10.0, t, elapsed_before=9.0, step_s_before=0.5).spent_before()
            False
        """
        return self._would_pass(self._before, self._step_before)

    def _would_pass(self, elapsed_s: float, step_s: float) -> bool:
        """The stopping rule: another step of ``step_s`` seconds would end past the budget."""
        return elapsed_s + step_s > self.budget_s

    def step_seconds(self) -> float | None:
        """The recent time per step (``None`` before the first step of this call)."""
        return self._step_s

    def expected_steps(self, step: int) -> int:
        """The step count expected at the budget: ``step`` plus the steps the rest fits."""
        if not self._step_s:
            return step
        return step + int(self.remaining() / self._step_s)

    def after_step(self, step: int) -> tuple[float, bool]:
        """After step ``step``: ``(elapsed seconds, stop)``, with process 0's values under DDP.

        ``stop`` is true once another step would end past the budget.
        """
        now = time.perf_counter()
        dt = now - self._t_last
        self._t_last = now
        self._steps_here += 1
        # The first step of a call also pays for warm-up; later ones are smoothed.
        self._step_s = dt if self._step_s is None or self._steps_here == 2 else 0.9 * self._step_s + 0.1 * dt
        elapsed = self.elapsed()
        stop = self._would_pass(elapsed, self._step_s)
        if self._world > 1:
            flags = torch.tensor([elapsed, float(stop)], dtype=torch.float64, device=self._device)
            torch.distributed.broadcast(flags, src=0)
            elapsed, stop = float(flags[0]), bool(flags[1])
        return elapsed, stop
