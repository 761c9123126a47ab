"""Random-number state: one seed for a run, and the states a checkpoint stores."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from focal_detect._checks import check_number

__all__ = ["get_rng_state", "set_rng_state", "seed_everything"]


def get_rng_state() -> dict[str, Any]:
    """Torch (CPU and CUDA), NumPy and Python RNG states as tensors and plain values.

    The result is loadable with ``torch.load(..., weights_only=True)`` once saved.

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
    weights: :func:`~focal_detect.engine.train` seeds the run's RNG streams itself
    (``seed + rank``), but by then the model exists. ``focal-detect train`` and
    ``demo`` do this for you, and :func:`~focal_detect.engine.train` does it when given
    a model factory instead of a model.

    Example:
        >>> seed_everything(3); a = torch.rand(2); seed_everything(3)
        >>> torch.equal(a, torch.rand(2))
        True
    """
    seed = int(check_number("seed_everything", "seed", seed, low=0))
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
