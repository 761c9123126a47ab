"""Tutorial: distributed training from Python, launched by ``torchrun``.

Each process initialises ``torch.distributed`` from the environment torchrun sets
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), with
NCCL on GPUs and gloo on CPUs, and :func:`focal_detect.engine.train` trains one
``DistributedDataParallel`` replica per process on its shard of the data. Run it in the
folder where ``focal-detect export-synthetic`` wrote ``data/shapes_train``::

    torchrun --standalone --nproc-per-node 2 torchrun_train.py

(2 CPU processes with gloo, or 2 GPUs with NCCL; plain ``python torchrun_train.py`` is
one process.) With ``FOCAL_DETECT_TUTORIAL_TINY=1`` (what the test suite sets) it
trains a tiny model for 2 steps.
"""

from __future__ import annotations

import importlib
import os

import torch
import torch.distributed as dist

from focal_detect.data import CocoDetection
from focal_detect.engine import TrainConfig, train
from focal_detect.models import build_model

TINY = os.environ.get("FOCAL_DETECT_TUTORIAL_TINY") == "1"


def main() -> None:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1:
        # DDP imports torch._dynamo, which (torch 2.13.0) keeps a reference to a process
        # group that exists when it is first imported: destroy_process_group() would then
        # leave gloo's threads running into interpreter shutdown. Import it first.
        importlib.import_module("torch._dynamo")
        if torch.cuda.is_available():  # one GPU per process, NCCL between them
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
            dist.init_process_group("nccl")
        else:  # CPU processes: gloo
            dist.init_process_group("gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0

    data = CocoDetection("data/shapes_train/images", "data/shapes_train/annotations.json")
    # loss.distributed: the focal loss's foreground count is summed over all processes.
    preset = "tiny" if TINY else "demo"
    transform = {"size_divisible": 32} if TINY else {}
    model = build_model(data.num_classes, preset, loss={"distributed": world_size > 1}, transform=transform)
    config = TrainConfig(
        iterations=2 if TINY else 1200,
        batch_size=2 if TINY else 8,  # per process: the global batch is 8 x world size
        optimizer="adamw",
        lr=4e-3,
        schedule="cosine",
        warmup_iters=1 if TINY else 100,
        warmup_factor=0.1,
        clip_grad_norm=10.0,
        output_dir="runs/torchrun",  # only process 0 writes here
        progress=False,
    )
    result = train(model, data, config)
    if rank == 0:
        print(
            f"{world_size} process(es), {result.step} steps of "
            f"{config.batch_size * world_size} images in {result.seconds:.0f} s"
        )
    if dist.is_initialized():
        dist.barrier()  # no process leaves while another is still in a collective
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
