"""focal_detect.engine: one seed governs a run; checkpoints are verified; resume semantics.

Every way a checkpoint can be bad must end in one CheckpointError naming the file and
the problem (never a traceback from deep inside torch, never a silent load).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest
import torch
from torch import nn

from focal_detect.data import SyntheticShapes
from focal_detect.engine import (
    CheckpointError,
    TrainConfig,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
    train,
)


def _noise(n: int) -> bytes:
    """Deterministic garbage (the seed is fixed: the test gives the same file every run)."""
    return random.Random(n).randbytes(n)


class Toy(nn.Module):
    """A stand-in detector with random initial weights and a 64 KiB buffer (so a
    checkpoint has a middle to corrupt)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(3))
        self.register_buffer("table", torch.arange(16384, dtype=torch.float32))

    def forward(self, images, targets):
        x = torch.stack([im.mean(dim=(1, 2)) for im in images])
        loss = ((x - self.w) ** 2).sum() * (1 + sum(len(t["boxes"]) for t in targets))
        return {"classification": loss}


DATA = [
    (torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(i)), {"boxes": torch.zeros(i % 2, 4)})
    for i in range(8)
]


def _cfg(out, **kw) -> TrainConfig:
    base = dict(
        iterations=4,
        batch_size=2,
        lr=0.05,
        warmup_iters=0,
        progress=False,
        output_dir=str(out),
        log_every=1,
        checkpoint_every=2,
        seed=1,
    )
    base.update(kw)
    return TrainConfig(**base)


# ----------------------------------------------------------------------------- one seed


def _tiny_factory():
    from focal_detect.models import RetinaNet, RetinaNetConfig

    return RetinaNet(
        RetinaNetConfig.preset("tiny", 5, backbone={"frozen_bn": False}, transform={"size_divisible": 32})
    )


def test_one_seed_fixes_initial_weights_data_order_and_augmentation(tmp_path) -> None:
    # 0.1.0: the model was built before anything was seeded, so the same seed gave
    # different runs. A factory is built after seed_everything(config.seed).
    data = SyntheticShapes(num_images=4, image_size=32, seed=0, max_objects=2)
    torch.manual_seed(123)  # whatever state the caller left: the run must not depend on it
    a = train(_tiny_factory, data, _cfg(tmp_path / "a", iterations=2, seed=7, checkpoint_every=0))
    torch.manual_seed(456)
    b = train(_tiny_factory, data, _cfg(tmp_path / "b", iterations=2, seed=7, checkpoint_every=0))
    c = train(_tiny_factory, data, _cfg(tmp_path / "c", iterations=2, seed=8, checkpoint_every=0))
    sa, sb, sc = (r.model.state_dict() for r in (a, b, c))
    init = (seed_everything(7), _tiny_factory())[1].state_dict()
    assert any(not torch.equal(sa[k], init[k]) for k in init)  # training moved the weights
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # bit-identical, buffers included
    assert [r["loss"] for r in a.history] == [r["loss"] for r in b.history]
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    # A model built by the caller after seed_everything(seed) is the same run.
    seed_everything(7)
    own = _tiny_factory()
    torch.manual_seed(0)
    d = train(own, data, _cfg(tmp_path / "d", iterations=2, seed=7, checkpoint_every=0))
    assert d.model is own and all(torch.equal(own.state_dict()[k], sa[k]) for k in sa)


def test_seed_everything_seeds_torch_numpy_and_python() -> None:
    import numpy as np

    seed_everything(5)
    first = (torch.rand(2), np.random.rand(2), random.random())
    seed_everything(5)
    again = (torch.rand(2), np.random.rand(2), random.random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]
    seed_everything(6)
    assert not torch.equal(torch.rand(2), first[0])
    with pytest.raises(ValueError, match="seed_everything: seed must be in"):
        seed_everything(-1)


# ------------------------------------------------------------------- integrity on load


@pytest.fixture()
def run(tmp_path):
    """A 6-step run interrupted after 4 steps (checkpoint at step 4), and its weights."""
    out = tmp_path / "run"
    seed_everything(0)
    model = Toy()
    train(model, DATA, _cfg(out, iterations=6), stop_after=4)
    return out, {k: v.clone() for k, v in model.state_dict().items()}


def _resume(out) -> Toy:
    seed_everything(99)
    model = Toy()
    train(model, DATA, _cfg(out, iterations=6, resume=True))
    return model


def _rewrite(path, edit) -> None:
    ckpt = load_checkpoint(path)
    edit(ckpt)
    save_checkpoint(ckpt, path)


def _overwrite_middle(path) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 4096] = _noise(4096)
    path.write_bytes(bytes(data))


CORRUPTIONS = {
    # kind: (how, message fragment)
    "truncated": (
        lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
        "not a readable torch file",
    ),
    "zero bytes": (lambda p: p.write_bytes(b""), r"is empty \(0 bytes\)"),
    "random bytes": (lambda p: p.write_bytes(_noise(70_000)), "not a readable torch file"),
    "4 KiB overwritten mid-file": (_overwrite_middle, "corrupt: its content does not match its sha256"),
    "bare tensor": (
        lambda p: torch.save(torch.ones(3), p),
        "must hold a dict of named entries, got a Tensor",
    ),
    "missing rng key": (lambda p: _rewrite(p, lambda c: c.pop("rng")), r"lacks the key\(s\) \['rng'\]"),
    "wrong keys": (
        lambda p: save_checkpoint({"format": "focal-detect-checkpoint", "weights": torch.ones(1)}, p),
        r"lacks the key\(s\) \['step', 'model'",
    ),
    "not a training checkpoint": (
        lambda p: save_checkpoint({"model": {}}, p),
        "not a focal-detect training checkpoint",
    ),
    "wrong shapes": (
        lambda p: _rewrite(p, lambda c: c["model"].__setitem__("w", torch.zeros(5))),
        r"bad 'model' entry .*'w': \(5,\) for the model's \(3,\)",
    ),
    "missing weight": (
        lambda p: _rewrite(p, lambda c: c["model"].pop("table")),
        r"bad 'model' entry .*missing keys \['table'\]",
    ),
    "bad rng state": (
        lambda p: _rewrite(p, lambda c: c.__setitem__("rng", {"torch": torch.zeros(3)})),
        "bad 'rng' entry",
    ),
    "bad optimizer state": (
        lambda p: _rewrite(p, lambda c: c.__setitem__("optimizer", {"state": {}})),
        "bad 'optimizer' entry",
    ),
    "newer format": (
        lambda p: torch.save({**load_checkpoint(p), "version": 3}, p),
        "format version 3; this focal-detect",
    ),
    "digest removed": (lambda p: torch.save(load_checkpoint(p), p), "lacks its sha256 digest"),
    "a directory": (lambda p: (p.unlink(), p.mkdir()), "is a directory, not a file"),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_every_bad_checkpoint_raises_one_clear_error_naming_the_file(run, kind) -> None:
    out, _ = run
    path = out / "checkpoint_last.pt"
    how, message = CORRUPTIONS[kind]
    how(path)
    seed_everything(99)
    model = Toy()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=message) as info:
        train(model, DATA, _cfg(out, iterations=6, resume=True))
    text = str(info.value)
    assert str(path) in text and "\n" not in text, text
    assert "weights_only" not in text  # torch's advice to load unsafely is not passed on
    # nothing was loaded into the model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_single_flipped_byte_anywhere_is_caught_or_changes_nothing(run) -> None:
    # Not every byte of a zip file is content (padding, names of records): a flip
    # there may load, but then it must load the exact original content.
    out, _ = run
    path = out / "checkpoint_last.pt"
    original = path.read_bytes()
    reference = load_checkpoint(path)
    caught = 0
    for pos in range(0, len(original), len(original) // 40):
        data = bytearray(original)
        data[pos] ^= 0x5A
        path.write_bytes(bytes(data))
        try:
            got = load_checkpoint(path)
        except CheckpointError:
            caught += 1
            continue
        assert torch.equal(got["model"]["table"], reference["model"]["table"]), pos
        assert torch.equal(got["model"]["w"], reference["model"]["w"]), pos
        assert (
            got["step"] == reference["step"]
            and got["rng"]["python"]["gauss"] == reference["rng"]["python"]["gauss"]
        )
    assert caught >= 30  # almost every byte is content (the buffer is ~90 % of the file)


def test_a_good_checkpoint_still_resumes_exactly(run, tmp_path) -> None:
    out, _ = run
    resumed = _resume(out)
    seed_everything(0)
    full = Toy()
    train(full, DATA, _cfg(tmp_path / "full", iterations=6))
    assert all(torch.equal(full.state_dict()[k], v) for k, v in resumed.state_dict().items())
    assert load_checkpoint(out / "checkpoint_last.pt")["step"] == 6


def test_checkpoints_written_by_0_1_0_load_with_a_warning(run, tmp_path) -> None:
    # 0.1.0 wrote the same dict with "version": 1 and no digest.
    out, _ = run
    path = out / "checkpoint_last.pt"
    legacy = load_checkpoint(path)
    legacy["version"] = 1
    torch.save(legacy, path)
    with pytest.warns(UserWarning, match="no integrity digest .* cannot be verified"):
        resumed = _resume(out)
    seed_everything(0)
    full = Toy()
    train(full, DATA, _cfg(tmp_path / "full", iterations=6))
    assert all(torch.equal(full.state_dict()[k], v) for k, v in resumed.state_dict().items())


def test_saved_file_is_a_plain_dict_with_version_and_digest(tmp_path) -> None:
    p = tmp_path / "c.pt"
    save_checkpoint({"w": torch.arange(3.0), "step": 2}, p)
    raw = torch.load(p, weights_only=True)
    assert raw["version"] == 2 and len(raw["sha256"]) == 64
    # the digest covers values, not just tensors: a changed step is caught
    raw["step"] = 3
    torch.save(raw, p)
    with pytest.raises(CheckpointError, match="does not match its sha256"):
        load_checkpoint(p)
    # saving a loaded checkpoint again replaces version and digest
    save_checkpoint({**raw, "sha256": "0" * 64}, p)
    assert load_checkpoint(p)["step"] == 3
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")


# --------------------------------------------------------------------- resume semantics


def test_resume_with_nothing_to_resume_from_is_an_error_unless_auto(tmp_path) -> None:
    # 0.1.0 silently started a fresh run (e.g. after a typo in output_dir).
    with pytest.raises(CheckpointError, match="nothing to resume from: no .*wrong output_dir"):
        train(Toy(), DATA, _cfg(tmp_path / "typo", resume=True))
    assert not (tmp_path / "typo" / "checkpoint_last.pt").exists()
    seed_everything(0)
    fresh = Toy()
    res = train(fresh, DATA, _cfg(tmp_path / "auto", resume="auto", iterations=2))
    assert res.step == 2 and [r["step"] for r in res.history] == [1, 2]
    steps_run: list[int] = []
    res = train(
        Toy(),
        DATA,
        _cfg(tmp_path / "auto", resume="auto", iterations=3),
        callback=lambda step, row: steps_run.append(step),
    )
    assert steps_run == [3] and [r["step"] for r in res.history] == [1, 2, 3]  # continued at step 2
    with pytest.raises(ValueError, match="resume must be False, True or 'auto', got 'yes'"):
        TrainConfig(resume="yes")


_KILLED_WRITER = """
import os, sys
folder = sys.argv[1]
open(os.path.join(folder, f".checkpoint_last.pt.{os.getpid()}.tmp"), "wb").write(b"partial")
"""


def test_stale_temporaries_of_killed_writers_are_removed(tmp_path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(out)], check=True)  # its pid is gone now
    live = out / f".checkpoint_last.pt.{os.getppid()}.tmp"  # a live process: not ours to remove
    live.write_bytes(b"x")
    other = out / ".other.pt.1.tmp"
    other.write_bytes(b"x")
    stale = [f for f in os.listdir(out) if f.startswith(".checkpoint_last.pt.") and f != live.name]
    assert len(stale) == 1
    train(Toy(), DATA, _cfg(out, iterations=1))
    assert sorted(os.listdir(out)) == sorted(
        [live.name, other.name, "checkpoint_last.pt", "loss_curve.png", "metrics.csv", "metrics.jsonl"]
    )
