r"""The "your data, your budget" goal of issue 16, as a user runs it.

Runs, as subprocesses, exactly the two commands a user types::

    focal-detect train --train-images … --train-annotations … --val-images … \
        --val-annotations … --preset auto --time-budget 600 --output-dir OUT/run --no-progress
    focal-detect evaluate --checkpoint OUT/run/model_final.pt --images … --annotations … \
        --output OUT/eval.json

on a COCO-format set (default: the independent clutter set of ``clutter_set.py``,
generated with ``--seed 0`` if missing; the ``auto`` recipe was tuned on ``--seed 1``,
never on this split nor on the demo's shapes), and prints the AP, the per-class AP, the
anchor coverage line, the steps trained, the wall time of each command and of the
whole, and the load average before and after.

``--load`` starts a process that spins on one core for the whole run (the loaded
case of the issue: "another process holds one core"), and stops it afterwards.

Usage (from the repository root, with the project installed)::

    python benchmarks/bench_auto_budget.py --out /tmp/auto-quiet
    python benchmarks/bench_auto_budget.py --out /tmp/auto-loaded --load
    python benchmarks/bench_auto_budget.py --data DIR --out /tmp/x  # DIR/{train,val}/...

Check ``uptime`` first: the quiet figure needs an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time


def _spin() -> subprocess.Popen[bytes]:
    """A process that holds one core until killed."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def _run(cmd: list[str], log: str) -> tuple[float, str]:
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t
    with open(log, "a", encoding="utf-8") as f:
        f.write("$ " + " ".join(cmd) + "\n" + done.stdout + done.stderr + "\n")
    if done.returncode != 0:
        raise SystemExit(f"{cmd[1]} failed ({done.returncode}); see {log}")
    return seconds, done.stdout + done.stderr


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="COCO set with train/ and val/ (default: clutter seed 0)")
    p.add_argument("--out", required=True)
    p.add_argument("--budget", type=float, default=600.0)
    p.add_argument("--load", action="store_true", help="hold one core with a spinning process")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more train arguments")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    data = args.data or os.path.join(args.out, "clutter-s0")
    if args.data is None and not os.path.isdir(os.path.join(data, "val")):
        here = os.path.dirname(os.path.abspath(__file__))
        subprocess.run(
            [sys.executable, os.path.join(here, "clutter_set.py"), "--out", data, "--seed", "0"], check=True
        )
    exe = [sys.executable, "-m", "focal_detect.cli"]
    train = [
        *exe, "train",
        "--train-images", f"{data}/train/images", "--train-annotations", f"{data}/train/annotations.json",
        "--val-images", f"{data}/val/images", "--val-annotations", f"{data}/val/annotations.json",
        "--preset", "auto", "--time-budget", f"{args.budget:g}",
        "--output-dir", f"{args.out}/run", "--no-progress", *args.extra,
    ]  # fmt: skip
    evaluate = [
        *exe, "evaluate", "--checkpoint", f"{args.out}/run/model_final.pt",
        "--images", f"{data}/val/images", "--annotations", f"{data}/val/annotations.json",
        "--output", f"{args.out}/eval.json",
    ]  # fmt: skip
    log = os.path.join(args.out, "log.txt")
    spinner = _spin() if args.load else None
    try:
        time.sleep(1.0 if spinner else 0.0)
        load_before = os.getloadavg()
        t_train, out_train = _run(train, log)
        t_eval, _ = _run(evaluate, log)
        load_after = os.getloadavg()
    finally:
        if spinner is not None:
            spinner.kill()
    metrics = json.load(open(f"{args.out}/eval.json", encoding="utf-8"))
    steps = re.search(r"^(\d+) steps in", out_train, re.M)
    coverage = re.search(r"^anchor coverage: .*$", out_train, re.M)
    choice = [line for line in out_train.splitlines() if line.startswith(("auto:", "calibration:"))]
    result = {
        "data": data,
        "load": args.load,
        "budget_s": args.budget,
        "AP": metrics["AP"],
        "AP50": metrics["AP50"],
        "APs": metrics["APs"],
        "per_class": {k[3:]: v for k, v in metrics.items() if k.startswith("AP/")},
        "coverage": coverage.group(0) if coverage else None,
        "choice": choice,
        "steps": int(steps.group(1)) if steps else None,
        "train_cmd_s": t_train,
        "evaluate_cmd_s": t_eval,
        "total_s": t_train + t_eval,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
    }
    with open(os.path.join(args.out, "result.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
