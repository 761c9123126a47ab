"""Tests for focal_detect.coding (R-CNN box coding, torchvision BoxCoder numbers)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import valid_boxes

from focal_detect.coding import MAX_LOG_SCALE, BoxCoder, decode_boxes, encode_boxes

GOLDENS = json.loads((Path(__file__).parent / "data" / "box_goldens.json").read_text())


def t(x, dtype=torch.float32):
    return torch.tensor(x, dtype=dtype)


def test_max_log_scale_is_1000_over_16():
    assert MAX_LOG_SCALE == math.log(1000.0 / 16)
    assert math.isclose(16 * math.exp(MAX_LOG_SCALE), 1000.0)


def test_encode_closed_form():
    anchors = t([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), size 10 x 20
    boxes = t([[2.0, 4.0, 22.0, 24.0]])  # centre (12, 14), size 20 x 20
    d = encode_boxes(boxes, anchors)
    torch.testing.assert_close(d, t([[0.7, 0.2, math.log(2.0), 0.0]]))
    d = encode_boxes(boxes, anchors, weights=(10.0, 5.0, 2.0, 1.0))
    torch.testing.assert_close(d, t([[7.0, 1.0, 2 * math.log(2.0), 0.0]]))


def test_decode_closed_form_and_clamp():
    anchors = t([[0.0, 0.0, 10.0, 20.0]])
    torch.testing.assert_close(
        decode_boxes(t([[0.7, 0.2, math.log(2.0), 0.0]]), anchors), t([[2.0, 4.0, 22.0, 24.0]])
    )
    # dw = 9 is clamped to log(1000/16): width 10 * 62.5 = 625 around centre 5
    big = decode_boxes(t([[0.0, 0.0, 9.0, -9.0]]), anchors)
    torch.testing.assert_close(big[0, 2] - big[0, 0], torch.tensor(625.0))
    # torchvision clamps from above only: dh = -9 shrinks to 20 * exp(-9)
    torch.testing.assert_close(big[0, 3] - big[0, 1], torch.tensor(20 * math.exp(-9.0)))
    sym = decode_boxes(t([[0.0, 0.0, 9.0, -9.0]]), anchors, symmetric_clamp=True)
    torch.testing.assert_close(sym[0, 3] - sym[0, 1], torch.tensor(20 / 62.5))
    free = decode_boxes(t([[0.0, 0.0, 9.0, 0.0]]), anchors, clamp=None)
    torch.testing.assert_close(free[0, 2] - free[0, 0], torch.tensor(10 * math.exp(9.0)))


@pytest.mark.parametrize("case", [0, 1])
def test_matches_torchvision_goldens_bit_for_bit(case):
    # torchvision 0.29.1 models.detection._utils.BoxCoder(weights, bbox_xform_clip=
    # log(1000/16)): encode_single(reference_boxes=boxes, proposals=anchors) and
    # decode_single(deltas, anchors)
    g = GOLDENS["coding"]
    c = g["cases"][case]
    anchors, boxes, deltas = t(g["anchors"]), t(g["boxes"]), t(g["deltas"])
    coder = BoxCoder(c["weights"], clamp=g["clamp"])
    assert torch.equal(coder.encode(boxes, anchors), t(c["encode"]))
    assert torch.equal(coder.decode(deltas, anchors), t(c["decode"]))


def test_broadcasting_anchors_over_the_batch():
    torch.manual_seed(0)
    anchors = torch.rand(6, 4) * 50
    anchors[:, 2:] += anchors[:, :2] + 1
    deltas = torch.randn(3, 6, 4)
    out = decode_boxes(deltas, anchors)
    assert out.shape == (3, 6, 4)
    for i in range(3):
        assert torch.equal(out[i], decode_boxes(deltas[i], anchors))
    boxes = out
    enc = encode_boxes(boxes, anchors)
    assert enc.shape == (3, 6, 4)
    for i in range(3):
        assert torch.equal(enc[i], encode_boxes(boxes[i], anchors))
    # batched anchors too
    assert torch.equal(decode_boxes(deltas, anchors.expand(3, 6, 4)), out)


def test_half_precision_is_computed_in_float32_and_returned_in_input_dtype():
    anchors = t([[0.0, 0.0, 512.0, 512.0], [100.0, 200.0, 164.0, 232.0]])
    deltas = t([[0.1, -0.2, 0.5, 4.0], [0.3, 0.1, -0.25, 0.75]])
    ref = decode_boxes(deltas, anchors)
    for dtype in (torch.float16, torch.bfloat16):
        out = decode_boxes(deltas.to(dtype), anchors.to(dtype))
        assert out.dtype == dtype
        # the float32 result rounded once (inputs are exact in half precision here
        # except the deltas, which we round first)
        expect = decode_boxes(deltas.to(dtype).float(), anchors).to(dtype)
        assert torch.equal(out, expect)
        torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1.0)
        enc = encode_boxes(out, anchors.to(dtype))
        assert enc.dtype == dtype and torch.isfinite(enc).all()


def test_box_coder_module():
    coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0), clamp=None, symmetric_clamp=True)
    assert coder.weights == (10.0, 10.0, 5.0, 5.0)
    assert list(coder.parameters()) == [] and list(coder.buffers()) == []
    anchors = t([[0.0, 0.0, 10.0, 10.0]])
    d = t([[1.0, 2.0, 5.0, -5.0]])
    assert torch.equal(coder(d, anchors), decode_boxes(d, anchors, (10.0, 10.0, 5.0, 5.0), None))
    assert "clamp=None" in repr(coder)


@st.composite
def anchored_boxes(draw):
    kw = dict(min_n=1, max_n=6, dtype=torch.float64, allow_zero_area=False)
    boxes = draw(valid_boxes(**kw))
    anchors = draw(
        valid_boxes(min_n=boxes.shape[0], max_n=boxes.shape[0], dtype=torch.float64, allow_zero_area=False)
    )
    return boxes, anchors


@given(pair=anchored_boxes(), w=st.sampled_from([(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]))
def test_decode_inverts_encode_unclamped(pair, w):
    boxes, anchors = pair
    d = encode_boxes(boxes, anchors, w)
    torch.testing.assert_close(decode_boxes(d, anchors, w, clamp=None), boxes, rtol=1e-9, atol=1e-9)


@given(pair=anchored_boxes())
def test_encode_inverts_decode_on_small_deltas(pair):
    _, anchors = pair
    d = torch.linspace(-2, 2, anchors.numel(), dtype=torch.float64).reshape(anchors.shape)
    torch.testing.assert_close(encode_boxes(decode_boxes(d, anchors), anchors), d, rtol=1e-7, atol=1e-7)


def test_gradcheck_encode_decode():
    anchors = t([[0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 9.0, 7.0]], torch.float64)
    boxes = t([[1.0, 2.0, 12.0, 19.0], [4.0, 6.0, 10.0, 9.0]], torch.float64).requires_grad_()
    deltas = t([[0.1, -0.3, 0.2, -0.4], [1.0, 0.5, -1.0, 0.3]], torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda b: encode_boxes(b, anchors), (boxes,))
    assert torch.autograd.gradcheck(lambda d: decode_boxes(d, anchors), (deltas,))


def test_bad_inputs_raise_naming_the_argument():
    a = torch.zeros(3, 4)
    with pytest.raises(ValueError, match=r"decode_boxes: deltas must have shape \(\.\.\., N, 4\)"):
        decode_boxes(torch.zeros(3, 5), a)
    with pytest.raises(ValueError, match="encode_boxes: anchors must broadcast with boxes"):
        encode_boxes(torch.zeros(2, 4, 4), a)
    with pytest.raises(TypeError, match="encode_boxes: anchors must be a torch.Tensor"):
        encode_boxes(a, [[0, 0, 1, 1]])
    with pytest.raises(TypeError, match="decode_boxes: deltas must be a floating-point"):
        decode_boxes(torch.zeros(3, 4, dtype=torch.long), a)
    with pytest.raises(ValueError, match="encode_boxes: weights must be a sequence of 4"):
        encode_boxes(a, a, weights=(1.0, 1.0))
    with pytest.raises(ValueError, match=r"BoxCoder: weights\[2\] must be in"):
        BoxCoder(weights=(1.0, 1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="decode_boxes: clamp must be in"):
        decode_boxes(a, a, clamp=-1.0)
    with pytest.raises(TypeError, match="BoxCoder: symmetric_clamp must be a bool"):
        BoxCoder(symmetric_clamp="yes")


def test_live_parity_with_torchvision_box_coder():
    pytest.importorskip("torchvision")
    from torchvision.models.detection._utils import BoxCoder as TVBoxCoder

    g = torch.Generator().manual_seed(2)
    anchors = torch.rand(500, 4, generator=g) * 600
    anchors[:, 2:] += anchors[:, :2] + 2
    boxes = torch.rand(500, 4, generator=g) * 600
    boxes[:, 2:] += boxes[:, :2] + 0.5
    deltas = torch.randn(500, 4, generator=g) * 3
    for w in [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (2.0, 3.0, 1.5, 0.5)]:
        tv = TVBoxCoder(w)
        ours = BoxCoder(w)
        assert torch.equal(ours.encode(boxes, anchors), tv.encode_single(boxes, anchors))
        assert torch.equal(ours.decode(deltas, anchors), tv.decode_single(deltas, anchors))
