"""focal_detect.engine: schedule, config, checkpoints, exact resume, logging, AMP, clipping."""

from __future__ import annotations

import csv
import json
import os
import random

import numpy as np
import pytest
import torch
from torch import nn

from focal_detect.data import SyntheticShapes
from focal_detect.engine import (
    TrainConfig,
    WarmupMultiStep,
    epoch_batches,
    get_rng_state,
    load_checkpoint,
    paper_lr,
    save_checkpoint,
    set_rng_state,
    train,
)


class Toy(nn.Module):
    """A stand-in detector: loss depends on the images and targets it gets."""

    def __init__(self, nan_at: int | None = None) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))
        self.calls = 0
        self.nan_at = nan_at

    def forward(self, images, targets):
        self.calls += 1
        x = torch.stack([im.mean(dim=(1, 2)) for im in images])
        n = sum(len(t["boxes"]) for t in targets)
        loss = ((x - self.w) ** 2).sum() * (1 + n)
        if self.nan_at is not None and self.calls == self.nan_at:
            loss = loss * float("nan")
        return {"classification": loss, "bbox_regression": 0.5 * loss}


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(
        iterations=4,
        batch_size=2,
        lr=0.01,
        warmup_iters=0,
        progress=False,
        output_dir=str(tmp_path),
        log_every=1,
        checkpoint_every=0,
    )
    base.update(kw)
    return TrainConfig(**base)


# ------------------------------------------------------------------------ recipe / config


def test_paper_schedule_factors() -> None:
    f = WarmupMultiStep(90_000, TrainConfig().milestone_steps, 0.1, warmup_iters=500, warmup_factor=1 / 3)
    assert TrainConfig().milestone_steps == (60_000, 80_000)
    assert f(0) == pytest.approx(1 / 3)
    assert f(250) == pytest.approx(2 / 3)
    assert f(500) == 1.0 and f(59_999) == 1.0
    assert f(60_000) == pytest.approx(0.1) and f(79_999) == pytest.approx(0.1)
    assert f(80_000) == pytest.approx(0.01) and f(89_999) == pytest.approx(0.01)


def test_cosine_schedule_endpoints() -> None:
    f = WarmupMultiStep(100, (), warmup_iters=0, schedule="cosine")
    assert f(0) == 1.0 and f(50) == pytest.approx(0.5) and f(100) == pytest.approx(0.0, abs=1e-12)


def test_paper_lr_scales_with_global_batch() -> None:
    assert paper_lr(16) == pytest.approx(0.01)
    assert TrainConfig(batch_size=8).global_lr(world_size=4) == pytest.approx(0.02)
    assert TrainConfig(batch_size=8, lr=0.5).global_lr(world_size=4) == 0.5
    cfg = TrainConfig()
    assert (cfg.momentum, cfg.weight_decay, cfg.optimizer, cfg.hflip) == (0.9, 1e-4, "sgd", 0.5)


def test_train_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(optimizer="lamb")
    with pytest.raises(ValueError, match="milestones must be increasing fractions"):
        TrainConfig(milestones=(0.9, 0.5))
    with pytest.raises(ValueError, match="iterations must be in"):
        TrainConfig(iterations=0)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['iters'\]"):
        TrainConfig.from_dict({"iters": 3})


def test_epoch_batches_shard_the_single_process_order() -> None:
    single = epoch_batches(12, 4, epoch=3, seed=5)
    r0 = epoch_batches(12, 2, epoch=3, seed=5, world_size=2, rank=0)
    r1 = epoch_batches(12, 2, epoch=3, seed=5, world_size=2, rank=1)
    assert len(single) == len(r0) == len(r1) == 3
    for s, a, b in zip(single, r0, r1):
        assert sorted(s) == sorted(a + b)  # each global batch = union of the shards
    assert epoch_batches(12, 4, epoch=4, seed=5) != single  # reshuffled per epoch


# ---------------------------------------------------------------------------- checkpoints


def test_save_checkpoint_is_atomic(tmp_path, monkeypatch) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"step": 1}, path)

    def broken_save(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1  # old checkpoint intact
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"]  # no temp file left


def test_rng_state_roundtrip_through_weights_only_load(tmp_path) -> None:
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.normal()  # leaves a cached Gaussian in the legacy state
    save_checkpoint({"rng": get_rng_state()}, tmp_path / "r.pt")
    expected = (torch.rand(3), np.random.rand(3), np.random.normal(), random.random(), random.gauss(0, 1))
    torch.manual_seed(9)
    np.random.seed(9)
    random.seed(9)
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    got = (torch.rand(3), np.random.rand(3), np.random.normal(), random.random(), random.gauss(0, 1))
    assert torch.equal(expected[0], got[0])
    assert np.array_equal(expected[1], got[1])
    assert expected[2:] == got[2:]


def _tiny_model(seed: int = 0):
    from focal_detect.models import RetinaNet, RetinaNetConfig

    torch.manual_seed(seed)
    # Trainable BatchNorm so the running statistics (buffers) must be restored too.
    return RetinaNet(
        RetinaNetConfig.preset("tiny", 5, backbone={"frozen_bn": False}, transform={"size_divisible": 32})
    )


def test_interrupted_and_resumed_run_equals_uninterrupted_run(tmp_path) -> None:
    data = SyntheticShapes(num_images=6, image_size=32, seed=0, max_objects=3)
    kw = dict(
        iterations=5,
        batch_size=2,
        lr=0.01,
        warmup_iters=2,
        hflip=0.5,
        seed=3,
        log_every=1,
        checkpoint_every=2,
        momentum=0.9,
        milestones=(0.6,),
    )
    full_model = _tiny_model()
    full = train(full_model, data, _cfg(tmp_path / "full", **kw))

    part_model = _tiny_model()
    first = train(part_model, data, _cfg(tmp_path / "part", **kw), stop_after=2)
    assert first.step == 2
    torch.manual_seed(12345)  # disturb every RNG: resume must restore them
    np.random.seed(1)
    random.seed(1)
    resumed_model = _tiny_model(seed=99)  # fresh process: different initial weights
    second = train(resumed_model, data, _cfg(tmp_path / "part", resume=True, **kw))
    assert second.step == 5  # crossed an epoch boundary (3 steps per epoch)

    init = _tiny_model().state_dict()
    full_sd, res_sd = full_model.state_dict(), resumed_model.state_dict()
    assert any(not torch.equal(full_sd[k], init[k]) for k in init)  # training changed the weights
    for k in full_sd:
        assert torch.equal(full_sd[k], res_sd[k]), k  # bitwise, buffers included
    assert [r["loss"] for r in full.history] == [r["loss"] for r in second.history]
    # The resumed run's metrics files continue the interrupted ones: no gap, no duplicate.
    rows = {
        name: [(r["step"], r["loss"]) for r in csv.DictReader(open(tmp_path / name / "metrics.csv"))]
        for name in ("full", "part")
    }
    assert [s for s, _ in rows["part"]] == ["1", "2", "3", "4", "5"] and rows["part"] == rows["full"]
    a = load_checkpoint(tmp_path / "full" / "checkpoint_last.pt")
    b = load_checkpoint(tmp_path / "part" / "checkpoint_last.pt")
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 5
    assert a["class_names"] == list(data.class_names) and a["model_config"]["num_classes"] == 5

    # A different seed is a different run: bitwise equality above is not an accident.
    other_model = _tiny_model()
    train(other_model, data, _cfg(tmp_path / "other", **{**kw, "seed": 4}), stop_after=2)
    part_sd = part_model.state_dict()
    assert any(not torch.equal(other_model.state_dict()[k], part_sd[k]) for k in part_sd)


def test_resume_refuses_a_different_global_batch(tmp_path) -> None:
    data = [(torch.rand(3, 4, 4), {"boxes": torch.zeros(0, 4)}) for _ in range(8)]
    train(Toy(), data, _cfg(tmp_path, iterations=2, checkpoint_every=1))
    with pytest.raises(ValueError, match="global batch 2 and seed 0, this run 4 and 0"):
        train(Toy(), data, _cfg(tmp_path, iterations=3, batch_size=4, resume=True))


# ------------------------------------------------------------------------- loop behaviour


def test_training_logs_csv_jsonl_and_plots(tmp_path) -> None:
    data = [(torch.rand(3, 4, 4), {"boxes": torch.zeros(1, 4)}) for _ in range(6)]
    res = train(Toy(), data, _cfg(tmp_path, iterations=6, log_every=2, hflip=0.0))
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [2, 4, 6]
    assert {"loss", "loss_classification", "loss_bbox_regression", "lr", "images_per_s"} <= set(rows[0])
    # The logged total is the sum of the components, averaged over the window.
    for r in rows:
        assert float(r["loss"]) == pytest.approx(float(r["loss_classification"]) * 1.5)
    jl = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert jl == res.history
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert (tmp_path / "loss_curve.png").stat().st_size > 1000


def test_nonfinite_loss_stops_with_the_step(tmp_path) -> None:
    data = [(torch.rand(3, 4, 4), {"boxes": torch.zeros(0, 4)}) for _ in range(8)]
    with pytest.raises(FloatingPointError, match="at step 3"):
        train(Toy(nan_at=3), data, _cfg(tmp_path, iterations=4))


def test_gradient_clipping_bounds_the_update(tmp_path) -> None:
    data = [(torch.full((3, 4, 4), 5.0), {"boxes": torch.zeros(0, 4)}) for _ in range(2)]
    kw = dict(iterations=1, lr=1.0, momentum=0.0, weight_decay=0.0, hflip=0.0)
    clipped, free = Toy(), Toy()
    train(clipped, data, _cfg(tmp_path / "a", clip_grad_norm=1e-3, **kw))
    train(free, data, _cfg(tmp_path / "b", **kw))
    assert float((clipped.w.detach() - 1).norm()) == pytest.approx(1e-3, rel=1e-3)
    assert float((free.w.detach() - 1).norm()) > 1.0


def test_amp_bfloat16_autocast_trains_the_real_model(tmp_path) -> None:
    data = SyntheticShapes(num_images=4, image_size=32, seed=1, max_objects=2)
    model = _tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = train(model, data, _cfg(tmp_path, iterations=2, amp=True, optimizer="adamw", lr=1e-3))
    assert all(np.isfinite(r["loss"]) for r in res.history)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32


def test_train_rejects_a_dataset_smaller_than_the_batch(tmp_path) -> None:
    with pytest.raises(ValueError, match="at least batch_size"):
        train(Toy(), [(torch.zeros(3, 2, 2), {"boxes": torch.zeros(0, 4)})], _cfg(tmp_path))
    with pytest.raises(TypeError, match="config must be a TrainConfig"):
        train(Toy(), [], {"iterations": 1})  # type: ignore[arg-type]


def test_time_limit_stops_early_with_a_checkpoint(tmp_path) -> None:
    data = [(torch.rand(3, 4, 4), {"boxes": torch.zeros(0, 4)}) for _ in range(8)]
    res = train(Toy(), data, _cfg(tmp_path, iterations=50), time_limit_s=1e-9)
    assert res.step == 1 and [r["step"] for r in res.history] == [1]
    assert load_checkpoint(tmp_path / "checkpoint_last.pt")["step"] == 1
    with pytest.raises(ValueError, match="time_limit_s must be in"):
        train(Toy(), data, _cfg(tmp_path), time_limit_s=0)


def test_data_loader_workers_do_not_change_the_run(tmp_path) -> None:
    data = SyntheticShapes(num_images=8, image_size=32, seed=2)
    a, b = Toy(), Toy()
    train(a, data, _cfg(tmp_path / "a", iterations=3, num_workers=0))
    train(b, data, _cfg(tmp_path / "b", iterations=3, num_workers=2))
    assert torch.equal(a.w, b.w) and not torch.equal(a.w, torch.ones(3))
