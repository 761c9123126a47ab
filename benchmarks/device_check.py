"""Accelerator check: correctness and timing of the hot paths on a CUDA device.

Run on a machine with a GPU (dev venv; torchvision optional, as the reference)::

    python benchmarks/device_check.py [--repeat 20] [--device cuda]

Checks, each against a reference on the same device and inputs, and times (CUDA
events, medians of ``--repeat``; peak memory from ``torch.cuda.max_memory_allocated``
above the inputs):

* focal loss, forward + backward, logits ``(240000, 80)`` (~1/1000 positives):
  dense targets (:func:`~focal_detect.losses.sigmoid_focal_loss`) and class-index
  labels (:func:`~focal_detect.losses.sigmoid_focal_loss_from_labels`), in float32,
  bfloat16 and float32 under ``torch.autocast(dtype=torch.bfloat16)``, against
  ``torchvision.ops.sigmoid_focal_loss`` (or, without torchvision, the same formula
  in float64 autograd); reports the relative error of the summed loss and the largest
  gradient error relative to the largest gradient;
* windowed anchor assignment (``assign_anchors`` with ``levels``), batch 16, anchors
  of an 800² input, 7 and 100 boxes per image, against the dense path (no ``levels``):
  labels and box targets must be equal;
* batched NMS, 5000 boxes x 80 classes, against ``torchvision.ops.batched_nms``
  (or the dense float64 greedy loop): kept indices must be equal;
* one RetinaNet ResNet-50 FPN training step (batch 2, 512², SGD) under bfloat16
  autocast: finite losses, time and peak memory.

Prints one table; exits 1 if a check fails. On a machine without CUDA it says so and
exits 0 (CI never needs a device); ``--device cpu`` dry-runs every check on the CPU
(wall-clock times, no memory figures) to check the script itself.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from typing import Any

import torch

_ON_CUDA = True  # False for the ``--device cpu`` dry run of the script itself


def cuda_ms(fn: Callable[[], Any], repeat: int, warmup: int = 3) -> float:
    """Median device time of ``fn`` in milliseconds (CUDA events; wall clock on CPU)."""
    for _ in range(warmup):
        fn()
    if not _ON_CUDA:
        import time

        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def peak_mb(fn: Callable[[], Any]) -> float:
    """Peak device memory of one call of ``fn`` above what was allocated before (MB)."""
    if not _ON_CUDA:
        fn()
        return float("nan")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def _reference_focal(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    try:
        from torchvision.ops import sigmoid_focal_loss as tv
    except ImportError:
        tv = None
    if tv is not None:
        return tv(x, t, alpha=0.25, gamma=2.0, reduction="sum")
    p = torch.sigmoid(x)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(x, t, reduction="none")
    pt = p * t + (1 - p) * (1 - t)
    return (ce * (1 - pt) ** 2 * (0.25 * t + 0.75 * (1 - t))).sum()


def check_focal(device: torch.device, repeat: int, rows: list) -> bool:
    from focal_detect.losses import sigmoid_focal_loss, sigmoid_focal_loss_from_labels

    g = torch.Generator(device="cpu").manual_seed(0)
    n, k = 240000, 80
    base = (torch.randn(n, k, generator=g) * 3).to(device)
    labels = torch.full((n,), -1, dtype=torch.int64)
    pos = torch.randperm(n, generator=g)[: n // 1000]
    labels[pos] = torch.randint(0, k, (pos.numel(),), generator=g)
    labels = labels.to(device)
    dense = torch.zeros(n, k, device=device)
    dense[labels >= 0, labels[labels >= 0]] = 1.0

    # float64 reference value and gradient (the formula is exact enough there).
    x64 = base.double().requires_grad_()
    ref = _reference_focal(x64, dense.double())
    ref.backward()
    ref_val, ref_grad = float(ref.detach()), x64.grad.float()
    ok = True
    for dtype_name in ("float32", "bfloat16", "autocast-bf16"):
        dtype = torch.bfloat16 if dtype_name == "bfloat16" else torch.float32
        tol = 2e-2 if dtype_name != "float32" else 1e-4
        variants: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
            "ours dense": lambda x: sigmoid_focal_loss(x, dense.to(x.dtype), reduction="sum"),
            "ours labels": lambda x: sigmoid_focal_loss_from_labels(x, labels, reduction="sum"),
            "reference": lambda x: _reference_focal(x, dense.to(x.dtype)),
        }
        for name, loss_fn in variants.items():
            x = base.to(dtype).detach().clone().requires_grad_()

            def step(loss_fn=loss_fn, x=x, dtype_name=dtype_name) -> torch.Tensor:
                x.grad = None
                if dtype_name == "autocast-bf16":
                    with torch.autocast(device.type, dtype=torch.bfloat16):
                        loss = loss_fn(x)
                else:
                    loss = loss_fn(x)
                loss.backward()
                return loss

            loss = step()
            grad = x.grad.float()
            val_err = abs(float(loss) - ref_val) / abs(ref_val)
            grad_err = float((grad - ref_grad).abs().max() / ref_grad.abs().max())
            good = val_err < tol and grad_err < tol
            ok &= good or name == "reference"
            ms = cuda_ms(step, repeat)
            mb = peak_mb(step)
            rows.append(
                (
                    f"focal {dtype_name}",
                    name,
                    f"{ms:.2f} ms",
                    f"{mb:.0f} MB",
                    f"loss {val_err:.1e}, grad {grad_err:.1e}",
                    "ok" if good else "FAIL",
                )
            )
    return ok


def check_assignment(device: torch.device, repeat: int, rows: list) -> bool:
    from focal_detect.anchors import AnchorGenerator
    from focal_detect.matching import assign_anchors

    sizes = [(100, 100), (50, 50), (25, 25), (13, 13), (7, 7)]
    gen = AnchorGenerator()
    grid = gen(sizes, device=device)  # Anchors: the windowed path
    anchors = grid.boxes  # a plain tensor: the dense fallback
    ok = True
    for m in (7, 100):
        g = torch.Generator().manual_seed(m)
        gt = []
        for _ in range(16):
            wh = torch.rand(m, 2, generator=g) * 300 + 10
            xy = torch.rand(m, 2, generator=g) * (800 - wh)
            gt.append(torch.cat([xy, xy + wh], 1).to(device))
        lab = [torch.randint(0, 80, (m,), generator=g).to(device) for _ in range(16)]
        dense = assign_anchors(anchors, gt, lab)
        win = assign_anchors(grid, gt, lab)
        same = bool((dense.labels == win.labels).all()) and bool((dense.matched_gt == win.matched_gt).all())
        ok &= same

        def windowed(gt=gt, lab=lab):
            return assign_anchors(grid, gt, lab)

        def dense_path(gt=gt, lab=lab):
            return assign_anchors(anchors, gt, lab)

        ms_w, ms_d, mb = cuda_ms(windowed, repeat), cuda_ms(dense_path, repeat), peak_mb(windowed)
        rows.append(
            (
                f"assign B=16 M={m}",
                "windowed",
                f"{ms_w:.2f} ms",
                f"{mb:.0f} MB",
                f"dense {ms_d:.2f} ms; equal: {same}",
                "ok" if same else "FAIL",
            )
        )
    return ok


def check_nms(device: torch.device, repeat: int, rows: list) -> bool:
    from focal_detect.boxes import batched_nms

    g = torch.Generator().manual_seed(0)
    n = 5000
    wh = torch.rand(n, 2, generator=g) * 192 + 8
    xy = torch.rand(n, 2, generator=g) * (800 - wh)
    boxes = torch.cat([xy, xy + wh], 1).to(device)
    scores = torch.rand(n, generator=g).to(device)
    idxs = torch.randint(0, 80, (n,), generator=g).to(device)
    ours = batched_nms(boxes, scores, idxs, 0.5)
    try:
        from torchvision.ops import batched_nms as tv_nms

        ref, ref_name = tv_nms(boxes, scores, idxs, 0.5), "torchvision"
        ms_ref = cuda_ms(lambda: tv_nms(boxes, scores, idxs, 0.5), repeat)
    except ImportError:
        ref, ref_name = (
            batched_nms(boxes.cpu().double(), scores.cpu().double(), idxs.cpu(), 0.5),
            "cpu float64",
        )
        ms_ref = float("nan")
    # Kept set and score order (equal scores may be ordered differently by the peer).
    same = torch.equal(ours.sort().values.cpu(), ref.sort().values.cpu())
    ms = cuda_ms(lambda: batched_nms(boxes, scores, idxs, 0.5), repeat)
    mb = peak_mb(lambda: batched_nms(boxes, scores, idxs, 0.5))
    rows.append(
        (
            "batched NMS 5000x80",
            "ours",
            f"{ms:.2f} ms",
            f"{mb:.0f} MB",
            f"{ref_name} {ms_ref:.2f} ms; same kept set: {same}",
            "ok" if same else "FAIL",
        )
    )
    return same


def check_train_step(device: torch.device, repeat: int, rows: list) -> bool:
    from focal_detect.models import RetinaNet, RetinaNetConfig

    torch.manual_seed(0)
    model = RetinaNet(RetinaNetConfig(num_classes=80, min_size=None)).to(device).train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    images = torch.rand(2, 3, 512, 512, device=device)
    targets = [
        {
            "boxes": torch.tensor([[40.0, 60.0, 200.0, 220.0], [300.0, 100.0, 480.0, 400.0]], device=device),
            "labels": torch.tensor([3, 17], device=device),
        }
        for _ in range(2)
    ]
    last: dict[str, torch.Tensor] = {}

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            losses = model(images, targets)
        total = losses["classification"] + losses["bbox_regression"]
        total.backward()
        opt.step()
        last.update(losses)

    ms = cuda_ms(step, max(3, repeat // 4))
    mb = peak_mb(step)
    finite = all(bool(torch.isfinite(v)) for v in last.values())
    rows.append(
        (
            "R50-FPN train step",
            "bf16 autocast",
            f"{ms:.1f} ms",
            f"{mb:.0f} MB",
            f"B=2, 512^2; losses finite: {finite}",
            "ok" if finite else "FAIL",
        )
    )
    return finite


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--device", default="cuda", help="'cpu' dry-runs the checks (wall-clock times, no memory)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "device_check: no CUDA device available (torch.cuda.is_available() is False); nothing to check."
        )
        return 0
    global _ON_CUDA
    _ON_CUDA = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if _ON_CUDA else "CPU (dry run)"
    print(f"device: {name}; torch {torch.__version__}")
    rows: list[tuple[str, ...]] = []
    ok = True
    for check in (check_focal, check_assignment, check_nms, check_train_step):
        try:
            ok &= check(device, args.repeat, rows)
        except Exception as e:
            rows.append((check.__name__, "error", "-", "-", f"{type(e).__name__}: {e}"[:90], "FAIL"))
            ok = False
    head = ("case", "variant", "time", "peak", "check", "")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
