"""Fault injection for the training engine: corrupted checkpoints and SIGKILLs.

1. Corruptions: a real training checkpoint is damaged in each way (truncated, zero
   bytes, random bytes, 4 KiB overwritten mid-file, bare tensor, missing or wrong keys,
   wrong shapes, a directory, ...) and ``train(..., resume=True)`` must raise one
   ``CheckpointError`` naming the file (printed per kind).
2. Kills: ``--chains`` chains of a 60-step run (an 8 MB parameter, a checkpoint every
   step, ``resume="auto"``) are SIGKILLed ``--kills`` times at random moments, then run
   to the end; the final weights must equal an uninterrupted run's bit for bit.

Run: ``PYTHONPATH=src python benchmarks/fault_injection.py [--chains 3] [--kills 4]``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from focal_detect.engine import (
    CheckpointError,
    TrainConfig,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
    train,
)


class Net(nn.Module):
    def __init__(self, big: int = 2_000_000) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(3))
        self.big = nn.Parameter(torch.randn(big) * 0.01)

    def forward(self, images, targets):
        x = torch.stack([im.mean(dim=(1, 2)) for im in images])
        n = sum(len(t["boxes"]) for t in targets)
        return {"classification": ((x - self.w) ** 2).sum() + (self.big**2).mean() * (1 + n)}


DATA = [
    (torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(i)), {"boxes": torch.zeros(i % 3, 4)})
    for i in range(10)
]


def config(out: str, **kw) -> TrainConfig:
    base = dict(
        iterations=60,
        batch_size=2,
        lr=0.05,
        warmup_iters=5,
        progress=False,
        output_dir=out,
        log_every=1,
        checkpoint_every=1,
        seed=3,
        resume="auto",
    )
    base.update(kw)
    return TrainConfig(**base)


def child(out: str) -> None:
    seed_everything(3)
    model = Net()
    train(model, DATA, config(out))
    torch.save(model.state_dict(), os.path.join(out, "final_weights.pt"))


def _rewrite(p: str, edit) -> None:
    c = load_checkpoint(p)
    edit(c)
    save_checkpoint(c, p)


def _overwrite_middle(p: str) -> None:
    data = bytearray(Path(p).read_bytes())
    mid = len(data) // 2
    data[mid : mid + 4096] = os.urandom(4096)
    Path(p).write_bytes(bytes(data))


CORRUPTIONS = {
    "truncated to half": lambda p: os.truncate(p, os.path.getsize(p) // 2),
    "zero bytes": lambda p: os.truncate(p, 0),
    "random bytes": lambda p: Path(p).write_bytes(os.urandom(70_000)),
    "4 KiB overwritten mid-file": _overwrite_middle,
    "bare tensor": lambda p: torch.save(torch.ones(3), p),
    "missing rng key": lambda p: _rewrite(p, lambda c: c.pop("rng")),
    "wrong shape": lambda p: _rewrite(p, lambda c: c["model"].__setitem__("w", torch.zeros(5))),
    "bad optimizer state": lambda p: _rewrite(p, lambda c: c.__setitem__("optimizer", {"state": {}})),
    "a directory": lambda p: (os.remove(p), os.mkdir(p)),
}


def corruptions() -> bool:
    ok = True
    for kind, how in CORRUPTIONS.items():
        out = tempfile.mkdtemp()
        seed_everything(0)
        train(Net(4096), DATA, config(out, iterations=6, checkpoint_every=2), stop_after=4)
        how(os.path.join(out, "checkpoint_last.pt"))
        try:
            train(Net(4096), DATA, config(out, iterations=6, resume=True))
            print(f"{kind:28s} | LOADED (bad)")
            ok = False
        except CheckpointError as e:
            print(f"{kind:28s} | {e}")
        shutil.rmtree(out, ignore_errors=True)
    return ok


def kills(chains: int, n_kills: int) -> bool:
    py, env = sys.executable, {**os.environ, "OMP_NUM_THREADS": "1"}
    root = tempfile.mkdtemp()
    ref = os.path.join(root, "ref")
    subprocess.run([py, __file__, "--child", ref], check=True, env=env)
    expected = torch.load(os.path.join(ref, "final_weights.pt"), weights_only=True)
    rng, ok = random.Random(0), True
    for chain in range(chains):
        d = os.path.join(root, f"chain{chain}")
        done = 0
        for _ in range(n_kills):
            p = subprocess.Popen([py, __file__, "--child", d], env=env)
            time.sleep(rng.uniform(2.5, 5.0))
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()
                done += 1
        rc = subprocess.run([py, __file__, "--child", d], env=env, check=False).returncode
        got = torch.load(os.path.join(d, "final_weights.pt"), weights_only=True)
        same = all(torch.equal(expected[k], got[k]) for k in expected)
        left = [f for f in os.listdir(d) if f.endswith(".tmp")]
        print(
            f"chain {chain}: {done} SIGKILLs, resumed rc={rc}, temp files left {left}, bit-identical: {same}"
        )
        ok &= same and rc == 0 and not left
    shutil.rmtree(root, ignore_errors=True)
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chains", type=int, default=3)
    ap.add_argument("--kills", type=int, default=4)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        os.makedirs(args.child, exist_ok=True)
        child(args.child)
        return 0
    ok = corruptions()
    ok &= kills(args.chains, args.kills)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
