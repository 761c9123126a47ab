"""Benchmark focal_detect.batched_nms against torchvision.ops.batched_nms (CPU).

Run: ``~/peer-venv/bin/python benchmarks/bench_nms.py [--repeat 50] [--threads 2,1]``.
Both run in the same process on the same inputs, alternately (so load from other
processes hits both alike); prints median times, the median of the per-run ratios
ours / torchvision, and whether the kept indices are identical.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from focal_detect.boxes import batched_nms, nms

try:
    import torchvision
except ImportError:  # pragma: no cover - benchmark still runs without the peer
    torchvision = None


def make_case(n: int, num_classes: int, image: float = 800.0, seed: int = 0):
    """Random boxes (sides 8..200 px inside an ``image`` square), uniform scores,
    uniform classes; the realistic input of RetinaNet's post-processing NMS."""
    g = torch.Generator().manual_seed(seed)
    wh = torch.rand(n, 2, generator=g) * 192 + 8
    xy = torch.rand(n, 2, generator=g) * (image - wh)
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = torch.rand(n, generator=g)
    idxs = torch.randint(0, num_classes, (n,), generator=g)
    return boxes, scores, idxs


def _ms(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def median_ms(fn, repeat: int, warmup: int = 3) -> float:
    """Median wall time of ``fn`` in milliseconds."""
    for _ in range(warmup):
        fn()
    return statistics.median(_ms(fn) for _ in range(repeat))


def interleaved(ours, ref, repeat: int, warmup: int = 3) -> tuple[float, float, float]:
    """Run ``ours`` and ``ref`` alternately (so load from other processes hits both
    alike); return their median times and the median of the per-pair ratios."""
    for _ in range(warmup):
        ours()
        ref()
    a, b = [], []
    for _ in range(repeat):
        a.append(_ms(ours))
        b.append(_ms(ref))
    ratio = statistics.median(x / y for x, y in zip(a, b))
    return statistics.median(a), statistics.median(b), ratio


def run(n: int, num_classes: int, repeat: int, thr: float = 0.5) -> None:
    boxes, scores, idxs = make_case(n, num_classes)
    if num_classes == 1:
        label = f"nms {n} boxes"
        ours_fn = lambda: nms(boxes, scores, thr)  # noqa: E731
        ref_fn = (lambda: torchvision.ops.nms(boxes, scores, thr)) if torchvision else None
    else:
        label = f"batched_nms {n} boxes x {num_classes} classes"
        ours_fn = lambda: batched_nms(boxes, scores, idxs, thr)  # noqa: E731
        ref_fn = (lambda: torchvision.ops.batched_nms(boxes, scores, idxs, thr)) if torchvision else None
    if ref_fn is None:
        print(f"{label:45s} ours {median_ms(ours_fn, repeat):8.2f} ms", flush=True)
        return
    ours, ref, ratio = interleaved(ours_fn, ref_fn, repeat)
    a, b = ours_fn(), ref_fn()
    # Same kept set, and same order up to ties in score (torchvision orders equal
    # scores with an unstable sort on its per-class path, used above 1000 boxes).
    same_set = torch.equal(torch.sort(a)[0], torch.sort(b)[0])
    same_order = torch.equal(a, b)
    same_scores = torch.equal(scores[a], scores[b])
    print(
        f"{label:45s} ours {ours:8.2f} ms   torchvision {ref:8.2f} ms   ratio {ratio:5.2f}   "
        f"same kept set={same_set} same order={same_order} (score order={same_scores})",
        flush=True,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeat", type=int, default=50)
    p.add_argument("--threads", default="2,1", help="comma-separated thread counts")
    p.add_argument("--quick", action="store_true", help="only the 5000 x 80 case")
    args = p.parse_args()
    for threads in (int(x) for x in args.threads.split(",")):
        torch.set_num_threads(threads)
        print(
            f"torch {torch.__version__}, torchvision "
            f"{getattr(torchvision, '__version__', 'not installed')}, threads {threads}"
        )
        run(5000, 80, args.repeat)  # the target case: within 1.5x of torchvision
        if args.quick:
            continue
        run(20000, 80, max(5, args.repeat // 5))  # for information
        run(5000, 1, max(5, args.repeat // 5))
        run(1000, 1, args.repeat)


if __name__ == "__main__":
    main()
