"""Benchmark what one step of ``focal-detect demo`` costs, and what each choice buys (CPU).

Run from the repository root:

    python benchmarks/bench_demo.py [--threads 2] [--repeat 5] [--batch 16]

Measured (median of ``--repeat`` interleaved runs, milliseconds per training step of
the demo's model on a batch of its 128 px synthetic images):

* rendering the batch (``SyntheticShapes``, NumPy);
* the train step (forward + loss + backward) in float32 and with bfloat16 autocast;
* the same step with the paper's head (256 channels, 4 convs) on the demo's backbone,
  to show what the slim head saves.

Ratios are printed so that runs on different machines compare.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch


def _median_ms(fns: dict[str, Callable[[], None]], repeat: int) -> dict[str, float]:
    for f in fns.values():  # warm-up
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, f in fns.items():  # interleaved, so load changes hit all alike
            t = time.perf_counter()
            f()
            times[k].append((time.perf_counter() - t) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    from focal_detect.cli import DEMO_TRAIN
    from focal_detect.data import SyntheticShapes, collate_detection
    from focal_detect.models import RetinaNet, RetinaNetConfig

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--batch", type=int, default=DEMO_TRAIN["batch_size"])
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    size = DEMO_TRAIN["image_size"]
    ds = SyntheticShapes(num_images=10_000, image_size=size, seed=0)
    images, targets = collate_detection([ds[i] for i in range(args.batch)])
    counter = iter(range(10**9))

    def render() -> None:
        start = next(counter) * args.batch % 9_000
        collate_detection([ds[i] for i in range(start, start + args.batch)])

    torch.manual_seed(0)
    demo = RetinaNet(RetinaNetConfig.preset("demo", 5)).train()
    paper_head = RetinaNet(
        RetinaNetConfig.preset("demo", 5, fpn={"channels": 256}, head={"channels": 256, "num_convs": 4})
    ).train()

    def step(model: torch.nn.Module, amp: bool) -> Callable[[], None]:
        def run() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                losses = model(images, targets)
            model.zero_grad(set_to_none=True)
            sum(losses.values()).backward()

        return run

    res = _median_ms(
        {
            "render batch": render,
            "demo step fp32": step(demo, False),
            "demo step bf16": step(demo, True),
            "paper-head step bf16": step(paper_head, True),
        },
        args.repeat,
    )
    print(f"batch {args.batch} of {size}x{size} images, {args.threads} thread(s), median of {args.repeat}")
    for k, v in res.items():
        print(f"  {k:<22} {v:8.1f} ms")
    print(f"bf16 autocast speed-up:            {res['demo step fp32'] / res['demo step bf16']:.2f}x")
    print(
        f"slim head vs paper head (bf16):    {res['paper-head step bf16'] / res['demo step bf16']:.2f}x faster"
    )
    print(
        f"rendering share of a bf16 step:    {res['render batch'] / (res['render batch'] + res['demo step bf16']):.1%}"
    )


if __name__ == "__main__":
    main()
