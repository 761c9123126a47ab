"""Checkpoint files: an atomic write with a format version and a SHA-256 digest, and a
verified load where every way a file can be bad is one :class:`CheckpointError`."""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "LAST_CHECKPOINT",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
]

#: Value of the ``"format"`` key of a training checkpoint.
CHECKPOINT_FORMAT = "focal-detect-checkpoint"
#: Version of the file layout written by :func:`save_checkpoint`: 2 adds the ``sha256``
#: digest (0.1.0 wrote version 1, or no version in model files, and no digest).
CHECKPOINT_VERSION = 2
#: File name of the training checkpoint in ``output_dir``.
LAST_CHECKPOINT = "checkpoint_last.pt"
# Keys save_checkpoint adds to (or replaces in) every file.
_RESERVED_KEYS = ("version", "sha256")


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
