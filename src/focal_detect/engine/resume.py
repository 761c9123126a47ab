"""The training checkpoint of a run: :class:`Checkpointer` writes it and restores a run from it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from focal_detect._checks import check_number
from focal_detect.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    _first_line,
    _remove_stale_temporaries,
    load_checkpoint,
    save_checkpoint,
)
from focal_detect.engine.rng import get_rng_state, set_rng_state

__all__ = ["Checkpointer", "Stateful"]

# Keys a training checkpoint must hold to be resumed.
_TRAIN_KEYS = ("step", "model", "optimizer", "scheduler", "rng", "data", "history")


@runtime_checkable
class Stateful(Protocol):
    """What a checkpoint saves and restores besides the model: an optimizer or scheduler.

    Example:
        >>> isinstance(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), Stateful)
        True
    """

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...


class Checkpointer:
    r"""Writes a run's training checkpoint and restores a run from it.

    One file is kept: each :meth:`save` replaces ``path`` atomically (through
    :func:`~focal_detect.engine.save_checkpoint`), so the file always holds the
    latest complete state. It stores the step, the model, optimizer and scheduler
    states, the metric history, the RNG states (of every process under DDP), the data
    facts ``seed``, ``global_batch``, ``steps_per_epoch`` (a resumed run must match
    them to continue exactly) and ``extra`` (e.g. the configs and class names).

    Args:
        path: The checkpoint file (:func:`~focal_detect.engine.train` uses
            ``output_dir/checkpoint_last.pt``).
        seed: The run's seed.
        global_batch: Images per step over all processes.
        steps_per_epoch: Steps of one pass over the data.
        every: :meth:`due` every this many steps (and at the last step); ``0``: only
            at the last step.
        rank: This process's rank; only rank 0 writes.
        world_size: Processes of the run; :meth:`save` is then a collective (every
            process must call it: it gathers the RNG states).
        extra: More entries for the file, written after the history.

    Example:
        >>> import tempfile, os
        >>> net = nn.Linear(2, 1)
        >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
        >>> sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0)
        >>> path = os.path.join(tempfile.mkdtemp(), "checkpoint_last.pt")
        >>> ck = Checkpointer(path, seed=0, global_batch=2, steps_per_epoch=4, every=2)
        >>> [t for t in range(1, 6) if ck.due(t, stop=5)]
        [2, 4, 5]
        >>> ck.save(5, net, opt, sched, [{"step": 5, "loss": 0.5}]) == path
        True
        >>> ck.restore(nn.Linear(2, 1), opt, sched)
        (5, [{'step': 5, 'loss': 0.5}])
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        seed: int,
        global_batch: int,
        steps_per_epoch: int,
        every: int = 0,
        rank: int = 0,
        world_size: int = 1,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        fn = "Checkpointer"
        #: The checkpoint file.
        self.path = os.fspath(path)
        self.data = {
            "seed": int(check_number(fn, "seed", seed, low=0)),
            "global_batch": int(check_number(fn, "global_batch", global_batch, low=1)),
            "steps_per_epoch": int(check_number(fn, "steps_per_epoch", steps_per_epoch, low=1)),
        }
        self.every = int(check_number(fn, "every", every, low=0))
        self.rank = int(check_number(fn, "rank", rank, low=0))
        self.world_size = int(check_number(fn, "world_size", world_size, low=1))
        self.extra = dict(extra or {})
        #: Path of the last file this process wrote (``None``: none yet, or not rank 0).
        self.last: str | None = None

    def due(self, step: int, stop: int) -> bool:
        """Whether step ``step`` (counted from 1) of a run ending at ``stop`` saves."""
        return step == stop or (self.every > 0 and step % self.every == 0)

    def exists(self) -> bool:
        """Whether there is something at ``path`` (a valid file or not)."""
        return os.path.lexists(self.path)

    def remove_stale_temporaries(self) -> list[str]:
        """Remove the temporaries of ``path`` left by killed writers; their names."""
        return _remove_stale_temporaries(self.path)

    def save(
        self,
        step: int,
        model: nn.Module,
        optimizer: Stateful,
        scheduler: Stateful,
        history: list[dict[str, float]],
    ) -> str | None:
        """Write the state after ``step`` steps; the path on rank 0, else ``None``."""
        rng = get_rng_state()
        gathered: list[Any] = [None] * self.world_size
        if self.world_size > 1:
            torch.distributed.all_gather_object(gathered, rng)
        if self.rank != 0:
            return None
        state = {
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng,
            "data": dict(self.data),
            "history": history,
            **self.extra,
        }
        if self.world_size > 1:
            state["rng_per_rank"] = gathered
        save_checkpoint(state, self.path)
        self.last = self.path
        return self.path

    def restore(
        self, model: nn.Module, optimizer: Stateful, scheduler: Stateful
    ) -> tuple[int, list[dict[str, float]]]:
        """Load ``path`` into the model, optimizer, scheduler and RNGs; ``(step, history)``.

        Everything is checked before anything changes: a file that does not fit this
        run raises :class:`~focal_detect.engine.CheckpointError` and leaves the model,
        optimizer and RNG states as they were.
        """
        ckpt = load_checkpoint(self.path, map_location="cpu")
        self._check_run(ckpt)
        part = "model"
        try:
            _check_model_fits(ckpt["model"], model)
            part = "rng"
            rng = ckpt["rng"] if self.world_size == 1 else ckpt["rng_per_rank"][self.rank]
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
                f"train: training checkpoint {self.path!r} does not fit this run: bad '{part}' entry "
                f"({_first_line(e)})"
            ) from None
        return step, history

    def _check_run(self, ckpt: Mapping[str, Any]) -> None:
        """The file is a training checkpoint of a run this one can continue exactly."""
        fn, path = "train", self.path
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            got = ckpt.get("format", "no 'format' key")
            raise CheckpointError(f"{fn}: {path!r} is not a focal-detect training checkpoint (format: {got})")
        missing = [k for k in _TRAIN_KEYS if k not in ckpt] + (
            ["rng_per_rank"] if self.world_size > 1 and "rng_per_rank" not in ckpt else []
        )
        if missing:
            raise CheckpointError(f"{fn}: training checkpoint {path!r} lacks the key(s) {missing}")
        data = ckpt["data"]
        if not isinstance(data, dict) or not set(self.data) <= set(data):
            raise CheckpointError(f"{fn}: training checkpoint {path!r} has a malformed 'data' entry")
        if data["global_batch"] != self.data["global_batch"] or data["seed"] != self.data["seed"]:
            raise CheckpointError(
                f"{fn}: cannot resume {path} exactly: it used global batch "
                f"{data['global_batch']} and seed {data['seed']}, this run "
                f"{self.data['global_batch']} and {self.data['seed']}"
            )
        if data["steps_per_epoch"] != self.data["steps_per_epoch"]:
            raise CheckpointError(
                f"{fn}: cannot resume {path} exactly: the dataset changed size "
                f"({data['steps_per_epoch']} steps per epoch then, {self.data['steps_per_epoch']} now)"
            )


def _check_model_fits(saved: object, model: nn.Module) -> None:
    """Raise (TypeError, ValueError) unless ``saved`` is a state dict of ``model``'s keys and shapes."""
    if not isinstance(saved, Mapping):
        raise TypeError(f"a {type(saved).__name__}, not a state dict")
    own = model.state_dict()
    wrong = [
        k for k, v in saved.items() if k in own and (not isinstance(v, Tensor) or v.shape != own[k].shape)
    ]
    if wrong:
        k = wrong[0]
        got = tuple(saved[k].shape) if isinstance(saved[k], Tensor) else type(saved[k]).__name__
        raise ValueError(
            f"{len(wrong)} tensor(s) of the wrong shape, e.g. {k!r}: {got} for the model's {tuple(own[k].shape)}"
        )
    keys = set(saved)
    if keys != set(own):
        raise ValueError(
            f"missing keys {sorted(set(own) - keys)[:3]}, unexpected keys {sorted(keys - set(own))[:3]}"
        )
