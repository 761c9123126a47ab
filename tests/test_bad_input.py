"""Regression tests for bad input that 0.1.0 answered silently or with a bare RuntimeError
(issue 10, section 2): each input gets a clear error naming the argument, or a
documented, safe result."""

from __future__ import annotations

import math

import pytest
import torch

from focal_detect import (
    sigmoid_focal_loss,
    sigmoid_focal_loss_star,
)

NAN = float("nan")


# --------------------------------------------------------------------------- 1. targets


@pytest.mark.parametrize("fn", [sigmoid_focal_loss, sigmoid_focal_loss_star])
@pytest.mark.parametrize(
    ("bad", "shown"),
    [(-1.0, "-1.0"), (2.0, "2.0"), (NAN, "nan"), (1.0 + 2**-20, "1.00000095")],
)
def test_focal_losses_reject_targets_outside_unit_interval(fn, bad, shown):
    x = torch.zeros(4)
    t = torch.tensor([0.0, 1.0, 0.5, bad])
    with pytest.raises(ValueError, match=rf"{fn.__name__}: targets must be in \[0, 1\].*got {shown}"):
        fn(x, t)


def test_focal_loss_suggests_the_conversion_of_plus_minus_one_targets():
    y = torch.tensor([-1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"\(y \+ 1\) / 2"):
        sigmoid_focal_loss(torch.zeros(3), y)
    # ... and the suggested conversion gives the {0, 1} loss, which is positive.
    loss = sigmoid_focal_loss(torch.zeros(3), (y + 1) / 2)
    assert torch.allclose(loss, torch.tensor([0.75, 0.25, 0.25]) * 0.25 * math.log(2))


@pytest.mark.parametrize("fn", [sigmoid_focal_loss, sigmoid_focal_loss_star])
def test_focal_target_check_can_be_switched_off(fn):
    # With the check off the old (meaningless) value comes back unchanged: the switch
    # only skips the reduction, it does not change the kernel.
    x = torch.tensor([0.3, -1.0])
    t = torch.tensor([-1.0, 2.0])
    got = fn(x, t, check_targets=False)
    assert torch.isfinite(got).all()
    if fn is sigmoid_focal_loss:
        from focal_detect.losses._reference import focal_formula as _focal_formula

        assert torch.allclose(got, _focal_formula(x, t, 0.25, 2.0))


def test_focal_target_check_accepts_boundaries_half_and_integer_targets():
    x = torch.zeros(3, dtype=torch.float16)
    for t in (
        torch.tensor([0.0, 1.0, 0.5]).half(),
        torch.tensor([0, 1, 1]),
        torch.tensor([False, True, True]),
    ):
        got = sigmoid_focal_loss(x, t.to(torch.float16) if t.dtype == torch.bool else t)
        assert got.shape == (3,) and (got > 0).all()
    assert sigmoid_focal_loss(torch.zeros(0), torch.zeros(0)).shape == (0,)


# --------------------------------------------------------------------------- 2. matching

from focal_detect import (
    BACKGROUND,
    IGNORE,
    AnchorGenerator,
    Matcher,
    assign_anchors,
    match_anchors,
)


def test_matcher_never_matches_a_nan_iou():
    # 0.1.0 gave [0, -1, 1]: the NaN of anchor 0 won the max, anchor 2's 0.7 was lost.
    q = torch.tensor([[NAN, 0.1, 0.7], [0.6, 0.1, NAN]])
    assert Matcher(0.5, 0.4)(q).tolist() == [IGNORE, BACKGROUND, IGNORE]
    assert Matcher(0.5, 0.4, allow_low_quality_matches=False)(q).tolist() == [IGNORE, BACKGROUND, IGNORE]
    for mode in ("torchvision", "mmdetection"):
        for guard in (0.0, None):
            got = match_anchors(q, low_quality=mode, min_low_quality_iou=guard)
            assert got.tolist() == [IGNORE, BACKGROUND, IGNORE], (mode, guard)


def test_match_anchors_nan_rules_in_a_padded_batch():
    # Image 0: box 0 has a NaN against anchor 1 -> anchor 1 IGNORE; box 0 makes no
    # low-quality match (its best is unknown) but anchor 0's 0.8 match stands.
    # Image 1: the NaN sits in a padding row (valid False) and changes nothing.
    q = torch.tensor(
        [
            [[0.8, NAN, 0.2, 0.0], [0.1, 0.1, 0.3, 0.0]],
            [[0.1, 0.45, 0.2, 0.9], [NAN, NAN, NAN, NAN]],
        ]
    )
    valid = torch.tensor([[True, True], [True, False]])
    got = match_anchors(q, valid)
    # image 0: anchor 2 is box 1's best (0.3) -> low-quality match to its argmax box 1
    assert got.tolist() == [[0, IGNORE, 1, BACKGROUND], [BACKGROUND, IGNORE, BACKGROUND, 0]]
    # the same as the images one by one with the padding row removed
    assert match_anchors(q[1, :1]).tolist() == got[1].tolist()
    assert match_anchors(q[0]).tolist() == got[0].tolist()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_match_anchors_compares_half_quality_in_float32(dtype):
    v = torch.tensor(0.4, dtype=dtype)
    below = torch.nextafter(v, torch.tensor(0.0, dtype=dtype))  # 0.39990234375 in float16
    assert float(below) < 0.4
    q = torch.stack([below, torch.tensor(0.9, dtype=dtype)]).view(1, 2)
    # Rounded to half, 0.4 would equal `below` and give IGNORE.
    assert match_anchors(q).tolist() == [BACKGROUND, 0]
    q2 = torch.stack([v, torch.tensor(0.9, dtype=dtype)]).view(1, 2)
    # float16(0.4) = 0.39990234375 < 0.4 too; bfloat16(0.4) = 0.400390625 >= 0.4
    want = IGNORE if float(v) >= 0.4 else BACKGROUND
    assert match_anchors(q2).tolist() == [want, 0]


def test_assign_anchors_overflowing_boxes_never_match_in_any_path():
    # Finite boxes whose areas overflow float32 would give inf/inf = NaN IoU; they have
    # IoU 0 instead, so such a box matches nothing, the same in the dense, chunked and
    # windowed paths, image by image and batched.
    gen = AnchorGenerator()
    sizes = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    grid = gen(sizes)  # Anchors: the windowed path; grid.boxes: the dense one
    anchors = grid.boxes
    huge = torch.tensor([[0.0, 0.0, 3e38, 3e38]])
    normal = torch.tensor([[10.0, 10.0, 40.0, 50.0]])
    gts = [huge, torch.cat([normal, huge])]
    labels = [torch.tensor([3]), torch.tensor([1, 3])]
    outs = [
        assign_anchors(anchors, gts, labels),
        assign_anchors(anchors, gts, labels, max_memory_bytes=4096),
        assign_anchors(grid, gts, labels),
    ]
    for out in outs:
        assert not (out.matched_gt[0] >= 0).any()
        assert (out.labels[0] == BACKGROUND).all()
        assert (out.matched_gt[1] != 1).all()  # the huge box matches nothing
        assert (out.matched_gt[1] == 0).any()  # the normal one still does
        assert torch.isfinite(out.box_targets).all()
        assert torch.equal(out.labels, outs[0].labels)
    single = assign_anchors(grid, [gts[1]], [labels[1]])
    assert torch.equal(single.labels[0], outs[0].labels[1])


def test_assign_anchors_rejects_nan_boxes():
    anchors = AnchorGenerator()([(2, 2), (1, 1), (1, 1), (1, 1), (1, 1)])
    with pytest.raises(ValueError, match="gt_boxes must be finite"):
        assign_anchors(anchors, [torch.tensor([[0.0, 0.0, NAN, 5.0]])], [torch.tensor([0])])


# --------------------------------------------------------------------------- 4. coding

from focal_detect import BoxCoder, decode_boxes, encode_boxes


def test_encode_requires_one_anchor_per_box():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]]).repeat(3, 1)
    one = torch.tensor([[0.0, 0.0, 5.0, 5.0]])
    for f in (encode_boxes, BoxCoder().encode):
        with pytest.raises(
            ValueError, match=r"anchors and boxes must have the same number of boxes N.*\(1, 4\).*\(3, 4\)"
        ):
            f(boxes, one)
    with pytest.raises(ValueError, match=r"anchors and deltas must have the same number"):
        decode_boxes(torch.zeros(3, 4), one)
    # the documented batch broadcasting still works: (B, N, 4) boxes, (N, 4) anchors
    anchors = torch.tensor([[0.0, 0.0, 5.0, 5.0], [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 20.0, 20.0]])
    got = encode_boxes(boxes.expand(2, 3, 4), anchors)
    assert got.shape == (2, 3, 4)
    assert torch.allclose(got[1, :, 2], torch.log(torch.tensor([2.0, 1.0, 0.5])))


def test_encode_rejects_inverted_boxes_instead_of_nan():
    anchors = torch.tensor([[0.0, 0.0, 5.0, 5.0]])
    with pytest.raises(ValueError, match="encode_boxes: boxes must have x1 <= x2"):
        encode_boxes(torch.tensor([[10.0, 10.0, 0.0, 0.0]]), anchors)
    with pytest.raises(ValueError, match="encode_boxes: anchors must have x1 <= x2"):
        encode_boxes(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([[0.0, 5.0, 5.0, 0.0]]))


# --------------------------------------------------------------------------- 5. double backward

from focal_detect import sigmoid_focal_loss_from_labels


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_focal_losses_support_double_backward(reduction):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    t = (torch.rand(3, 4, generator=g) > 0.6).double()
    labels = torch.tensor([1, -1, -2])
    w = torch.tensor([0.5, 2.0, 1.0], dtype=torch.float64)
    fns = [
        lambda x: sigmoid_focal_loss(x, t, reduction=reduction),
        lambda x: sigmoid_focal_loss(x, t, alpha=None, gamma=1.5, reduction=reduction),
        lambda x: sigmoid_focal_loss_star(x, t, gamma=2.0, beta=1.0, reduction=reduction),
        lambda x: sigmoid_focal_loss_from_labels(x, labels, w, reduction=reduction),
    ]
    for f in fns:
        assert torch.autograd.gradgradcheck(f, (x,))
    # 0.1.0 raised RuntimeError here; the Hessian diagonal is the formula's.
    loss = sigmoid_focal_loss(x, t, reduction="sum")
    (gx,) = torch.autograd.grad(loss, x, create_graph=True)
    (hx,) = torch.autograd.grad(gx.sum(), x)
    from focal_detect.losses._reference import focal_formula as _focal_formula

    x2 = x.detach().clone().requires_grad_(True)
    (g2,) = torch.autograd.grad(_focal_formula(x2, t, 0.25, 2.0).sum(), x2, create_graph=True)
    (h2,) = torch.autograd.grad(g2.sum(), x2)
    torch.testing.assert_close(hx, h2)


# --------------------------------------------------------------------------- 6. fuzz findings

from focal_detect import giou_loss, l1_loss, prior_bias, smooth_l1_loss


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64])
def test_focal_from_labels_accepts_every_integer_label_dtype(dtype):
    x = torch.tensor([[0.0, 1.0], [2.0, -1.0], [0.5, 0.5]])
    lab = torch.tensor([0, 1, 1]) if dtype == torch.uint8 else torch.tensor([0, -1, -2])
    want = sigmoid_focal_loss_from_labels(x, lab.long())
    torch.testing.assert_close(sigmoid_focal_loss_from_labels(x, lab.to(dtype)), want)


def test_focal_from_labels_with_no_classes_is_empty():
    x = torch.zeros(3, 0, requires_grad=True)
    lab = torch.tensor([-1, -2, -1])
    assert sigmoid_focal_loss_from_labels(x, lab).shape == (3, 0)
    for red in ("sum", "mean"):
        out = sigmoid_focal_loss_from_labels(x, lab, reduction=red)
        assert out.shape == () and float(out.detach()) == 0.0
    out.backward()
    assert x.grad.shape == (3, 0)
    with pytest.raises(ValueError, match="labels must be in"):
        sigmoid_focal_loss_from_labels(torch.zeros(1, 0), torch.tensor([0]))


def test_box_losses_reject_bool_tensors_naming_the_argument():
    b = torch.tensor([[True, False, True, True]])
    with pytest.raises(TypeError, match="smooth_l1_loss: targets must be a numeric tensor"):
        smooth_l1_loss(torch.zeros(1, 4), b)
    with pytest.raises(TypeError, match="l1_loss: targets must be a numeric tensor"):
        l1_loss(torch.zeros(1, 4), b)
    with pytest.raises(TypeError, match="giou_loss: boxes2 must be a numeric tensor"):
        giou_loss(torch.zeros(1, 4), b)
    with pytest.raises(TypeError, match="giou_loss: boxes1 must be a floating-point tensor"):
        giou_loss(b, torch.zeros(1, 4))


def test_giou_loss_half_precision_is_computed_in_float32():
    a = torch.tensor([[0.0, 0.0, 300.0, 300.0], [0.0, 0.0, 1000.0, 800.0]])
    b = torch.tensor([[10.0, 10.0, 310.0, 310.0], [500.0, 100.0, 1500.0, 900.0]])
    want = giou_loss(a, b)
    for dt in (torch.float16, torch.bfloat16):
        got = giou_loss(a.to(dt), b.to(dt))  # 0.1.0: NaN in float16 (300**2 > 65504)
        assert got.dtype == dt
        torch.testing.assert_close(got.float(), want, atol=1e-2, rtol=1e-2)


def test_huge_gamma_is_rejected_and_tiny_prior_is_exact():
    for f in (sigmoid_focal_loss, sigmoid_focal_loss_star):
        with pytest.raises(ValueError, match="gamma must be finite and <="):
            f(torch.zeros(2), torch.tensor([1.0, 0.0]), gamma=3.5e38)
    with pytest.raises(ValueError, match="sigmoid_focal_loss_from_labels: gamma"):
        sigmoid_focal_loss_from_labels(torch.zeros(1, 2), torch.tensor([0]), gamma=1e39)
    assert prior_bias(1e-320) == pytest.approx(math.log(1e-320), rel=1e-15)
    assert math.isfinite(prior_bias(5e-324)) and prior_bias(5e-324) < -744
    assert prior_bias(0.01) == -math.log(99)


def test_clip_size_anchor_size_and_scalar_gammas():
    from focal_detect import AnchorGenerator, clip_boxes
    from focal_detect.analysis import focal_loss_cdf

    b = torch.tensor([[-5.0, 0.0, 10.0, float("inf")]])
    # 0.1.0: RuntimeError from clamp; the exact answer clips only below 0 (and inf)
    got = clip_boxes(b, (1e39, 1e39))
    assert got[0, :3].tolist() == [0.0, 0.0, 10.0] and got[0, 3] == torch.finfo(torch.float32).max
    with pytest.raises(ValueError, match=r"AnchorGenerator: sizes\[0\] must be <="):
        AnchorGenerator(sizes=(1e200, 64, 128, 256, 512))
    with pytest.raises(TypeError, match="focal_loss_cdf: gammas must be a sequence"):
        focal_loss_cdf(torch.zeros(3, 2), torch.tensor([0, -1, 1]), gammas=2.0)


def test_ohem_sample_with_a_budget_beyond_int64_is_exact():
    from focal_detect.sampling import ohem_sample

    losses = torch.tensor([[0.3, 0.9, 0.1, 0.5], [0.2, 0.4, 0.8, 0.6]])
    labels = torch.tensor([[1, 0, BACKGROUND, BACKGROUND], [BACKGROUND, IGNORE, 2, BACKGROUND]])
    for frac in (None, 0.25, 0.5):
        # 0.1.0: OverflowError from clamp; any budget >= 2N selects what 2N selects
        ref = ohem_sample(losses, labels, batch_size_per_image=8, positive_fraction=frac)
        for size in (2**63, 2**70):
            got = ohem_sample(losses, labels, batch_size_per_image=size, positive_fraction=frac)
            assert torch.equal(got, ref)
    # with fraction 0.25 of 8 = 2 foreground slots both images keep all non-ignored anchors
    assert ref.tolist() == [[True, True, True, True], [True, False, True, True]]
