"""DistributedDataParallel training equals single-process training on the combined batch.

Two gloo processes on 127.0.0.1 each read ``batch_size`` images (their
DistributedSampler shard); one process reads ``2 * batch_size``. With the model's
foreground count all-reduced (``RetinaNetConfig.distributed=True``: the normaliser is
the *mean* count over processes) each process's loss is ``W * S_r / N`` and DDP's
gradient *average* gives exactly the gradient of ``sum_r S_r / N``, the single-process
loss. Without the all-reduce each process divides by its own count and the update
differs, which the test also checks, so it can fail. The backbone uses frozen
BatchNorm (as the paper); trainable BatchNorm would need SyncBatchNorm to match.
"""

from __future__ import annotations

import importlib
import os
import socket

import pytest
import torch

from focal_detect.data import SyntheticShapes
from focal_detect.engine import TrainConfig, train

WORLD = 2
PER_PROCESS_BATCH = 2


def _data() -> SyntheticShapes:
    return SyntheticShapes(num_images=8, image_size=32, seed=11, max_objects=4)


def _model(distributed: bool):
    from focal_detect.models import RetinaNet, RetinaNetConfig

    torch.manual_seed(0)
    return RetinaNet(
        RetinaNetConfig.preset("tiny", 5, transform={"size_divisible": 32}, loss={"distributed": distributed})
    )


def _config(out: str, batch_size: int) -> TrainConfig:
    return TrainConfig(
        iterations=2,
        batch_size=batch_size,
        lr=0.05,
        momentum=0.9,
        weight_decay=1e-4,
        warmup_iters=0,
        hflip=0.5,
        seed=5,
        progress=False,
        log_every=1,
        checkpoint_every=0,
        output_dir=out,
    )


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    importlib.import_module("torch._dynamo")  # before the group exists (see focal_detect.engine, Teardown)
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        for distributed in (True, False):
            model = _model(distributed)
            train(model, _data(), _config(os.path.join(out, f"run_{distributed}"), PER_PROCESS_BATCH))
            if rank == 0:
                torch.save(model.state_dict(), os.path.join(out, f"ddp_{distributed}.pt"))
    finally:
        torch.distributed.destroy_process_group()
    # Teardown: with nothing left holding the group, destroying it joins gloo's threads,
    # so none runs on into interpreter shutdown (the torchrun tutorial's SIGABRT flake).
    with open(os.path.join(out, f"threads_{rank}.txt"), "w") as f:
        f.write("\n".join(_thread_names()))


def _thread_names() -> list[str]:
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            pass
    return names


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_update_equals_single_process_update_on_the_combined_batch(tmp_path, monkeypatch) -> None:
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    import torch.multiprocessing as mp

    if "lo" in {name for _, name in socket.if_nameindex()}:
        monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")  # gloo's pair sockets on loopback too
    try:
        mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    except mp.ProcessRaisedException as e:  # the free port was taken in between: once more
        if "address already in use" not in str(e).lower():
            raise
        mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)

    if os.path.isdir("/proc/self/task"):  # Linux
        for rank in range(WORLD):
            left = (tmp_path / f"threads_{rank}.txt").read_text().split("\n")
            assert not [t for t in left if "gloo" in t], left

    init = _model(False).state_dict()
    single = _model(False)  # no all-reduce in one process
    train(single, _data(), _config(str(tmp_path / "single"), WORLD * PER_PROCESS_BATCH))
    ref = single.state_dict()
    ddp = torch.load(tmp_path / "ddp_True.pt", weights_only=True)
    naive = torch.load(tmp_path / "ddp_False.pt", weights_only=True)

    moved = max(float((ref[k] - init[k]).abs().max()) for k in ref if ref[k].is_floating_point())
    assert moved > 1e-3  # two SGD steps changed the weights
    for k in ref:
        torch.testing.assert_close(ddp[k], ref[k], rtol=1e-5, atol=1e-6, msg=k)
    # Per-process normalisation (no all-reduce) gives a different update.
    diff = max(float((naive[k] - ref[k]).abs().max()) for k in ref if ref[k].is_floating_point())
    assert diff > 1e-5
