"""Tests for focal_detect.boxes (areas, IoU, GIoU, conversions, clipping)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import box_batches, box_pairs, valid_boxes

from focal_detect.boxes import (
    box_area,
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    clip_boxes,
    generalized_box_iou,
    remove_small_boxes,
)

GOLDENS = json.loads((Path(__file__).parent / "data" / "box_goldens.json").read_text())


def t(x, dtype=torch.float32):
    return torch.tensor(x, dtype=dtype)


# ----------------------------------------------------------------- closed forms


def test_box_area_closed_form():
    assert box_area(t([[1.0, 2.0, 4.0, 7.0], [0.0, 0.0, 0.0, 5.0]])).tolist() == [15.0, 0.0]


def test_box_area_half_is_float32_and_does_not_overflow():
    # 800 * 800 = 640000 > 65504, the largest float16.
    area = box_area(t([[0.0, 0.0, 800.0, 800.0]], torch.float16))
    assert area.dtype == torch.float32
    assert area.item() == 640000.0


def test_box_iou_closed_form():
    a = t([[0.0, 0.0, 2.0, 2.0]])
    b = t([[1.0, 0.0, 3.0, 2.0], [0.0, 0.0, 1.0, 1.0], [2.0, 0.0, 4.0, 2.0]])
    # inter 2 / union 6; inter 1 / union 4; touching edges: 0
    torch.testing.assert_close(box_iou(a, b), t([[1 / 3, 1 / 4, 0.0]]))


def test_box_iou_zero_area_and_degenerate_boxes_are_zero_not_nan():
    pts = t([[5.0, 5.0, 5.0, 5.0], [5.0, 5.0, 5.0, 5.0], [1.0, 1.0, 1.0, 9.0]])
    deg = t([[4.0, 4.0, 2.0, 2.0], [3.0, 0.0, 1.0, 9.0]])  # x2 < x1
    good = t([[0.0, 0.0, 10.0, 10.0]])
    for x, y in [(pts, pts), (deg, deg), (deg, good), (pts, good), (deg, pts)]:
        iou = box_iou(x, y)
        assert torch.isfinite(iou).all()
        assert (iou == 0).all(), iou
        assert not torch.signbit(iou).any()  # no -0.0 either
        assert torch.isfinite(generalized_box_iou(x, y)).all()


def test_autograd_and_inplace_paths_agree():
    # box_iou reuses its temporaries unless autograd needs them: same values both ways
    g = torch.Generator().manual_seed(5)
    a = torch.randint(0, 10, (30, 4), generator=g).float()  # valid, zero-area, degenerate
    b = torch.randint(0, 10, (20, 4), generator=g).float()
    plain = box_iou(a, b)
    tracked = box_iou(a.clone().requires_grad_(), b)
    assert torch.equal(plain, tracked.detach())
    assert not torch.signbit(plain).any() and torch.isfinite(plain).all()


def test_generalized_box_iou_closed_form():
    a = t([[0.0, 0.0, 1.0, 1.0]])
    b = t([[2.0, 0.0, 3.0, 1.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
    # disjoint: 0 - (3 - 2) / 3; identical: 1; contained: 1/4 - 0
    torch.testing.assert_close(generalized_box_iou(a, b), t([[-1 / 3, 1.0, 0.25]]))


def test_generalized_box_iou_of_identical_points_is_zero():
    p = t([[3.0, 3.0, 3.0, 3.0]])
    assert generalized_box_iou(p, p).item() == 0.0


def test_conversions_closed_form_and_round_trip():
    xyxy = t([[1.0, 2.0, 5.0, 10.0]])
    cxcywh = box_xyxy_to_cxcywh(xyxy)
    assert cxcywh.tolist() == [[3.0, 6.0, 4.0, 8.0]]
    assert box_cxcywh_to_xyxy(cxcywh).tolist() == xyxy.tolist()
    # arbitrary leading dimensions
    assert box_xyxy_to_cxcywh(xyxy.expand(2, 3, 1, 4)).shape == (2, 3, 1, 4)


def test_clip_boxes_uses_height_then_width():
    boxes = t([[-5.0, -1.0, 30.0, 40.0], [2.0, 3.0, 4.0, 5.0]])
    out = clip_boxes(boxes, (20, 10))  # height 20, width 10
    assert out.tolist() == [[0.0, 0.0, 10.0, 20.0], [2.0, 3.0, 4.0, 5.0]]
    assert clip_boxes(boxes[None], (20, 10)).shape == (1, 2, 4)


def test_remove_small_boxes_keeps_both_sides_at_least_min_size():
    boxes = t([[0, 0, 5, 5], [0, 0, 0.5, 9], [1, 1, 2, 2], [3, 3, 1, 9], [0, 0, 9, 0.99]])
    assert remove_small_boxes(boxes, 1.0).tolist() == [0, 2]
    assert remove_small_boxes(boxes, 0.0).tolist() == [0, 1, 2, 4]  # degenerate removed
    assert remove_small_boxes(boxes, 0.0).dtype == torch.int64


# ---------------------------------------------------------------------- goldens


def test_iou_matches_torchvision_goldens_bit_for_bit():
    g = GOLDENS["iou"]  # torchvision 0.29.1 ops.box_iou / generalized_box_iou / box_area
    a, b = t(g["boxes1"]), t(g["boxes2"])
    assert torch.equal(box_iou(a, b), t(g["box_iou"]))
    assert torch.equal(generalized_box_iou(a, b), t(g["generalized_box_iou"]))
    assert torch.equal(box_area(a), t(g["box_area"]))
    assert box_iou(a, b)[0, 0].item() == 1.0  # the identical pair


# ------------------------------------------------------------------ batched


def test_batched_iou_equals_per_image_and_broadcasts():
    torch.manual_seed(0)
    a = torch.rand(3, 5, 4) * 50
    a[..., 2:] += a[..., :2]
    b = torch.rand(3, 4, 4) * 50
    b[..., 2:] += b[..., :2]
    for fn in (box_iou, generalized_box_iou):
        out = fn(a, b)
        assert out.shape == (3, 5, 4)
        for i in range(3):
            assert torch.equal(out[i], fn(a[i], b[i]))
        # a 2-D argument is broadcast against a batched one
        assert torch.equal(fn(a[0], b), torch.stack([fn(a[0], b[i]) for i in range(3)]))


@given(batch=box_batches(), other=box_batches(max_b=1))
def test_batched_iou_equals_loop_hypothesis(batch, other):
    other = other.expand(batch.shape[0], -1, -1)
    out = box_iou(batch, other)
    for i in range(batch.shape[0]):
        assert torch.equal(out[i], box_iou(batch[i], other[i]))


# --------------------------------------------------------------- properties


@given(pair=box_pairs())
def test_box_iou_is_symmetric_and_bounded(pair):
    a, b = pair
    iou = box_iou(a, b)
    assert iou.shape == (a.shape[0], b.shape[0])
    assert torch.equal(iou, box_iou(b, a).T)
    assert ((iou >= 0) & (iou <= 1)).all()


@given(boxes=valid_boxes(min_n=1, allow_zero_area=False))
def test_box_iou_of_a_box_with_itself_is_one(boxes):
    assert (torch.diagonal(box_iou(boxes, boxes)) == 1).all()
    assert (torch.diagonal(generalized_box_iou(boxes, boxes)) == 1).all()


@given(pair=box_pairs())
def test_giou_is_bounded_and_below_iou(pair):
    a, b = pair
    giou, iou = generalized_box_iou(a, b), box_iou(a, b)
    assert torch.isfinite(giou).all()
    assert ((giou >= -1) & (giou <= iou + 1e-6)).all()


@given(boxes=valid_boxes(dtype=torch.float64), h=st.integers(0, 1000), w=st.integers(0, 1000))
def test_clip_boxes_stays_inside_and_is_idempotent(boxes, h, w):
    c = clip_boxes(boxes, (h, w))
    assert (c[:, 0::2] <= w).all() and (c[:, 1::2] <= h).all() and (c >= 0).all()
    assert torch.equal(clip_boxes(c, (h, w)), c)


def test_half_precision_is_computed_in_float32():
    a = t([[0.0, 0.0, 800.0, 800.0], [100.0, 100.0, 700.0, 900.0]])
    for dtype in (torch.float16, torch.bfloat16):
        out = box_iou(a.to(dtype), a.to(dtype))
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, box_iou(a, a))  # coordinates exact in both


def test_gradcheck_iou_and_giou():
    a = torch.tensor([[0.0, 0.0, 2.0, 3.0], [1.0, 1.0, 4.0, 2.5]], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([[0.5, 0.2, 2.5, 2.0], [3.0, 3.0, 6.0, 7.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(box_iou, (a, b))
    assert torch.autograd.gradcheck(generalized_box_iou, (a, b))


# ---------------------------------------------------------------------- errors


def test_bad_inputs_raise_naming_the_argument():
    good = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="box_iou: boxes2 must have shape"):
        box_iou(good, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="box_iou: boxes2 must have the same batch size"):
        box_iou(torch.zeros(2, 3, 4), torch.zeros(3, 3, 4))
    with pytest.raises(TypeError, match="box_iou: boxes1 must be a torch.Tensor"):
        box_iou([[0, 0, 1, 1]], good)
    with pytest.raises(TypeError, match="generalized_box_iou: boxes1 must be a floating-point"):
        generalized_box_iou(torch.zeros(2, 4, dtype=torch.int64), good)
    with pytest.raises(ValueError, match=r"box_area: boxes must have shape \(\.\.\., 4\)"):
        box_area(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="clip_boxes: size must be a pair"):
        clip_boxes(good, 10)
    with pytest.raises(ValueError, match="clip_boxes: size"):
        clip_boxes(good, (-1, 10))
    with pytest.raises(ValueError, match="remove_small_boxes: min_size must be in"):
        remove_small_boxes(good, -1.0)
    with pytest.raises(ValueError, match=r"remove_small_boxes: boxes must have shape \(N, 4\)"):
        remove_small_boxes(torch.zeros(1, 2, 4), 1.0)


# ---------------------------------------------------- live parity (optional)


def test_live_parity_with_torchvision():
    tv = pytest.importorskip("torchvision")
    g = torch.Generator().manual_seed(1)
    a = torch.rand(60, 4, generator=g) * 300
    a[:, 2:] += a[:, :2] + 0.01
    b = torch.rand(50, 4, generator=g) * 300
    b[:, 2:] += b[:, :2] + 0.01
    assert torch.equal(box_iou(a, b), tv.ops.box_iou(a, b))
    assert torch.equal(generalized_box_iou(a, b), tv.ops.generalized_box_iou(a, b))
    assert torch.equal(box_area(a), tv.ops.box_area(a))
    assert torch.equal(clip_boxes(a, (200, 150)), tv.ops.clip_boxes_to_image(a, (200, 150)))
    assert torch.equal(remove_small_boxes(a, 40.0), tv.ops.remove_small_boxes(a, 40.0))
    assert torch.equal(box_xyxy_to_cxcywh(a), tv.ops.box_convert(a, "xyxy", "cxcywh"))
    assert torch.equal(box_cxcywh_to_xyxy(a), tv.ops.box_convert(a, "cxcywh", "xyxy"))
