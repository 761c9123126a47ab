r"""What a run reports: the device-side :class:`MetricWindow`, the metric files, the
progress bar and the loss-curve plot.

The window is the host-sync policy in code: :meth:`MetricWindow.add` only queues
device work; :meth:`MetricWindow.read` is the one host synchronisation, every
``log_every`` steps (see the package documentation).
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from focal_detect._checks import check_number
from focal_detect.engine.budget import BudgetClock

__all__ = ["MetricWindow", "plot_history"]


class MetricWindow:
    r"""Per-step metrics summed on their device and read as means every few steps.

    :meth:`add` stacks one step's scalars into one tensor and adds it to the running
    sums (float64 where the device has it) without reading anything back; :meth:`read`
    returns the means over the steps added since the last read, with one host
    synchronisation (and, under DDP, one all-reduce: the mean over processes), and
    starts a new window. Keys may differ between steps; a key missing at a step counts
    as 0 there.

    Args:
        world_size: Processes to average over (``torch.distributed`` must be
            initialised when > 1; every process then calls :meth:`read` together).

    Example:
        >>> w = MetricWindow()
        >>> w.add({"loss": torch.tensor(2.0)}); w.add({"loss": torch.tensor(3.0)})
        >>> len(w), w.read(), len(w)
        (2, {'loss': 2.5}, 0)
    """

    def __init__(self, world_size: int = 1) -> None:
        self.world_size = int(check_number("MetricWindow", "world_size", world_size, low=1))
        self._names: list[str] = []
        self._sums: Tensor | None = None
        self._steps = 0

    def __len__(self) -> int:
        """Steps added since the last read."""
        return self._steps

    def add(self, metrics: Mapping[str, Tensor]) -> None:
        """Add one step's scalar metrics (tensors of one element, on one device); no sync."""
        names = sorted(metrics)
        if names != self._names:
            self._rename(names)
        values = torch.stack([metrics[k].detach().reshape(()) for k in names])
        if self._sums is None:
            dtype = torch.float32 if values.device.type == "mps" else torch.float64
            self._sums = torch.zeros(len(self._names), dtype=dtype, device=values.device)
        if len(names) == len(self._names):
            self._sums.add_(values)
        else:  # some keys of this window are missing at this step
            index = torch.tensor([self._names.index(k) for k in names], device=self._sums.device)
            self._sums.index_add_(0, index, values.to(self._sums.dtype))
        self._steps += 1

    def _rename(self, names: list[str]) -> None:
        union = sorted(set(self._names) | set(names))
        if union != self._names and self._sums is not None:
            grown = self._sums.new_zeros(len(union))
            grown[[union.index(k) for k in self._names]] = self._sums
            self._sums = grown
        self._names = union

    def all_finite(self) -> bool:
        """Whether every sum is finite (on every process): one host sync."""
        if self._sums is None:
            return True
        ok = torch.isfinite(self._sums).all().to(self._sums.dtype)
        if self.world_size > 1:
            torch.distributed.all_reduce(ok, op=torch.distributed.ReduceOp.MIN)
        return bool(ok)

    def read(self) -> dict[str, float]:
        """The means since the last read (``{}`` if none), averaged over processes; resets."""
        if self._sums is None or self._steps == 0:
            return {}
        means = self._sums / self._steps
        if self.world_size > 1:
            torch.distributed.all_reduce(means)
            means /= self.world_size
        out = dict(zip(self._names, means.tolist()))  # the one host sync
        self._names, self._sums, self._steps = [], None, 0
        return out


class _MetricsFiles:
    """``metrics.csv`` and ``metrics.jsonl`` of a run: rewritten from the whole history
    at the first write of a call, then appended to row by row."""

    def __init__(self, folder: str) -> None:
        self.csv = os.path.join(folder, "metrics.csv")
        self.jsonl = os.path.join(folder, "metrics.jsonl")
        self._synced = False

    def write(self, history: Sequence[Mapping[str, float]]) -> None:
        """Append the last row if its columns match the file's header, else rewrite both
        files from the whole history (atomically)."""
        if not history:
            return
        last = history[-1]
        if self._synced and os.path.isfile(self.csv):
            with open(self.csv, encoding="utf-8") as f:
                header = f.readline().strip().split(",")
            if header == list(last):
                with open(self.csv, "a", newline="", encoding="utf-8") as f:
                    csv.DictWriter(f, fieldnames=header).writerow(last)
                with open(self.jsonl, "a", encoding="utf-8") as f:
                    f.write(json.dumps(last) + "\n")
                return
        columns: list[str] = []
        for row in history:
            columns += [k for k in row if k not in columns]
        for path in (self.csv, self.jsonl):
            tmp = path + ".tmp"
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                if path == self.csv:
                    w = csv.DictWriter(f, fieldnames=columns)
                    w.writeheader()
                    w.writerows(history)
                else:
                    for row in history:
                        f.write(json.dumps(row) + "\n")
            os.replace(tmp, path)
        self._synced = True


class _Progress:
    """A tqdm bar of the steps with the last logged loss, the lr and a smoothed image rate."""

    def __init__(
        self, total: int, initial: int, images_per_step: int, clock: BudgetClock | None = None
    ) -> None:
        from tqdm.auto import tqdm

        self._clock = clock
        self._bar = tqdm(
            total=None if clock is not None else total, initial=initial, desc="train", dynamic_ncols=True
        )
        self._images = images_per_step
        self._t = time.perf_counter()
        self._rate: float | None = None
        self._loss = float("nan")

    def step(self, lr: float, row: Mapping[str, float] | None) -> None:
        now = time.perf_counter()
        rate = self._images / max(now - self._t, 1e-9)
        self._rate = rate if self._rate is None else 0.9 * self._rate + 0.1 * rate
        self._t = now
        if row is not None:
            self._loss = row.get("loss", self._loss)
        shown = {"lr": f"{lr:.2e}", "img_s": f"{self._rate:.1f}"}
        if self._clock is not None:  # the bar's total is the step count expected at the budget
            self._bar.total = self._clock.expected_steps(self._bar.n + 1)
            shown["left"] = f"{self._clock.remaining():.0f}s"
        self._bar.update(1)
        if not math.isnan(self._loss):  # no loss is shown before the first logged window
            shown = {"loss": f"{self._loss:.4f}", **shown}
        self._bar.set_postfix(shown, refresh=False)

    def close(self) -> None:
        self._bar.close()


class _RunLog:
    """The metric window, history, files, progress bar and callback of one :func:`train` call.

    :meth:`record` (every step) queues device work only; :meth:`flush` (every
    ``log_every`` steps and at the end) reads the window once and appends a row
    ``{"step", "epoch", "lr", <means>, "images_per_s", "time_s"}`` to the history (with a
    time budget also ``"time_left_s"`` and ``"expected_steps"``).
    """

    def __init__(
        self,
        history: list[dict[str, float]],
        *,
        folder: str,
        rank: int,
        world_size: int,
        global_batch: int,
        steps_per_epoch: int,
        check_window: bool,
        t_start: float,
        callback: Callable[[int, dict[str, float]], None] | None = None,
        progress: tuple[int, int] | None = None,
        clock: BudgetClock | None = None,
    ) -> None:
        self.history = history
        self.window = MetricWindow(world_size)
        self._files = _MetricsFiles(folder) if rank == 0 else None
        self._global_batch, self._steps_per_epoch = global_batch, steps_per_epoch
        self._check_window = check_window
        self._t_start = self._t_window = t_start
        self._callback = callback
        self._clock = clock
        self._progress = (
            None if progress is None else _Progress(*progress, images_per_step=global_batch, clock=clock)
        )
        self._lr = float("nan")

    def record(self, metrics: Mapping[str, Tensor], lr: float) -> None:
        """Add one step's metrics (device tensors) and the lr it ran at; no host sync."""
        self.window.add(metrics)
        self._lr = lr

    def tick(self, row: Mapping[str, float] | None) -> None:
        """Advance the progress bar by one step (``row``: the row logged at it, if any)."""
        if self._progress is not None:
            self._progress.step(self._lr, row)

    def flush(self, step: int) -> dict[str, float]:
        """Read the window (one host sync), log and return its row."""
        n = len(self.window)
        means = self.window.read()
        if self._check_window and not all(math.isfinite(v) for v in means.values()):
            raise _nonfinite_window(step - n + 1, step, means)
        now = time.perf_counter()
        row: dict[str, float] = {"step": step, "epoch": step / self._steps_per_epoch, "lr": self._lr}
        row.update(means)
        row["images_per_s"] = n * self._global_batch / max(now - self._t_window, 1e-9)
        row["time_s"] = now - self._t_start
        if self._clock is not None:
            row["time_left_s"] = self._clock.remaining()
            row["expected_steps"] = float(self._clock.expected_steps(step))
        self.history.append(row)
        if self._files is not None:
            self._files.write(self.history)
        if self._callback is not None:
            self._callback(step, row)
        self._t_window = now
        return row

    def check_finite(self, step: int) -> None:
        """Before a checkpoint: raise if the unread window holds a non-finite value."""
        if self._check_window and len(self.window) and not self.window.all_finite():
            raise _nonfinite_window(step - len(self.window) + 1, step, {})

    def close(self) -> None:
        if self._progress is not None:
            self._progress.close()


def _nonfinite_window(first: int, last: int, means: Mapping[str, float]) -> FloatingPointError:
    shown = f" (window means {dict(means)})" if means else ""
    return FloatingPointError(
        f"train: loss (or gradient norm) is not finite in steps {first}-{last}{shown}; "
        "nonfinite_check='step' names the step; lower the lr, enable clip_grad_norm, or resume "
        "from the last checkpoint"
    )


# ------------------------------------------------------------------------------ plots


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
