"""FocalLossNormalizer: EMA arithmetic, state_dict, no host sync, distributed mean."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist

from focal_detect.losses import FocalLossNormalizer


def test_raw_count_clamped_to_one() -> None:
    norm = FocalLossNormalizer()
    assert norm(torch.tensor(37)).item() == 37.0
    assert norm(torch.tensor(0)).item() == 1.0
    assert norm(torch.tensor([3, 4])).item() == 7.0  # per-image counts are summed
    out = norm(torch.tensor(5))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.ndim == 0


def test_ema_matches_hand_computation() -> None:
    norm = FocalLossNormalizer(momentum=0.9, initial=100.0)
    ema = 100.0
    for n in (10, 0, 250, 3):
        ema = 0.9 * ema + 0.1 * max(n, 1)
        got = norm(torch.tensor(n))
        assert got.item() == pytest.approx(ema, rel=1e-6)
    assert norm.running_count.item() == pytest.approx(ema, rel=1e-6)


def test_eval_mode_does_not_update_the_average() -> None:
    norm = FocalLossNormalizer(momentum=0.5, initial=10.0).eval()
    assert norm(torch.tensor(30)).item() == 20.0
    assert norm.running_count.item() == 10.0


def test_state_dict_round_trip() -> None:
    a = FocalLossNormalizer(momentum=0.8, initial=50.0)
    for n in (5, 7, 9):
        a(torch.tensor(n))
    sd = a.state_dict()
    assert "running_count" in sd
    b = FocalLossNormalizer(momentum=0.8, initial=1.0)
    b.load_state_dict(sd)
    torch.testing.assert_close(b(torch.tensor(4)), a(torch.tensor(4)))


def test_no_host_sync(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("host synchronisation in FocalLossNormalizer")

    norm = FocalLossNormalizer(momentum=0.9)
    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, boom)
    out = norm(torch.tensor(12))
    monkeypatch.undo()
    assert out.item() == pytest.approx(0.9 * 100 + 0.1 * 12)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="momentum"):
        FocalLossNormalizer(momentum=1.0)
    with pytest.raises(ValueError, match="initial"):
        FocalLossNormalizer(initial=0.5)
    with pytest.raises(TypeError, match="num_foreground"):
        FocalLossNormalizer()(3)  # type: ignore[arg-type]


def test_distributed_mean_of_counts_arithmetic(monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulate 3 workers: the other two report 10 and 40 foreground anchors.
    calls = []

    def fake_all_reduce(t, op=None):
        calls.append(op)
        t.add_(50.0)

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "all_reduce", fake_all_reduce)
    monkeypatch.setattr(dist, "get_world_size", lambda *a, **k: 3)
    assert FocalLossNormalizer(distributed=True)(torch.tensor(6)).item() == pytest.approx(56 / 3)
    assert calls == [dist.ReduceOp.SUM]
    # not requested: no all-reduce
    assert FocalLossNormalizer()(torch.tensor(6)).item() == 6.0
    assert len(calls) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
def test_distributed_gloo_single_process_group() -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        norm = FocalLossNormalizer(momentum=0.5, initial=4.0, distributed=True)
        count = torch.tensor(8)
        assert norm(count).item() == 6.0  # 0.5 * 4 + 0.5 * 8
        assert count.item() == 8  # the caller's tensor is not modified in place
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_compiles_fullgraph_without_graph_break() -> None:
    torch._dynamo.reset()
    norm = FocalLossNormalizer(momentum=0.9, initial=100.0)
    f = torch.compile(norm, fullgraph=True, backend="eager")
    assert f(torch.tensor(10)).item() == pytest.approx(91.0)
    assert norm.running_count.item() == pytest.approx(91.0)
