"""Inference latency: eager PyTorch against the exported ONNX graph in onnxruntime (CPU).

Run (dev venv, the ``export`` extra installed)::

    python benchmarks/bench_export.py [--repeat 10] [--threads 2,1] [--size 512]
                                      [--models demo,r50] [--onnx-dir /tmp/fd-onnx]

Models: ``demo`` (the CLI's demo configuration, 5 classes) and ``r50`` (ResNet-50 FPN
with the ``"torchvision_v1"`` preset, 91 classes, ``min_size = max_size =
size`` so a ``size``² image is not rescaled). Weights are random with the classifier
bias raised so that thousands of scores pass 0.05 (post-processing does real work).
Both paths run the whole ``model(images)``: pre-processing, network, decoding, NMS.
Eager runs under ``torch.no_grad()`` with ``torch.set_num_threads(t)``; onnxruntime with
``intra_op_num_threads = t``, ``inter_op_num_threads = 1``, all graph optimisations.
The two alternate (load from other processes hits both alike); medians, and the
median of the per-pair ratios. The exported file is kept in ``--onnx-dir`` and reused
when its model matches (export of the R50 takes minutes on a loaded 2-core machine).
Each run checks that both paths return the same detections (count, labels, boxes
within 1e-3 px, ties aside) and prints ``uptime``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import time

import numpy as np
import torch

from focal_detect.models import RetinaNet, RetinaNetConfig, build_model, export_onnx


def make_model(name: str, size: int) -> RetinaNet:
    """The benchmarked model with informative random weights (fixed seed)."""
    torch.manual_seed(0)
    if name == "demo":
        model = build_model(5, "demo")
        bias = -2.0
    elif name == "r50":
        model = RetinaNet(
            RetinaNetConfig.preset("torchvision_v1", 91, transform={"min_size": size, "max_size": size})
        )
        bias = -2.5
    else:
        raise SystemExit(f"bench_export: unknown model {name!r} (demo, r50)")
    with torch.no_grad():
        model.head.cls_logits.bias.fill_(bias)
    return model.eval()


def _fingerprint(model: torch.nn.Module) -> str:
    h = hashlib.sha1(repr(model.config).encode())  # type: ignore[union-attr]
    for v in model.state_dict().values():
        h.update(v.detach().cpu().numpy().tobytes()[:4096])
    return h.hexdigest()[:12]


def exported(model: RetinaNet, name: str, onnx_dir: str) -> tuple[str, float]:
    """Path of the model's ONNX file (exported unless cached) and the export time (s)."""
    os.makedirs(onnx_dir, exist_ok=True)
    path = os.path.join(onnx_dir, f"{name}-{_fingerprint(model)}.onnx")
    if os.path.isfile(path):
        return path, float("nan")
    t0 = time.perf_counter()
    export_onnx(model, path)
    return path, time.perf_counter() - t0


def _ms(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def same_detections(onnx_out, eager) -> bool:
    boxes, scores, labels, num = onnx_out
    for b, ref in enumerate(eager):
        n = int(num[b])
        if n != ref["boxes"].shape[0]:
            return False
        if not np.allclose(scores[b, :n], ref["scores"].numpy(), atol=1e-5, rtol=0):
            return False
        # Equal-score detections may come in either order: compare sorted rows.
        a = np.column_stack([labels[b, :n], np.round(boxes[b, :n], 2)])
        r = np.column_stack([ref["labels"].numpy(), np.round(ref["boxes"].numpy(), 2)])
        a, r = a[np.lexsort(a.T[::-1])], r[np.lexsort(r.T[::-1])]
        if not np.allclose(a, r, atol=2e-2, rtol=0):
            return False
    return True


def main() -> None:
    import onnxruntime as ort

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", default="2,1")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--models", default="demo,r50")
    p.add_argument("--onnx-dir", default="/tmp/focal-detect-onnx")
    args = p.parse_args()

    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, {os.cpu_count()} CPUs")
    print("uptime:", subprocess.run(["uptime"], check=False, capture_output=True, text=True).stdout.strip())
    rows = []
    for name in args.models.split(","):
        model = make_model(name, args.size)
        path, export_s = exported(model, name, args.onnx_dir)
        images = torch.rand(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
        feed = {"images": images.numpy()}
        for threads in [int(t) for t in args.threads.split(",")]:
            torch.set_num_threads(threads)
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

            def eager(model=model, images=images):
                with torch.no_grad():
                    return model(images)

            def onnx(sess=sess, feed=feed):
                return sess.run(None, feed)

            ok = same_detections(onnx(), eager())
            for _ in range(args.warmup):
                eager()
                onnx()
            a, b = [], []
            for _ in range(args.repeat):
                a.append(_ms(eager))
                b.append(_ms(onnx))
            n = int(onnx()[3].sum())
            ratio = statistics.median(x / y for x, y in zip(a, b))
            rows.append((name, threads, statistics.median(a), statistics.median(b), ratio, n, ok, export_s))
    print(f"\n{args.batch} x {args.size}x{args.size}, {args.repeat} reps (medians, ms)")
    print(
        f"{'model':6} {'thr':>3} {'eager':>9} {'onnxrt':>9} {'eager/ort':>9} {'dets':>5} {'same':>5} {'export s':>8}"
    )
    for name, t, e, o, r, n, ok, ex in rows:
        print(f"{name:6} {t:3d} {e:9.1f} {o:9.1f} {r:9.2f} {n:5d} {ok!s:>5} {ex:8.1f}")
    print("uptime:", subprocess.run(["uptime"], check=False, capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
