"""Tests for focal_detect.boxes.nms / batched_nms: exact greedy NMS, torchvision's
indices and order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import valid_boxes

import focal_detect.boxes as boxes_mod
from focal_detect.boxes import batched_nms, nms

GOLDENS = json.loads((Path(__file__).parent / "data" / "box_goldens.json").read_text())


def reference_nms(boxes: torch.Tensor, scores: torch.Tensor, thr: float) -> list[int]:
    """Plain greedy loop, arithmetic as torchvision's C++ kernel: IoU in the boxes'
    precision, ``inter / (area_i + area_j - inter)`` with unclamped areas, compared
    with the threshold as a double; stable descending sort of the scores."""
    dt = np.float64 if boxes.dtype == torch.float64 else np.float32
    b = boxes.numpy().astype(dt)
    order = torch.sort(scores, descending=True, stable=True)[1].tolist()
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    suppressed = [False] * len(order)
    keep = []
    with np.errstate(invalid="ignore", divide="ignore"):
        for a, i in enumerate(order):
            if suppressed[i]:
                continue
            keep.append(i)
            for j in order[a + 1 :]:
                if suppressed[j]:
                    continue
                w = max(dt(0), min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0]))
                h = max(dt(0), min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1]))
                inter = dt(w * h)
                ovr = inter / dt(area[i] + area[j] - inter)
                if float(ovr) > thr:
                    suppressed[j] = True
    return keep


def reference_batched(boxes, scores, idxs, thr) -> list[int]:
    kept = []
    for c in torch.unique(idxs).tolist():
        members = torch.where(idxs == c)[0]
        kept += members[reference_nms(boxes[members], scores[members], thr)].tolist()
    kept.sort()
    kept.sort(key=lambda i: -scores[i].item())  # stable: ties by index
    return kept


def grid_case(g: torch.Generator, n: int, grid: int = 12):
    xy = torch.randint(0, grid, (n, 2), generator=g).float()
    wh = torch.randint(-2, 8, (n, 2), generator=g).float()  # zero-area and degenerate too
    scores = torch.randint(0, 5, (n,), generator=g).float()  # many ties
    idxs = torch.randint(0, 4, (n,), generator=g)
    return torch.cat([xy, xy + wh], 1), scores, idxs


@pytest.fixture
def small_blocks(monkeypatch):
    """Force the blocked path (blocks of 3 columns) on small inputs."""
    monkeypatch.setattr(boxes_mod, "_NMS_DENSE_ELEMENTS", 0)
    monkeypatch.setattr(boxes_mod, "_NMS_BLOCK", 3)


# ----------------------------------------------------------------- closed forms


def test_nms_closed_form():
    b = torch.tensor(
        [[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [0.0, 0.0, 10.0, 5.0], [20.0, 20.0, 30.0, 30.0]]
    )
    s = torch.tensor([0.9, 0.8, 0.95, 0.7])
    # 2 (0.95) keeps; 0 has IoU 0.5 with 2, not > 0.5: kept; 1 overlaps 0 by 81/119.
    assert nms(b, s, 0.5).tolist() == [2, 0, 3]
    assert nms(b, s, 0.49).tolist() == [2, 1, 3]  # 0 suppressed by 2, so 1 survives
    assert nms(b, s, 1.0).tolist() == [2, 0, 1, 3]


def test_ties_keep_the_lower_index_first():
    b = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 3)
    s = torch.ones(3)
    assert nms(b, s, 0.5).tolist() == [0]
    assert batched_nms(b, s, torch.tensor([1, 0, 1]), 0.5).tolist() == [0, 1]


def test_threshold_is_compared_as_torchvision_does_in_double():
    # IoU exactly 3/10: in float32 it is 0.30000001 > 0.3 (double) -> suppressed, as
    # torchvision's kernel; a float32-rounded threshold would keep it.
    b = torch.tensor([[0.0, 0.0, 10.0, 1.0], [0.0, 0.0, 3.0, 1.0]])
    s = torch.tensor([1.0, 0.5])
    assert nms(b, s, 0.3).tolist() == [0]
    assert nms(b.double(), s.double(), 0.3).tolist() == [0, 1]  # exact in float64
    assert reference_nms(b, s, 0.3) == [0]


def test_zero_area_boxes_never_suppress_each_other():
    p = torch.tensor([[5.0, 5.0, 5.0, 5.0]] * 3 + [[4.0, 4.0, 2.0, 2.0]] * 2)
    s = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])
    assert nms(p, s, 0.0).tolist() == [4, 3, 2, 1, 0]  # 0/0 is NaN, never > threshold


def test_boxes_requiring_grad_are_accepted():
    b = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0]], requires_grad=True)
    s = torch.tensor([0.5, 0.9], requires_grad=True)
    assert nms(b, s, 0.5).tolist() == [1]
    assert batched_nms(b, s, torch.tensor([0, 1]), 0.5).tolist() == [1, 0]


def test_empty_input_returns_empty_int64():
    for out in (
        nms(torch.zeros(0, 4), torch.zeros(0), 0.5),
        batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5),
    ):
        assert out.dtype == torch.int64 and out.shape == (0,)


def test_nan_scores_come_last_and_never_suppress_a_scored_box():
    # 0.1.0 sorted NaN first (as torch.sort): box 1 suppressed box 0 -> [1, 2].
    b = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],
            [0.0, 0.0, 10.0, 10.0],
            [50.0, 50.0, 60.0, 60.0],
            [50.0, 50.0, 60.0, 60.0],
            [80.0, 80.0, 90.0, 90.0],
        ]
    )
    nan, inf = float("nan"), float("inf")
    s = torch.tensor([0.9, nan, 0.5, -inf, nan])
    # box 3 (-inf) is suppressed by box 2; box 1 (NaN) by box 0; box 4 (NaN) kept, last
    assert nms(b, s, 0.5).tolist() == [0, 2, 4]
    s2 = torch.tensor([nan, 0.9, nan, -inf, 0.1])  # NaN boxes 0 and 2 come after -inf
    assert nms(b, s2, 0.5).tolist() == [1, 4, 3]
    assert batched_nms(b, s2, torch.zeros(5, dtype=torch.long), 0.5).tolist() == [1, 4, 3]
    assert batched_nms(b, s2, torch.tensor([0, 0, 1, 1, 0]), 0.5).tolist() == [1, 4, 3]
    assert batched_nms(b, s2, torch.tensor([0, 1, 1, 0, 0]), 0.5).tolist() == [1, 4, 3, 0, 2]


def test_boxes_with_nan_coordinates_never_suppress_nor_are_suppressed():
    nan = float("nan")
    b = torch.tensor([[0.0, 0.0, nan, 10.0], [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    s = torch.tensor([0.9, 0.8, 0.7])
    assert nms(b, s, 0.5).tolist() == [0, 1]
    assert batched_nms(b, s, torch.tensor([3, 3, 3]), 0.5).tolist() == [0, 1]


def test_half_precision_boxes_give_the_float32_result():
    g = torch.Generator().manual_seed(3)
    b, s, i = grid_case(g, 60)
    for dtype in (torch.float16, torch.bfloat16):
        assert torch.equal(nms(b.to(dtype), s.to(dtype), 0.5), nms(b, s.to(dtype), 0.5))
        assert torch.equal(batched_nms(b.to(dtype), s, i, 0.5), batched_nms(b, s, i, 0.5))


def test_long_suppression_chain_is_exact(small_blocks):
    # Each box overlaps only its neighbours: the greedy result alternates, the worst
    # case for the fixed-point iteration (one box decided per step).
    n = 40
    x = torch.arange(n, dtype=torch.float32) * 6
    b = torch.stack([x, torch.zeros(n), x + 10, torch.ones(n)], 1)
    s = torch.linspace(1, 0, n)
    assert nms(b, s, 0.1).tolist() == list(range(0, n, 2))


def test_long_chain_in_one_block_splits_and_stays_exact(monkeypatch):
    monkeypatch.setattr(boxes_mod, "_NMS_TRIES", 2)
    monkeypatch.setattr(boxes_mod, "_NMS_LEAF", 4)
    n = 101
    x = torch.arange(n, dtype=torch.float64) * 6
    b = torch.stack([x, torch.zeros(n), x + 10, torch.ones(n)], 1)
    s = torch.linspace(1, 0, n, dtype=torch.float64)
    idxs = torch.arange(n) % 2  # two interleaved classes: no overlaps within a class
    assert nms(b, s, 0.1).tolist() == list(range(0, n, 2))
    assert batched_nms(b, s, idxs, 0.1).tolist() == list(range(n))


# ---------------------------------------------------------------------- goldens


@pytest.mark.parametrize("case", range(len(GOLDENS["nms"])))
def test_matches_torchvision_goldens(case):
    g = GOLDENS["nms"][case]  # torchvision 0.29.1 ops.nms / ops.batched_nms
    b, s = torch.tensor(g["boxes"]), torch.tensor(g["scores"])
    i, thr = torch.tensor(g["idxs"]), g["iou_threshold"]
    assert nms(b, s, thr).tolist() == g["nms"]
    assert batched_nms(b, s, i, thr).tolist() == g["batched_nms"]


# ------------------------------------------------------- reference greedy loop


@st.composite
def nms_inputs(draw, max_n=25):
    b = draw(valid_boxes(max_n=max_n, max_coord=draw(st.sampled_from([8.0, 100.0]))))
    n = b.shape[0]
    degenerate = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    b[torch.tensor(degenerate, dtype=torch.bool), 2] -= 3  # some x2 < x1
    s = torch.tensor(draw(st.lists(st.integers(0, 4), min_size=n, max_size=n)), dtype=torch.float32).reshape(
        n
    )
    i = torch.tensor(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), dtype=torch.int64).reshape(n)
    thr = draw(st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.7, 1.0]))
    return b, s, i, thr


@given(inp=nms_inputs())
def test_nms_equals_reference_greedy_loop(inp):
    b, s, i, thr = inp
    assert nms(b, s, thr).tolist() == reference_nms(b, s, thr)
    assert batched_nms(b, s, i, thr).tolist() == reference_batched(b, s, i, thr)


@given(inp=nms_inputs())
def test_blocked_path_equals_reference_greedy_loop(inp):
    b, s, i, thr = inp
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(boxes_mod, "_NMS_DENSE_ELEMENTS", 0)
        mp.setattr(boxes_mod, "_NMS_BLOCK", 8)  # blocks of 8 columns,
        mp.setattr(boxes_mod, "_NMS_TRIES", 1)  # split after one step,
        mp.setattr(boxes_mod, "_NMS_LEAF", 2)  # down to halves of 2
        assert nms(b, s, thr).tolist() == reference_nms(b, s, thr)
        assert batched_nms(b, s, i, thr).tolist() == reference_batched(b, s, i, thr)


@given(inp=nms_inputs())
def test_kept_boxes_do_not_overlap_and_every_removed_box_is_covered(inp):
    b, s, _, thr = inp
    keep = nms(b, s, thr)
    # float32 IoU compared with the double threshold, as the kernel does
    iou = boxes_mod.box_iou(b, b).double()
    if keep.numel() > 1:
        sub = iou[keep][:, keep]
        assert (sub.triu(1) <= thr).all()
    removed = torch.ones(b.shape[0], dtype=torch.bool)
    removed[keep] = False
    for j in torch.where(removed)[0]:
        assert (iou[keep, j] > thr).any()


# ---------------------------------------------------------------------- errors


def test_bad_inputs_raise_naming_the_argument():
    b, s, i = torch.zeros(3, 4), torch.zeros(3), torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match=r"nms: boxes must have shape \(N, 4\)"):
        nms(torch.zeros(3, 5), s, 0.5)
    with pytest.raises(ValueError, match=r"nms: scores must have shape \(N,\) with N = 3"):
        nms(b, torch.zeros(4), 0.5)
    with pytest.raises(TypeError, match="nms: iou_threshold must be a real number"):
        nms(b, s, "0.5")
    with pytest.raises(TypeError, match="nms: scores must be a torch.Tensor"):
        nms(b, [0.0, 0.0, 0.0], 0.5)
    with pytest.raises(ValueError, match=r"batched_nms: idxs must have shape \(N,\)"):
        batched_nms(b, s, torch.zeros(2, dtype=torch.long), 0.5)
    with pytest.raises(TypeError, match="batched_nms: idxs must be an integer tensor"):
        batched_nms(b, s, i.float(), 0.5)
    with pytest.raises(ValueError, match="batched_nms: iou_threshold must be in"):
        batched_nms(b, s, i, float("nan"))


# ---------------------------------------------------- live parity (optional)


def test_live_parity_with_torchvision_ties_and_degenerate_boxes():
    tv = pytest.importorskip("torchvision")
    g = torch.Generator().manual_seed(7)
    for k in range(40):
        b, s, i = grid_case(g, [10, 50, 200, 900][k % 4], grid=[6, 12, 30][k % 3])
        thr = [0.0, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0][k % 7]
        assert torch.equal(nms(b, s, thr), tv.ops.nms(b, s, thr)), k
        # < 1000 boxes: torchvision's offset path, stable order -> identical
        assert torch.equal(batched_nms(b, s, i, thr), tv.ops.batched_nms(b, s, i, thr)), k


def test_live_parity_with_torchvision_large_batched():
    tv = pytest.importorskip("torchvision")
    g = torch.Generator().manual_seed(8)
    n = 3000
    wh = torch.rand(n, 2, generator=g) * 100 + 4
    xy = torch.rand(n, 2, generator=g) * 500
    b = torch.cat([xy, xy + wh], 1)
    s = torch.randint(0, 50, (n,), generator=g).float()  # ties across classes
    i = torch.randint(0, 20, (n,), generator=g)
    ours, ref = batched_nms(b, s, i, 0.5), tv.ops.batched_nms(b, s, i, 0.5)
    # torchvision's per-class path (> 1000 boxes) orders equal scores with an
    # unstable sort; the kept set and the score sequence are identical.
    assert torch.equal(torch.sort(ours)[0], torch.sort(ref)[0])
    assert torch.equal(s[ours], s[ref])
    assert torch.equal(nms(b, s, 0.5), tv.ops.nms(b, s, 0.5))
    # skewed classes: one class of 2500 boxes (blocked path, tiers of short classes)
    i[:2500] = 0
    ours, ref = batched_nms(b, s, i, 0.5), tv.ops.batched_nms(b, s, i, 0.5)
    assert torch.equal(torch.sort(ours)[0], torch.sort(ref)[0])
    assert torch.equal(s[ours], s[ref])
