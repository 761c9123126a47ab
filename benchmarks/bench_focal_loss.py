"""Benchmark: focal loss forward + backward, time and peak extra memory.

Logits ``(2 x 120000, 80)`` float32 (two images of ~120k anchors, 80 classes) with about
one positive per 1000 entries, ``reduction="sum"`` then ``backward()``. Variants:

  formula       plain autograd formula (torchvision's expression written out)
  torchvision   torchvision.ops.sigmoid_focal_loss (when importable)
  ours-dense    focal_detect.losses.sigmoid_focal_loss (dense float targets)
  ours-labels   focal_detect.losses.sigmoid_focal_loss_from_labels (class indices)
  ours-compiled compiled_sigmoid_focal_loss = torch.compile(sigmoid_focal_loss) (with --compile;
                compile time excluded from the timing, printed separately)
  kornia        kornia.losses.binary_focal_loss_with_logits(alpha=0.25, gamma=2) (when importable)
  effdet        effdet.loss.new_focal_loss(alpha=0.25, gamma=2, normalizer=1, label_smoothing=0)
  effdet-legacy effdet.loss.focal_loss_legacy(alpha=0.25, gamma=2, normalizer=1) (when importable)

Peers that are not importable are skipped; they live in their own virtual
environments (see benchmarks/README.md), e.g. ``--variants formula kornia ours-dense``
run from the kornia environment. Every variant reports its loss and the sum of
``|grad|``; the table shows both relative to the ``formula`` variant (where the
definitions agree - all of these for 0/1 targets - they must match to float32
rounding; ``ours-labels`` uses its own labels and is not compared).

Method. Every variant runs in its own fresh subprocess with the same environment
(same MALLOC_* variables, same thread count), so one variant's allocator state cannot
help or hurt another. Time: median of ``--reps`` forward+backward calls after
``--warmup`` calls. Peak extra memory: the subprocess builds its inputs, runs the
warm-up, then before each timed call resets the kernel's peak-RSS counter
(``echo 5 > /proc/self/clear_refs``) and reads ``VmHWM`` after the call; the figure is the
largest ``VmHWM - VmRSS(before the call)`` - memory the call really touched, including
the returned gradient, excluding inputs. (Where clear_refs is not writable, the
process-lifetime VmHWM minus the RSS after input creation is used and marked ``*``.)
The same figure is also printed for the very first call of the process: when the
allocator keeps freed memory resident (``MALLOC_MMAP_MAX_=0``), later calls reuse pages
already counted in RSS and the steady figure understates a variant's need; the
first-call figure does not (for the compiled variant, "first" is the call after compiling).

Bandwidth bound: the bytes a loss must move at least (read logits, read the dense
targets if any, write the gradient) divided by the copy bandwidth measured in the same
run (``dst.copy_(src)`` of a logits-sized float32 tensor into existing memory).

Limits of issue 15 (measured by this script in one run, side by side with torchvision,
each thread count in its own subprocesses; check that the machine is quiet: the load
from ``uptime`` is printed before and after):

  eager, (240000, 80) fwd+bwd: ours-dense >= 5x and ours-labels >= 7x faster than
  torchvision at 1 thread, both >= 4x at 2 threads; peak extra memory <= 15 % of
  torchvision's (the chunked CPU path); ours-compiled >= 15x.

    PYTHONPATH=$PWD/src ~/peer-venv/bin/python benchmarks/bench_focal_loss.py --threads 1,2 --compile
    PYTHONPATH=$PWD/src MALLOC_MMAP_MAX_=0 ~/peer-venv/bin/python benchmarks/bench_focal_loss.py --threads 1,2

The script sets the thread count of its worker processes (``OMP_NUM_THREADS`` and
``torch.set_num_threads``); the library itself never does. The machine is shared:
numbers move by 10-30 % between runs (far more under load); compare ratios from one
run. The process CPU time per call is printed as well; it is less disturbed by other
processes than wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ANCHORS = 2 * 120_000
CLASSES = 80
POS_RATE = 1e-3
VARIANTS = ["formula", "torchvision", "ours-dense", "ours-labels", "ours-compiled"]


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return -1


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _inputs(torch, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(ANCHORS, CLASSES, generator=g) - 4.0  # near the prior logit -4.6
    pos = torch.rand(ANCHORS, CLASSES, generator=g) < POS_RATE
    # class-index labels with about the same number of positives, some ignored anchors
    labels = torch.full((ANCHORS,), -1, dtype=torch.long)
    rows = torch.nonzero(pos.any(1)).squeeze(1)
    labels[rows] = torch.randint(0, CLASSES, (rows.numel(),), generator=g)
    ign = torch.rand(ANCHORS, generator=g) < 0.01
    labels[ign & (labels < 0)] = -2
    targets = pos.float()
    return x, targets, labels


def worker(variant: str, warmup: int, reps: int, threads: int) -> dict:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)  # the benchmark's choice, as a caller's

    x0, targets, labels = _inputs(torch)

    if variant == "formula":

        def loss_fn(x):
            p = torch.sigmoid(x)
            ce = F.binary_cross_entropy_with_logits(x, targets, reduction="none")
            p_t = p * targets + (1 - p) * (1 - targets)
            loss = ce * (1 - p_t) ** 2
            alpha_t = 0.25 * targets + 0.75 * (1 - targets)
            return (alpha_t * loss).sum()

    elif variant == "torchvision":
        try:
            from torchvision.ops import sigmoid_focal_loss as tv_focal
        except ImportError:
            return {"variant": variant, "skipped": "torchvision not importable"}

        def loss_fn(x):
            return tv_focal(x, targets, alpha=0.25, gamma=2, reduction="sum")

    elif variant == "ours-dense":
        from focal_detect.losses import sigmoid_focal_loss

        def loss_fn(x):
            return sigmoid_focal_loss(x, targets, reduction="sum")

    elif variant == "ours-labels":
        from focal_detect.losses import sigmoid_focal_loss_from_labels

        def loss_fn(x):
            return sigmoid_focal_loss_from_labels(x, labels, reduction="sum")

    elif variant == "ours-compiled":
        from focal_detect.losses import compiled_sigmoid_focal_loss

        def compiled(x):
            return compiled_sigmoid_focal_loss(x, targets, reduction="sum")

        t0 = time.perf_counter()
        xx = x0.clone().requires_grad_(True)
        compiled(xx).backward()
        compile_s = time.perf_counter() - t0

        def loss_fn(x):
            return compiled(x)

    elif variant == "kornia":
        try:
            from kornia.losses import binary_focal_loss_with_logits
        except ImportError:
            return {"variant": variant, "skipped": "kornia not importable"}

        def loss_fn(x):
            return binary_focal_loss_with_logits(x, targets, alpha=0.25, gamma=2.0, reduction="sum")

    elif variant in ("effdet", "effdet-legacy"):
        try:
            from effdet import loss as effdet_loss
        except ImportError:
            return {"variant": variant, "skipped": "effdet not importable"}

        if variant == "effdet":

            def loss_fn(x):
                return effdet_loss.new_focal_loss(x, targets, 0.25, 2.0, 1.0, label_smoothing=0.0).sum()

        else:

            def loss_fn(x):
                return effdet_loss.focal_loss_legacy(x, targets, 0.25, 2.0, 1.0).sum()

    else:
        raise SystemExit(f"unknown variant {variant}")

    # Leaf logits reused across calls (like a parameter); grads are dropped each time.
    x = x0.clone().requires_grad_(True)
    value = None
    # First call in a fresh process: nothing cached by the allocator yet, so the RSS
    # growth is the memory the call needs even when the allocator keeps freed memory
    # (e.g. MALLOC_MMAP_MAX_=0, where later calls reuse pages already counted in RSS).
    rss = _status("VmRSS")
    first_exact = _reset_peak()
    loss_fn(x).backward()
    first_peak = _status("VmHWM") - rss
    for _ in range(warmup):
        x.grad = None
        loss_fn(x).backward()
    times, cpu, peaks = [], [], []
    exact_peak = True
    base_rss0 = _status("VmRSS")
    for _ in range(reps):
        x.grad = None
        rss = _status("VmRSS")
        exact_peak = _reset_peak() and exact_peak
        c0 = time.process_time()
        t0 = time.perf_counter()
        out = loss_fn(x)
        out.backward()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        peaks.append(_status("VmHWM") - rss)
        value = float(out)
    if not exact_peak:
        peaks = [_status("VmHWM") - base_rss0]
    res = {
        "variant": variant,
        "median_ms": statistics.median(times) * 1e3,
        "min_ms": min(times) * 1e3,
        "cpu_ms": statistics.median(cpu) * 1e3,
        "peak_extra_mb": max(peaks) / 1e6,
        "first_call_mb": first_peak / 1e6 if first_exact else float("nan"),
        "peak_exact": exact_peak,
        "loss": value,
        "grad_abs_sum": float(x.grad.double().abs().sum()),
        "threads": torch.get_num_threads(),
    }
    if variant == "ours-compiled":
        res["compile_s"] = compile_s
    return res


def copy_bandwidth() -> float:
    import torch

    src = torch.randn(ANCHORS, CLASSES)
    dst = torch.empty_like(src)
    dst.copy_(src)
    ts = []
    for _ in range(7):
        t0 = time.perf_counter()
        dst.copy_(src)
        ts.append(time.perf_counter() - t0)
    return 2 * src.numel() * 4 / statistics.median(ts)  # bytes read + written per second


def _load() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def _run_variant(v: str, args: argparse.Namespace, threads: int) -> dict | None:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", v, "--warmup", str(args.warmup)]
    cmd += ["--reps", str(args.reps), "--threads", str(threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        print(f"{v}: failed\n{proc.stderr[-2000:]}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _table(results: dict, bounds: tuple[float, float]) -> None:
    bound_dense, bound_labels = bounds
    ref = results.get("torchvision")
    if ref is not None and "skipped" in ref:
        ref = None
    logits_mb = ANCHORS * CLASSES * 4 / 1e6
    print(
        "| variant | median ms | min ms | CPU ms (all threads) | peak extra MB (steady / first call) | x faster than "
        "torchvision (wall / CPU) | % of torchvision memory (steady / first) | peak / logits size | "
        "x bandwidth bound | loss |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for v, r in results.items():
        if "skipped" in r:
            print(f"| {v} | skipped: {r['skipped']} | | | | | | | | |")
            continue
        bound = bound_labels if v == "ours-labels" else bound_dense
        speed = f"{ref['median_ms'] / r['median_ms']:.1f} / {ref['cpu_ms'] / r['cpu_ms']:.1f}" if ref else "-"
        mem = (
            f"{100 * r['peak_extra_mb'] / ref['peak_extra_mb']:.0f} % / "
            f"{100 * r['first_call_mb'] / ref['first_call_mb']:.0f} %"
            if ref and ref["peak_extra_mb"] > 0
            else "-"
        )
        star = "" if r["peak_exact"] else "*"
        extra = f" (compile {r['compile_s']:.1f} s)" if "compile_s" in r else ""
        print(
            f"| {v}{extra} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | {r['cpu_ms']:.1f} | "
            f"{r['peak_extra_mb']:.0f}{star} / {r['first_call_mb']:.0f} | {speed} | {mem} | "
            f"{r['peak_extra_mb'] / logits_mb:.2f} | {r['median_ms'] / 1e3 / bound:.1f} | {r['loss']:.6g} |"
        )
    base = results.get("formula")
    if base is not None and "skipped" not in base:
        print("\nAgreement with the formula variant (relative difference of the loss / of sum |grad|):")
        for v, r in results.items():
            if "skipped" in r or v in ("formula", "ours-labels"):
                continue
            dl = abs(r["loss"] - base["loss"]) / abs(base["loss"])
            dg = abs(r["grad_abs_sum"] - base["grad_abs_sum"]) / base["grad_abs_sum"]
            same = "(equal to float32 rounding)" if max(dl, dg) < 1e-4 else "(DIFFERENT)"
            print(f"  {v}: {dl:.1e} / {dg:.1e} {same}")


#: (variant, threads, least speed-up over torchvision) of issue 15; memory: <= 15 %.
LIMITS = [
    ("ours-dense", 1, 5.0),
    ("ours-labels", 1, 7.0),
    ("ours-dense", 2, 4.0),
    ("ours-labels", 2, 4.0),
    ("ours-compiled", 1, 15.0),
    ("ours-compiled", 2, 15.0),
]
MEMORY_LIMIT = 0.15


def _limits(runs: dict[int, dict]) -> None:
    print("\nLimits (issue 15), wall-time speed-up over torchvision in the same run:")
    for v, threads, want in LIMITS:
        res = runs.get(threads, {})
        r, ref = res.get(v), res.get("torchvision")
        if not r or not ref or "skipped" in r or "skipped" in ref:
            continue
        got = ref["median_ms"] / r["median_ms"]
        mem = r["peak_extra_mb"] / ref["peak_extra_mb"] if ref["peak_extra_mb"] > 0 else float("nan")
        ok = "ok" if got >= want else "BELOW"
        mem_ok = "ok" if mem <= MEMORY_LIMIT else "ABOVE"
        print(
            f"  {v:14s} {threads} thread(s): {got:5.1f}x (>= {want:g}x: {ok}); peak extra memory "
            f"{100 * mem:.0f} % of torchvision's (<= {100 * MEMORY_LIMIT:.0f} %: {mem_ok})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--compile", action="store_true", help="also run the torch.compile variant")
    ap.add_argument("--variants", nargs="*", default=None)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.warmup, args.reps, int(args.threads))))
        return

    import torch

    try:
        import torchvision

        tv = torchvision.__version__
    except ImportError:
        tv = "not installed"
    malloc = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    print(f"python {sys.executable}")
    print(f"before: {_load()}")
    print(
        f"torch {torch.__version__}, torchvision {tv}, threads {threads}, "
        f"MALLOC env {malloc or '(glibc defaults)'} - identical for every variant"
    )
    print(
        f"logits ({ANCHORS}, {CLASSES}) float32, ~{POS_RATE:g} positives, reduction='sum', "
        f"forward+backward, median of {args.reps} after {args.warmup} warm-up; one subprocess per variant"
    )
    bw = copy_bandwidth()
    n = ANCHORS * CLASSES
    bounds = (3 * 4 * n / bw, 2 * 4 * n / bw)  # dense: read logits + targets, write grad
    print(
        f"copy bandwidth {bw / 1e9:.1f} GB/s -> bandwidth bound {bounds[0] * 1e3:.1f} ms (dense), "
        f"{bounds[1] * 1e3:.1f} ms (labels)"
    )
    variants = args.variants or [v for v in VARIANTS if v != "ours-compiled" or args.compile]
    runs: dict[int, dict] = {}
    for th in threads:
        results = {}
        for v in variants:
            r = _run_variant(v, args, th)
            if r is not None:
                results[v] = r
        runs[th] = results
        print(f"\n### {th} thread(s) ({_load()})\n")
        _table(results, bounds)
    _limits(runs)
    print(f"\nafter: {_load()}")
    print(
        "\nThe labels variant uses its own labels (same positive rate, 1 % ignored anchors), so its loss differs."
    )
    print(
        "CPU ms = process CPU time (user + system, all threads) per call: less sensitive than wall time to other "
        "load on a shared machine, but it counts spinning threads too."
    )


if __name__ == "__main__":
    main()
