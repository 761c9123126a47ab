"""focal_detect.data.augment: scale jitter's box rule, photometric jitter, composition, settings."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import valid_boxes

from focal_detect.data import (
    MIN_VISIBILITY,
    AugmentConfig,
    Compose,
    RandomHorizontalFlip,
    RandomPhotometric,
    RandomScaleJitter,
    SeededAugment,
    adjust_photometric,
    build_augmentation,
    rescale_place,
)


def _target(boxes: torch.Tensor) -> dict:
    m = boxes.shape[0]
    return {
        "boxes": boxes,
        "labels": torch.arange(m),  # label = original index: tells which boxes were kept
        "iscrowd": torch.arange(m) % 2 == 1,
        "area": torch.ones(m, dtype=boxes.dtype) * 7.0,
        "image_id": 3,
    }


def _expected_keep(boxes, sx, sy, ox, oy, wo, ho, min_vis, min_size):
    """The documented rule, one box at a time in Python floats."""
    keep = []
    for x1, y1, x2, y2 in boxes.double().tolist():
        m = [sx * x1 + ox, sy * y1 + oy, sx * x2 + ox, sy * y2 + oy]
        c = [min(max(m[0], 0), wo), min(max(m[1], 0), ho), min(max(m[2], 0), wo), min(max(m[3], 0), ho)]
        cw, ch = c[2] - c[0], c[3] - c[1]
        full = (m[2] - m[0]) * (m[3] - m[1])
        keep.append(cw >= min_size and ch >= min_size and cw * ch >= min_vis * full)
    return keep


@st.composite
def placements(draw):
    h = draw(st.integers(8, 48))
    w = draw(st.integers(8, 48))
    boxes = draw(valid_boxes(max_n=8, max_coord=float(min(h, w)), dtype=torch.float64))
    hr = draw(st.integers(1, 3 * h))
    wr = draw(st.integers(1, 3 * w))
    ho = draw(st.integers(4, 48))
    wo = draw(st.integers(4, 48))
    oy = draw(st.integers(-hr, ho))
    ox = draw(st.integers(-wr, wo))
    vis = draw(st.sampled_from([0.0, MIN_VISIBILITY, 0.7, 1.0]))
    return h, w, boxes, (hr, wr), (oy, ox), (ho, wo), vis


@given(case=placements())
def test_rescale_place_keeps_exactly_the_documented_boxes(case) -> None:
    h, w, boxes, (hr, wr), (oy, ox), (ho, wo), vis = case
    img, t = rescale_place(
        torch.rand(3, h, w), _target(boxes), (hr, wr), (oy, ox), output_size=(ho, wo), min_visibility=vis
    )
    assert img.shape == (3, ho, wo)
    sx, sy = wr / w, hr / h
    keep = _expected_keep(boxes, sx, sy, ox, oy, wo, ho, vis, 1.0)
    kept = [i for i, k in enumerate(keep) if k]
    assert t["labels"].tolist() == kept  # dropped boxes are the documented ones, order kept
    assert t["iscrowd"].tolist() == [i % 2 == 1 for i in kept]
    assert t["image_id"] == 3
    b = t["boxes"]
    assert b.shape == (len(kept), 4) and b.dtype == torch.float64
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= wo).all() and (b[:, 3] <= ho).all()
    assert ((b[:, 2:] - b[:, :2]) >= 1.0).all()
    scale = torch.tensor([sx, sy, sx, sy], dtype=torch.float64)
    shift = torch.tensor([ox, oy, ox, oy], dtype=torch.float64)
    moved = boxes[kept] * scale + shift
    inside = (moved[:, :2] >= 0).all(1) & (moved[:, 2] <= wo) & (moved[:, 3] <= ho)
    # A box that stays inside is exactly scaled and translated, and its area scales by sx * sy.
    torch.testing.assert_close(b[inside], moved[inside], rtol=0, atol=1e-12)
    torch.testing.assert_close(t["area"][inside], torch.full((int(inside.sum()),), 7.0 * sx * sy).double())


def test_rescale_place_moves_pixels_with_the_boxes() -> None:
    img = torch.zeros(1, 16, 16)
    img[:, 4:8, 5:9] = 1.0  # the object fills its box exactly
    box = torch.tensor([[5.0, 4.0, 9.0, 8.0]])
    out, t = rescale_place(img, {"boxes": box}, (16, 16), (2, 3), fill=0.25)
    assert t["boxes"].tolist() == [[8.0, 6.0, 12.0, 10.0]]
    x1, y1, x2, y2 = (int(v) for v in t["boxes"][0])
    assert (out[:, y1:y2, x1:x2] == 1).all() and int((out == 1).sum()) == 16  # same object, moved
    assert (out[:, :2, :] == 0.25).all() and (out[:, :, :3] == 0.25).all()  # uncovered: fill
    # Scaled 2x: a constant image stays constant where it covers the canvas.
    out2, t2 = rescale_place(torch.full((3, 8, 8), 0.8), {"boxes": box / 2}, (16, 16), (0, 0), (20, 20))
    assert torch.allclose(out2[:, :16, :16], torch.tensor(0.8)) and (out2[:, 16:, :] == 0.5).all()
    assert t2["boxes"].tolist() == [[5.0, 4.0, 9.0, 8.0]]


def test_partly_visible_box_is_clipped_or_dropped_at_the_threshold() -> None:
    # Shifted left by 6 px, a 10 px wide box keeps 4/10 of its area; one of 20 px keeps 14/20.
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 10.0, 20.0, 20.0], [0.0, 20.0, 7.0, 30.0]])
    img = torch.zeros(3, 32, 32)
    _, t = rescale_place(img, _target(boxes), (32, 32), (0, -6))
    assert t["labels"].tolist() == [0, 1]  # 0.4 and 0.7 >= 0.3; the third keeps 1/7 < 0.3
    assert t["boxes"].tolist() == [[0.0, 0.0, 4.0, 10.0], [0.0, 10.0, 14.0, 20.0]]
    torch.testing.assert_close(t["area"], torch.tensor([7.0 * 0.4, 7.0 * 0.7]))
    _, strict = rescale_place(img, _target(boxes), (32, 32), (0, -6), min_visibility=0.5)
    assert strict["labels"].tolist() == [1]


@given(seed=st.integers(0, 2**31 - 1), boxes=valid_boxes(max_n=6, max_coord=40.0))
def test_scale_jitter_output_is_fixed_size_and_boxes_stay_inside(seed, boxes) -> None:
    jitter = RandomScaleJitter(scale=(0.3, 2.5), aspect=(0.7, 1.4), output_size=(24, 36))
    img, t = jitter(torch.rand(3, 40, 40), _target(boxes), torch.Generator().manual_seed(seed))
    assert img.shape == (3, 24, 36) and 0 <= float(img.min()) and float(img.max()) <= 1
    b = t["boxes"]
    assert (b[:, :2] >= 0).all() and (b[:, 2] <= 36).all() and (b[:, 3] <= 24).all()
    lab = t["labels"].tolist()
    assert lab == sorted(set(lab)) and all(0 <= i < boxes.shape[0] for i in lab)


def test_scale_jitter_is_a_function_of_the_generator() -> None:
    jitter = RandomScaleJitter(scale=(0.5, 1.5), aspect=(0.8, 1.25))
    img = torch.rand(3, 30, 30)
    img_before = img.clone()
    target = _target(torch.tensor([[2.0, 3.0, 20.0, 25.0], [10.0, 10.0, 14.0, 13.0]]))
    runs = [jitter(img, target, torch.Generator().manual_seed(s)) for s in (5, 5, 6, 7, 8)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1]["boxes"], runs[1][1]["boxes"])
    assert any(not torch.equal(runs[0][0], r[0]) for r in runs[2:])
    assert torch.equal(img, img_before)  # input not modified in place
    assert target["boxes"].tolist() == [[2.0, 3.0, 20.0, 25.0], [10.0, 10.0, 14.0, 13.0]]


def test_empty_targets_work() -> None:
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "image_id": 0}
    for t in (RandomScaleJitter(), build_augmentation({"scale_jitter": (0.5, 1.5), "photometric": 0.3})):
        img, out = t(torch.rand(3, 16, 16), empty, torch.Generator().manual_seed(0))
        assert img.shape == (3, 16, 16) and out["boxes"].shape == (0, 4) and out["labels"].shape == (0,)


def test_dtype_and_device_are_kept() -> None:
    aug = build_augmentation({"scale_jitter": (0.5, 1.5), "photometric": 0.5, "hflip": 1.0})
    boxes = torch.tensor([[4.0, 4.0, 12.0, 12.0]], dtype=torch.float64)
    img, t = aug(
        torch.rand(3, 16, 16, dtype=torch.float64), {"boxes": boxes}, torch.Generator().manual_seed(1)
    )
    assert img.dtype == torch.float64 and t["boxes"].dtype == torch.float64
    assert img.device == boxes.device == t["boxes"].device


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_images_keep_their_dtype(dtype) -> None:
    img = torch.rand(3, 20, 20).to(dtype)
    for size in ((10, 10), (30, 30)):
        out, _ = rescale_place(img, {"boxes": torch.zeros(0, 4)}, size, (0, 0), output_size=(24, 24))
        assert out.dtype == dtype and out.shape == (3, 24, 24)
    assert adjust_photometric(img, 1.2, 0.8, 1.1, 0.1).dtype == dtype


def test_default_augmentation_is_the_flip_alone_sample_for_sample() -> None:
    base = [
        (torch.rand(3, 8, 12), {"boxes": torch.tensor([[1.0, 2.0, 5.0, 6.0]]), "image_id": i})
        for i in range(8)
    ]
    old = SeededAugment(base, RandomHorizontalFlip(0.5), seed=11)
    for settings in (None, {}, AugmentConfig()):
        new = SeededAugment(base, build_augmentation(settings), seed=11)
        for i in range(8):
            assert torch.equal(old[i][0], new[i][0]) and torch.equal(old[i][1]["boxes"], new[i][1]["boxes"])
    flips = {bool(old[i][1]["boxes"][0, 0] != 1.0) for i in range(8)}
    assert flips == {True, False}  # the comparison saw both outcomes


@given(
    b=st.floats(0.0, 3.0),
    c=st.floats(0.0, 3.0),
    s=st.floats(0.0, 3.0),
    h=st.floats(-0.5, 0.5),
    seed=st.integers(0, 99),
)
def test_photometric_stays_in_unit_range(b, c, s, h, seed) -> None:
    img = torch.rand(3, 5, 5, generator=torch.Generator().manual_seed(seed))
    out = adjust_photometric(img, b, c, s, h)
    assert out.shape == img.shape and 0 <= float(out.min()) and float(out.max()) <= 1


def test_photometric_closed_forms() -> None:
    img = 0.3 + 0.4 * torch.rand(3, 6, 6, generator=torch.Generator().manual_seed(0))  # no clamping
    assert torch.equal(adjust_photometric(img), img)
    grey = adjust_photometric(img, saturation=0.0)
    luma = 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]
    torch.testing.assert_close(grey, luma.expand(3, 6, 6))
    flat = adjust_photometric(img, contrast=0.0)
    torch.testing.assert_close(flat, torch.full_like(img, float(luma.mean())))
    turned = adjust_photometric(img, hue=0.25)
    luma_t = 0.299 * turned[0] + 0.587 * turned[1] + 0.114 * turned[2]
    torch.testing.assert_close(luma_t, luma, atol=1e-5, rtol=0)  # hue keeps the luma ...
    assert (turned - img).abs().max() > 0.01  # ... and changes the colour
    torch.testing.assert_close(adjust_photometric(img, hue=0.5 - 1e-9), adjust_photometric(img, hue=-0.5))


def test_random_photometric_leaves_boxes_and_follows_p() -> None:
    img = torch.full((3, 4, 4), 0.5)
    target = {"boxes": torch.tensor([[0.0, 0.0, 2.0, 2.0]])}
    off = RandomPhotometric(p=0.0)
    assert off(img, target, torch.Generator().manual_seed(0))[0] is img
    on = RandomPhotometric(brightness=0.5, p=1.0)
    outs = [on(img, target, torch.Generator().manual_seed(s)) for s in range(6)]
    assert all(o[1] is target for o in outs)
    assert len({round(float(o[0].mean()), 6) for o in outs}) > 1


def test_compose_applies_in_order_with_one_generator() -> None:
    seen = []

    def record(name):
        def t(image, target, generator=None):
            seen.append((name, float(torch.rand((), generator=generator))))
            return image + 1, target

        return t

    img, _ = Compose([record("a"), record("b")])(torch.zeros(1, 1, 1), {}, torch.Generator().manual_seed(0))
    ref = torch.rand(2, generator=torch.Generator().manual_seed(0)).tolist()
    assert [n for n, _ in seen] == ["a", "b"] and [v for _, v in seen] == pytest.approx(ref)
    assert float(img) == 2.0


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: build_augmentation({"crop_jitter": 1}), "settings key 'crop_jitter'"),
        (lambda: build_augmentation({"hflip": 1.5}), "hflip must be in"),
        (lambda: build_augmentation({"scale_jitter": (1.5, 0.5)}), "scale_jitter must be in"),
        (lambda: build_augmentation({"scale_jitter": (0.0, 1.0)}), "scale_jitter must be in"),
        (lambda: build_augmentation({"scale_jitter": 2.0}), "scale_jitter must be a pair"),
        (
            lambda: build_augmentation({"aspect_jitter": (0.5, 2.0)}),
            "aspect_jitter must come with scale_jitter",
        ),
        (lambda: build_augmentation({"photometric": -0.1}), "photometric must be in"),
        (lambda: build_augmentation({"scale_jitter": (1, 2), "output_size": (0, 3)}), "output_size must be"),
        (lambda: build_augmentation({"min_visibility": 2.0}), "min_visibility must be in"),
        (lambda: RandomScaleJitter(min_size=0.0), "min_size must be in"),
        (lambda: RandomPhotometric(hue=0.6), "hue must be in"),
        (lambda: adjust_photometric(torch.rand(1, 2, 2)), "image must have 3 channels"),
        (
            lambda: rescale_place(torch.rand(3, 4), {"boxes": torch.zeros(0, 4)}, (2, 2), (0, 0)),
            "image must have shape",
        ),
        (
            lambda: rescale_place(torch.rand(3, 4, 4), {"boxes": torch.zeros(4)}, (2, 2), (0, 0)),
            r"target\['boxes'\]",
        ),
        (
            lambda: rescale_place(torch.rand(3, 4, 4), {"boxes": torch.zeros(0, 4)}, (2, 2), (0.5, 0)),
            "offset must be",
        ),
    ],
)
def test_bad_settings_raise_value_error_naming_the_argument(call, match) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_bad_types_raise_type_error() -> None:
    with pytest.raises(TypeError, match="settings must be"):
        build_augmentation([0.5])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="image must be a floating-point tensor"):
        RandomScaleJitter()(torch.zeros(3, 4, 4, dtype=torch.uint8), {"boxes": torch.zeros(0, 4)})
    with pytest.raises(TypeError, match=r"transforms\[1\] must be callable"):
        Compose([RandomHorizontalFlip(), 3])  # type: ignore[list-item]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_augmentation_stays_on_the_gpu_and_matches_the_cpu() -> None:
    aug = build_augmentation({"scale_jitter": (0.5, 1.5), "aspect_jitter": (0.8, 1.25), "photometric": 0.4})
    img = torch.rand(3, 40, 40)
    target = _target(torch.tensor([[2.0, 3.0, 30.0, 25.0], [10.0, 10.0, 14.0, 13.0]]))
    gpu_target = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in target.items()}
    a_img, a_t = aug(img, target, torch.Generator().manual_seed(3))
    b_img, b_t = aug(img.cuda(), gpu_target, torch.Generator().manual_seed(3))
    assert b_img.is_cuda and b_t["boxes"].is_cuda and b_t["labels"].is_cuda
    torch.testing.assert_close(b_img.cpu(), a_img, atol=1e-5, rtol=0)
    assert torch.equal(b_t["boxes"].cpu(), a_t["boxes"]) and torch.equal(b_t["labels"].cpu(), a_t["labels"])
