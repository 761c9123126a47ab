"""Peak memory of :func:`focal_detect.matching.assign_anchors` on 5000 boxes, ~120k anchors.

The anchors of an 800 x 800 input (P3-P7, A = 9: 120,087 anchors) and 5000 random boxes
of 8-128 px in one image: the dense IoU matrix alone would take 2.4 GB in float32. The
working set is planned to stay under ``max_memory_bytes`` (512 MiB, the default) on
both paths, the dense one (a plain tensor) and the windowed one (the generator's ``Anchors``).

Each run is a fresh process (``python -c``): one thread, a warm-up call on 50 boxes
(paging in code is not allocation), then the peak resident set (``VmHWM``, which
starts afresh at ``exec``) before and after the full call; the growth is printed.
Memory is not time: a loaded machine changes the figures little, but note ``uptime``.

Run: ``python benchmarks/bench_assignment_memory.py [--runs 10] [--paths dense windowed]``.
Exits 1 if any run of any path exceeds the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

BUDGET = 512 * 2**20

SCRIPT = r"""
import json, sys, torch
from focal_detect.anchors import AnchorGenerator
from focal_detect.matching import assign_anchors
torch.set_num_threads(1)
path, budget = sys.argv[1], int(sys.argv[2])
gen = AnchorGenerator()
sizes = [(100, 100), (50, 50), (25, 25), (13, 13), (7, 7)]
anchors = gen(sizes) if path == "windowed" else gen(sizes).boxes  # Anchors: windowed path
g = torch.Generator().manual_seed(0)
xy = torch.rand(5000, 2, generator=g) * 760
wh = torch.rand(5000, 2, generator=g) * 120 + 8
boxes = torch.cat((xy, xy + wh), 1)
labels = torch.zeros(5000, dtype=torch.int64)

def peak():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))

assign_anchors(anchors, [boxes[:50]], [labels[:50]], max_memory_bytes=2**20)
before = peak()
out = assign_anchors(anchors, [boxes], [labels], max_memory_bytes=budget)
after = peak()
print(json.dumps({"n": out.labels.shape[1], "extra": after - before, "fg": int(out.foreground.sum())}))
"""


def run_once(path: str, budget: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT, path, str(budget)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=1800,
    )
    if res.returncode:
        raise SystemExit(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--paths", nargs="+", default=["dense", "windowed"], choices=["dense", "windowed"])
    ap.add_argument("--budget-mib", type=int, default=BUDGET // 2**20)
    args = ap.parse_args()
    budget = args.budget_mib * 2**20
    try:
        with open("/proc/loadavg") as f:
            print("load average:", " ".join(f.read().split()[:3]))
    except OSError:
        pass
    ok = True
    for path in args.paths:
        peaks = []
        for _ in range(args.runs):
            data = run_once(path, budget)
            peaks.append(data["extra"] / 2**20)
            print(f"  {path:8s} run {len(peaks):2d}: +{peaks[-1]:7.1f} MiB (fg {data['fg']})", flush=True)
        worst = max(peaks)
        ok &= worst <= args.budget_mib
        print(
            f"{path:8s} peak RSS growth, {args.runs} fresh processes (MiB): "
            + " ".join(f"{p:.0f}" for p in peaks)
            + f"; max {worst:.0f} of the {args.budget_mib} MiB budget -> {'OK' if worst <= args.budget_mib else 'OVER'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
