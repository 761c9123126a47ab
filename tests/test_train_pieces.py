"""focal_detect.engine's pieces: the schedule, the checkpointer, the metric window, and the
host-sync policy of the training step (counted, so it cannot silently regress)."""

from __future__ import annotations

import os
import sys

import pytest
import torch
from torch import nn

from focal_detect.engine import (
    Checkpointer,
    MetricWindow,
    TrainConfig,
    load_checkpoint,
    make_scheduler,
    train,
)

ENGINE_DIR = os.path.dirname(sys.modules["focal_detect.engine"].__file__ or "")


class Toy(nn.Module):
    """A stand-in detector that reads nothing from its tensors (no host sync of its own)."""

    def __init__(self, nan_at: int | None = None) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))
        self.calls = 0
        self.nan_at = nan_at

    def forward(self, images, targets):
        self.calls += 1
        x = torch.stack([im.mean(dim=(1, 2)) for im in images])
        loss = ((x - self.w) ** 2).sum()
        if self.nan_at is not None and self.calls >= self.nan_at:
            loss = loss * float("nan")
        return {"classification": loss, "box": 0.5 * loss}


DATA = [
    (torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(i)), {"boxes": torch.zeros(0, 4)})
    for i in range(8)
]


def _cfg(out, **kw) -> TrainConfig:
    base = dict(
        iterations=8,
        batch_size=2,
        lr=0.01,
        warmup_iters=0,
        progress=False,
        output_dir=str(out),
        log_every=4,
        checkpoint_every=0,
        hflip=0.0,
    )
    base.update(kw)
    return TrainConfig(**base)


# ------------------------------------------------------------------------------ schedule


def test_scheduler_warms_up_linearly_then_decays_at_the_milestones() -> None:
    cfg = TrainConfig(iterations=90, warmup_iters=10, warmup_factor=0.2, milestones=(0.5, 0.8))
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = make_scheduler(opt, cfg)
    lrs = []
    for _ in range(90):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # warmup: 0.2 -> 1.0 in equal increments over 10 steps
    assert lrs[:11] == pytest.approx([0.2 + 0.08 * t for t in range(10)] + [1.0])
    assert set(lrs[10:45]) == {1.0}
    assert cfg.milestone_steps == (45, 72)
    assert lrs[45:72] == pytest.approx([0.1] * 27) and lrs[72:] == pytest.approx([0.01] * 18)
    cos = make_scheduler(
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0),
        TrainConfig(iterations=4, warmup_iters=0, schedule="cosine"),
    )
    assert [cos.lr_lambdas[0](t) for t in range(5)] == pytest.approx([1.0, 0.8535534, 0.5, 0.1464466, 0.0])


# ---------------------------------------------------------------------------- checkpointer


def _parts():
    net = nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0)
    return net, opt, sched


def test_checkpointer_keeps_one_file_replaced_at_each_due_step(tmp_path) -> None:
    path = tmp_path / "checkpoint_last.pt"
    ck = Checkpointer(path, seed=3, global_batch=2, steps_per_epoch=4, every=3, extra={"note": "x"})
    assert [t for t in range(1, 11) if ck.due(t, stop=10)] == [3, 6, 9, 10]
    assert [
        t for t in range(1, 6) if Checkpointer(path, seed=0, global_batch=1, steps_per_epoch=1).due(t, 5)
    ] == [5]
    net, opt, sched = _parts()
    assert ck.last is None and not ck.exists()
    for step in (3, 6):
        with torch.no_grad():
            net.weight.add_(1.0)
        assert ck.save(step, net, opt, sched, [{"step": step}]) == str(path)
        assert sorted(os.listdir(tmp_path)) == ["checkpoint_last.pt"]  # one file, no temporaries
    saved = load_checkpoint(path)
    assert saved["step"] == 6 and saved["history"] == [{"step": 6}] and saved["note"] == "x"
    assert torch.equal(saved["model"]["weight"], net.weight.detach())
    assert saved["data"] == {"seed": 3, "global_batch": 2, "steps_per_epoch": 4}
    fresh, opt2, sched2 = _parts()
    assert ck.restore(fresh, opt2, sched2) == (6, [{"step": 6}])
    assert torch.equal(fresh.weight, net.weight)
    # A run with another seed cannot continue this one: nothing is loaded.
    other = Checkpointer(path, seed=4, global_batch=2, steps_per_epoch=4)
    untouched, opt3, sched3 = _parts()
    before = untouched.weight.detach().clone()
    with pytest.raises(ValueError, match="global batch 2 and seed 3, this run 2 and 4"):
        other.restore(untouched, opt3, sched3)
    assert torch.equal(untouched.weight, before)
    with pytest.raises(ValueError, match="Checkpointer: every must be in"):
        Checkpointer(path, seed=0, global_batch=1, steps_per_epoch=1, every=-1)


def test_checkpointer_on_a_nonzero_rank_writes_nothing(tmp_path) -> None:
    ck = Checkpointer(tmp_path / "c.pt", seed=0, global_batch=1, steps_per_epoch=1, rank=1)
    net, opt, sched = _parts()
    assert ck.save(1, net, opt, sched, []) is None and ck.last is None
    assert os.listdir(tmp_path) == []


# -------------------------------------------------------------------------- metric window


def test_metric_window_averages_since_the_last_read_and_reads_once(monkeypatch) -> None:
    w = MetricWindow()
    reads = []
    original = torch.Tensor.tolist

    def counting_tolist(self):
        reads.append(1)
        return original(self)

    monkeypatch.setattr(torch.Tensor, "tolist", counting_tolist)
    for v in (1.0, 2.0, 6.0):
        w.add({"loss": torch.tensor(v), "loss_box": torch.tensor(v / 2, dtype=torch.bfloat16)})
    assert reads == [] and len(w) == 3
    assert w.read() == {"loss": 3.0, "loss_box": 1.5}
    assert reads == [1] and len(w) == 0 and w.read() == {}
    # A key that appears later counts as 0 at the steps without it.
    w.add({"loss": torch.tensor(1.0)})
    w.add({"loss": torch.tensor(3.0), "grad_norm": torch.tensor(4.0)})
    assert w.read() == {"grad_norm": 2.0, "loss": 2.0}
    w.add({"loss": torch.tensor(float("inf"))})
    assert not w.all_finite()


def test_metric_window_sums_in_float64_like_python_floats() -> None:
    values = [torch.tensor(x, dtype=torch.float32) for x in (0.1, 1e8, 0.3, 1e-8)]
    w = MetricWindow()
    for v in values:
        w.add({"loss": v})
    assert w.read()["loss"] == sum(float(v) for v in values) / 4  # bit-identical to 0.1.0's log


# -------------------------------------------------------------------------- host syncs


SYNC_METHODS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy", "cpu")


def _count_engine_syncs(monkeypatch) -> dict[str, int]:
    """Count the tensor reads issued by the engine's step and metric code."""
    counts = {name: 0 for name in SYNC_METHODS}
    watched = {os.path.join(ENGINE_DIR, f) for f in ("loop.py", "metrics.py")}
    for name in SYNC_METHODS:
        original = getattr(torch.Tensor, name)

        def counted(self, *a, __name=name, __original=original, **k):
            if sys._getframe(1).f_code.co_filename in watched:
                counts[__name] += 1
            return __original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return counts


@pytest.mark.parametrize(("check", "per_step"), [("step", 1), ("window", 0)])
def test_a_step_costs_the_engine_one_host_sync_or_none(tmp_path, monkeypatch, check, per_step) -> None:
    counts = _count_engine_syncs(monkeypatch)
    res = train(Toy(), DATA, _cfg(tmp_path, nonfinite_check=check, clip_grad_norm=1.0))
    monkeypatch.undo()
    assert res.step == 8 and [r["step"] for r in res.history] == [4, 8]
    reads = 2  # one per log_every = 4 steps
    assert counts["tolist"] == reads
    assert counts["__bool__"] == 8 * per_step
    assert sum(counts.values()) == reads + 8 * per_step, counts
    assert {"grad_norm", "loss", "loss_classification", "loss_box"} <= set(res.history[0])


def test_window_check_stops_at_the_next_read_without_writing_a_checkpoint(tmp_path) -> None:
    cfg = _cfg(tmp_path, nonfinite_check="window", log_every=4, checkpoint_every=2)
    with pytest.raises(FloatingPointError, match="not finite in steps 5-6"):
        train(Toy(nan_at=6), DATA, cfg)  # the loss turns NaN at step 6: caught before the step-6 checkpoint
    assert load_checkpoint(tmp_path / "checkpoint_last.pt")["step"] == 4
    with pytest.raises(FloatingPointError, match="at step 6"):
        train(Toy(nan_at=6), DATA, _cfg(tmp_path / "b", checkpoint_every=2))
    with pytest.raises(ValueError, match="nonfinite_check must be one of"):
        TrainConfig(nonfinite_check="never")


def test_progress_bar_shows_no_loss_before_the_first_logged_window(tmp_path, monkeypatch) -> None:
    tqdm_auto = pytest.importorskip("tqdm.auto")
    shown: list[dict] = []

    class Recording(tqdm_auto.tqdm):  # type: ignore[misc, name-defined]
        def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
            shown.append(dict(ordered_dict or {}, **kwargs))
            return super().set_postfix(ordered_dict, refresh=refresh, **kwargs)

    monkeypatch.setattr(tqdm_auto, "tqdm", Recording)
    train(Toy(), DATA, _cfg(tmp_path, progress=True))
    assert len(shown) == 8
    assert all("loss" not in p for p in shown[:3]), shown[:3]  # nothing read yet
    assert all(p["loss"] != "nan" for p in shown[3:]) and "loss" in shown[3]  # read at step 4


class Recorder(Toy):
    """Toy that keeps the images of every step (to see the augmentation)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, images, targets):
        self.seen.append(torch.stack([im.detach().clone() for im in images]))
        return super().forward(images, targets)


def test_train_config_augment_switches_the_small_data_augmentation_on(tmp_path) -> None:
    plain, flip_only, jittered = Recorder(), Recorder(), Recorder()
    train(plain, DATA, _cfg(tmp_path / "a"))
    train(flip_only, DATA, _cfg(tmp_path / "b", augment={}))
    train(jittered, DATA, _cfg(tmp_path / "c", augment={"photometric": 0.8, "scale_jitter": [0.6, 1.4]}))
    # {} is the flip alone (here hflip=0): the very same samples as no augment setting.
    assert all(torch.equal(a, b) for a, b in zip(plain.seen, flip_only.seen))
    assert not all(torch.equal(a, c) for a, c in zip(plain.seen, jittered.seen))
    assert all(
        c.shape == a.shape and 0.0 <= float(c.min()) <= float(c.max()) <= 1.0
        for a, c in zip(plain.seen, jittered.seen)
    )
    assert _cfg(tmp_path, augment={"scale_jitter": [0.5, 1.5]}).augment == {"scale_jitter": (0.5, 1.5)}


@pytest.mark.parametrize(
    ("augment", "match"),
    [
        ({"zoom": 2.0}, r"TrainConfig: augment must be valid build_augmentation settings: .*'zoom'"),
        ({"hflip": 0.2}, r"TrainConfig: augment must not set 'hflip'"),
        ({"photometric": 3.0}, r"TrainConfig: augment must be valid .*photometric"),
    ],
)
def test_train_config_rejects_bad_augment_settings(tmp_path, augment, match) -> None:
    with pytest.raises(ValueError, match=match):
        _cfg(tmp_path, augment=augment)
    with pytest.raises(TypeError, match="TrainConfig: augment must be a dict"):
        _cfg(tmp_path, augment=[("photometric", 0.2)])
