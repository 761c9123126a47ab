r"""Thread calibration of the command-line tools (``demo``, ``train --time-budget``).

The library never changes the process's thread count; the CLI may, and does so here
only when the user gave no ``--threads``: it times a few training steps on a copy of
the model with one thread and with torch's default count and keeps the faster. On a
machine where another process holds a core, several OpenMP threads that wait for each
other can be several times slower than one (see the performance page).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["StepTiming", "choose_threads"]


class StepTiming:
    """Seconds per training step measured for each thread count, and the choice."""

    def __init__(self, timed: dict[int, float], threads: int) -> None:
        self.timed = timed
        self.threads = threads

    @property
    def step_s(self) -> float:
        """Seconds per step with the chosen thread count."""
        return self.timed[self.threads]

    def describe(self) -> str:
        """``"1 thread(s) 0.305 s, 2 thread(s) 0.210 s per step -> 2 thread(s)"``."""
        per = ", ".join(
            f"{k} thread(s) {v:.3f} s" if math.isfinite(v) else f"{k} thread(s) too slow"
            for k, v in self.timed.items()
        )
        return f"{per} per step -> {self.threads} thread(s)"


def choose_threads(
    model: nn.Module,
    batch: tuple[Sequence[Tensor], Sequence[dict[str, Any]]],
    *,
    amp: bool,
    choose: bool = True,
) -> StepTiming:
    """Time training steps of a copy of ``model`` on ``batch``; set the faster thread count.

    With ``choose`` (no ``--threads`` given) one thread is timed against torch's default
    count and :func:`torch.set_num_threads` keeps the faster (a hopelessly slow default
    is given up after one step); without it only the current count is timed.
    """
    images, targets = list(batch[0]), list(batch[1])
    probe = copy.deepcopy(model).train()
    opt = torch.optim.AdamW(probe.parameters(), lr=0.0)

    def one_step() -> float:
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
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
    if choose and default > 1:
        timed = {1: step_time(1)}
        timed[default] = step_time(default, give_up=timed[1])
    else:
        timed = {default: step_time(default)}
    threads = min(timed, key=timed.__getitem__)
    torch.set_num_threads(threads)
    return StepTiming(timed, threads)
