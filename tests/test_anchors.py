"""Tests for focal_detect.anchors: paper geometry, layout, cache, conventions, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from focal_detect.anchors import CONVENTIONS, AnchorGenerator, AnchorLevel, Anchors
from focal_detect.anchors import layout as layout_mod

DATA = Path(__file__).parent / "data"
PAPER_SIZES = (32, 64, 128, 256, 512)
OCTAVES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))


def _wh(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]


def _loop_anchors(gen: AnchorGenerator, feature_sizes, dtype=torch.float64) -> torch.Tensor:
    """Plain triple loop: level, y, x, a - the documented order."""
    rows = []
    for lvl, (h, w) in enumerate(feature_sizes):
        cells = gen.cell_anchors(lvl, dtype=dtype)
        lv = gen(feature_sizes, dtype=dtype).levels[lvl]
        for y in range(h):
            for x in range(w):
                t = torch.tensor([x * lv.stride + lv.shift, y * lv.stride + lv.shift] * 2, dtype=dtype)
                for a in range(cells.shape[0]):
                    rows.append(cells[a] + t)
    return torch.stack(rows)


# ----------------------------------------------------------------------------- paper


def test_paper_defaults() -> None:
    gen = AnchorGenerator()
    assert gen.num_anchors_per_location == 9
    assert gen.num_levels == 5
    assert gen.strides == (8, 16, 32, 64, 128)
    assert gen.convention == "paper" and gen.offset == 0.0 and gen.order == "ratio-major"


@pytest.mark.parametrize("level", range(5))
def test_paper_cell_anchor_areas_and_aspects(level: int) -> None:
    cells = AnchorGenerator().cell_anchors(level, dtype=torch.float64)
    w, h = _wh(cells)
    # ratio-major: a = ratio_index * 3 + scale_index
    for i, r in enumerate((0.5, 1.0, 2.0)):
        for j, c in enumerate(OCTAVES):
            a = i * 3 + j
            side = PAPER_SIZES[level] * c
            assert w[a] * h[a] == pytest.approx(side**2, rel=1e-12)
            assert h[a] / w[a] == pytest.approx(r, rel=1e-12)
    # Centred on the location origin (offset 0).
    torch.testing.assert_close(cells[:, :2], -cells[:, 2:], rtol=0, atol=0)


def test_paper_covers_32_to_813_pixels() -> None:
    gen = AnchorGenerator()
    sides = [
        math.sqrt(float(w * h))
        for lvl in range(5)
        for w, h in zip(*_wh(gen.cell_anchors(lvl, dtype=torch.float64)))
    ]
    assert min(sides) == pytest.approx(32.0)
    assert max(sides) == pytest.approx(512 * 2 ** (2 / 3))  # 812.7, "up to 813 pixels"


def test_anchor_count_is_sum_hwa() -> None:
    gen = AnchorGenerator()
    fs = gen.feature_sizes_for((100, 150))
    assert fs == [(13, 19), (7, 10), (4, 5), (2, 3), (1, 2)]
    assert gen(fs).boxes.shape == (9 * sum(h * w for h, w in fs), 4)


def test_grid_matches_plain_loop_and_order() -> None:
    gen = AnchorGenerator(sizes=(32, 64), strides=(8, 16))
    fs = [(3, 4), (2, 3)]
    anchors = gen(fs, dtype=torch.float64).boxes
    torch.testing.assert_close(anchors, _loop_anchors(gen, fs), rtol=0, atol=0)
    # Row (y * W + x) * A + a: anchor 1 of location (y=2, x=3) on level 0.
    row = anchors[(2 * 4 + 3) * 9 + 1]
    torch.testing.assert_close(
        row,
        gen.cell_anchors(0, dtype=torch.float64)[1] + torch.tensor([24.0, 16.0] * 2, dtype=torch.float64),
        rtol=0,
        atol=0,
    )


def test_grid_anchors_are_the_per_level_pieces_of_call() -> None:
    gen = AnchorGenerator()
    fs = gen.feature_sizes_for((128, 96))
    parts = gen(fs).per_level()
    assert [p.shape[0] for p in parts] == [h * w * 9 for h, w in fs]
    assert torch.equal(torch.cat(parts), gen(fs).boxes)


def test_offset_moves_centres_by_offset_times_stride() -> None:
    a0 = AnchorGenerator()([(2, 2)] * 5, dtype=torch.float64).boxes
    a5 = AnchorGenerator(offset=0.5)([(2, 2)] * 5, dtype=torch.float64).boxes
    levels = AnchorGenerator()([(2, 2)] * 5).levels
    for lv in levels:
        sl = slice(lv.start, lv.end)
        torch.testing.assert_close(
            a5[sl] - a0[sl], torch.full_like(a0[sl], lv.stride / 2), rtol=0, atol=1e-12
        )


# ----------------------------------------------------------------------------- levels


def _check_levels_identity(gen: AnchorGenerator, fs, dtype: torch.dtype) -> None:
    anchors = gen(fs, dtype=dtype).boxes
    levels = gen(fs, dtype=dtype).levels
    A = gen.num_anchors_per_location
    assert [lv.start for lv in levels] == [sum(h * w * A for h, w in fs[:k]) for k in range(len(fs))]
    assert levels[-1].end == anchors.shape[0]
    for k, lv in enumerate(levels):
        assert (lv.height, lv.width) == tuple(fs[k])
        assert lv.cell_anchors.dtype == dtype
        assert torch.equal(lv.cell_anchors, gen.cell_anchors(k, dtype=dtype))
        # Vectorised form of anchors[start + (y*W + x)*A + a] == cell[a] + (xs+d, ys+d, ...)
        ys, xs = torch.meshgrid(torch.arange(lv.height), torch.arange(lv.width), indexing="ij")
        tx = torch.tensor([x * lv.stride + lv.shift for x in xs.flatten().tolist()], dtype=dtype)
        ty = torch.tensor([y * lv.stride + lv.shift for y in ys.flatten().tolist()], dtype=dtype)
        t = torch.stack([tx, ty, tx, ty], dim=1)
        expect = (t[:, None, :] + lv.cell_anchors[None, :, :]).reshape(-1, 4)
        got = anchors[lv.start : lv.end]
        assert torch.equal(got, expect)


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_levels_identity_bit_exact(convention: str, dtype: torch.dtype) -> None:
    gen = AnchorGenerator(convention=convention)
    _check_levels_identity(gen, gen.feature_sizes_for((200, 330)), dtype)


def test_levels_identity_with_python_scalars_float32() -> None:
    # The form a matcher writes: cell_anchors[a] + Python numbers.
    gen = AnchorGenerator(convention="keras-retinanet")
    fs = gen.feature_sizes_for((300, 500))
    anchors, levels = gen(fs).boxes, gen(fs).levels
    for lv in levels:
        for y, x, a in [(0, 0, 0), (lv.height - 1, lv.width - 1, 8), (lv.height // 2, lv.width // 3, 4)]:
            sx, sy = x * lv.stride + lv.shift, y * lv.stride + lv.shift
            expect = lv.cell_anchors[a] + torch.tensor([sx, sy, sx, sy])
            assert torch.equal(anchors[lv.start + (y * lv.width + x) * 9 + a], expect)
            assert torch.equal(
                anchors[lv.start + (y * lv.width + x) * 9 + a][0::2], lv.cell_anchors[a][0::2] + sx
            )
            assert torch.equal(
                anchors[lv.start + (y * lv.width + x) * 9 + a][1::2], lv.cell_anchors[a][1::2] + sy
            )


@given(
    fs=st.lists(st.tuples(st.integers(1, 9), st.integers(1, 9)), min_size=5, max_size=5),
    convention=st.sampled_from(CONVENTIONS),
)
def test_levels_identity_property(fs, convention) -> None:
    gen = AnchorGenerator(convention=convention)
    _check_levels_identity(gen, fs, torch.float32)
    assert gen(fs).boxes.shape[0] == sum(h * w for h, w in fs) * 9


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_anchors_value_carries_a_consistent_layout(convention: str) -> None:
    gen = AnchorGenerator(convention=convention, derive_strides=True)
    fs = gen.feature_sizes_for((200, 330))
    anchors = gen(fs, image_size=(200, 330))
    assert isinstance(anchors, Anchors) and anchors.num_anchors == anchors.boxes.shape[0]
    assert [(lv.height, lv.width) for lv in anchors.levels] == fs
    strides = gen.level_strides(fs, image_size=(200, 330))
    assert [(lv.stride_h, lv.stride_w) for lv in anchors.levels] == strides
    assert anchors.levels[-1].end == anchors.num_anchors
    for lv, part in zip(anchors.levels, anchors.per_level()):
        assert part.shape == (lv.num_anchors, 4)
        assert part.data_ptr() == anchors.boxes[lv.start].data_ptr()  # views, no copies
    # rebuilt by hand from the layout alone, bit for bit (the check a hand-made value gets)
    assert Anchors(anchors.boxes.clone(), anchors.levels).num_anchors == anchors.num_anchors


def test_generator_anchors_are_trusted_hand_made_ones_checked(monkeypatch) -> None:
    calls: list[str] = []
    real = layout_mod._check_layout
    monkeypatch.setattr(layout_mod, "_check_layout", lambda *a: calls.append(a[0]) or real(*a))
    gen = AnchorGenerator()
    anchors = gen([(3, 4), (2, 2), (1, 1), (1, 1), (1, 1)])
    assert calls == []  # made by the generator: no check, no device synchronisation
    Anchors(anchors.boxes, anchors.levels)
    assert calls == ["Anchors"]


def test_hand_made_anchors_with_a_wrong_layout_are_rejected() -> None:
    anchors = AnchorGenerator()([(3, 4), (2, 2), (1, 1), (1, 1), (1, 1)])
    lv = anchors.levels
    with pytest.raises(ValueError, match=r"Anchors: levels must cover the 171 boxes, got 162"):
        Anchors(anchors.boxes, lv[:-1])
    with pytest.raises(ValueError, match=r"Anchors: levels\[1\] must start at 108, got start=144"):
        Anchors(anchors.boxes, (lv[0], lv[2], lv[1]) + lv[3:])
    with pytest.raises(TypeError, match=r"Anchors: levels\[0\] must be an AnchorLevel"):
        Anchors(anchors.boxes, (1, 2))
    with pytest.raises(TypeError, match=r"Anchors: boxes must be a floating-point \(N, 4\) tensor"):
        Anchors(anchors.boxes[:, :3], lv)
    moved = anchors.boxes.clone()
    moved[120, 0] += 2**-10  # one coordinate of level 1, off by a fraction of a pixel
    with pytest.raises(
        ValueError, match="levels must reproduce boxes bit for bit, got a mismatch at level 1"
    ):
        Anchors(moved, lv)


def test_anchor_level_is_frozen() -> None:
    lv = AnchorGenerator()([(1, 1)] * 5).levels[0]
    assert isinstance(lv, AnchorLevel)
    with pytest.raises(AttributeError):
        lv.start = 3  # type: ignore[misc]


# ----------------------------------------------------------------------------- cache, dtype


def test_cache_returns_same_object_per_key() -> None:
    gen = AnchorGenerator()
    fs = [(4, 4), (2, 2), (1, 1), (1, 1), (1, 1)]
    a = gen(fs).boxes
    assert gen([list(s) for s in fs]).boxes is a  # lists and tuples share a key
    assert gen(fs, device="cpu").boxes is a
    assert gen(fs) is gen(fs)  # the same Anchors object, layout included
    b = gen(fs, dtype=torch.float64).boxes
    assert b is not a and b.dtype == torch.float64
    assert gen([(4, 5), (2, 2), (1, 1), (1, 1), (1, 1)]).boxes is not a


def test_cache_is_bounded() -> None:
    from focal_detect import anchors as mod

    gen = AnchorGenerator()
    first = gen([(1, 1)] * 5).boxes
    for k in range(mod.CACHE_SIZE):
        gen([(k + 2, 1)] + [(1, 1)] * 4)
    assert len(gen._cache) == mod.CACHE_SIZE
    assert gen([(1, 1)] * 5).boxes is not first  # the oldest key was evicted


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_dtypes_cast_from_accurate_cells(dtype: torch.dtype) -> None:
    gen = AnchorGenerator()
    fs = gen.feature_sizes_for((256, 256))
    ref = gen(fs, dtype=torch.float64).boxes
    got = gen(fs, dtype=dtype).boxes
    assert got.dtype == dtype
    # Paper cells are computed in float64 and rounded once to dtype, the translation too,
    # then one rounded addition: at most ~1.5 ulp of the operands' magnitude.
    eps = torch.finfo(dtype).eps
    for lv in gen(fs, dtype=torch.float64).levels:
        sl = slice(lv.start, lv.end)
        bound = 1.5 * eps * (ref[sl].abs() + lv.cell_anchors.abs().max())
        err = (got[sl].double() - ref[sl]).abs()
        assert bool((err <= bound).all())
    if dtype == torch.float64:
        assert torch.equal(got, ref)


def test_float64_paper_cells_are_not_float32_rounded() -> None:
    cell = AnchorGenerator().cell_anchors(0, dtype=torch.float64)[0]
    # Ratio 1:2, scale 1: width 32 * sqrt(2), computed in double precision.
    assert float(cell[2]) == pytest.approx(16 * math.sqrt(2), rel=1e-15)
    assert float(cell[2]) != float(torch.tensor(16 * math.sqrt(2), dtype=torch.float32))


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sizes": (32, 0, 128, 256, 512)}, r"sizes\[1\] must be in"),
        ({"sizes": (32, -64, 128, 256, 512)}, r"sizes\[1\]"),
        ({"scales": (1.0, 0.0)}, r"scales\[1\]"),
        ({"ratios": ()}, "ratios must not be empty"),
        ({"ratios": (0.5, float("nan"))}, r"ratios\[1\]"),
        ({"strides": (8, 16, 32, 64)}, "strides must have the same length as sizes"),
        ({"strides": (8, 16, 0, 64, 128)}, r"strides\[2\] must be positive"),
        ({"offset": 1.5}, "offset must be in"),
        ({"convention": "yolo"}, "convention must be one of"),
        ({"order": "random"}, "order must be one of"),
    ],
)
def test_bad_constructor_arguments(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        AnchorGenerator(**kwargs)


def test_bad_types() -> None:
    with pytest.raises(TypeError, match=r"strides\[0\] must be an int"):
        AnchorGenerator(strides=(8.0, 16, 32, 64, 128))
    with pytest.raises(TypeError, match="sizes must be a sequence"):
        AnchorGenerator(sizes=32)
    with pytest.raises(TypeError, match="dtype must be a floating"):
        AnchorGenerator()([(1, 1)] * 5, dtype=torch.int64)


def test_bad_convention() -> None:
    with pytest.raises(ValueError, match="AnchorGenerator: convention must be one of"):
        AnchorGenerator(convention="torchvison")
    with pytest.raises(ValueError, match="offset must be in"):
        AnchorGenerator(convention="keras-retinanet", offset=1.5)


@pytest.mark.parametrize("name", CONVENTIONS)
def test_offset_none_is_the_conventions_own(name: str) -> None:
    gen = AnchorGenerator(convention=name)
    assert gen.offset == (0.5 if name in ("detectron", "keras-retinanet") else 0.0)
    explicit = AnchorGenerator(convention=name, offset=0.25)
    assert explicit.offset == 0.25 and explicit.convention == name
    assert not torch.equal(explicit([(2, 2)] * 5).boxes, gen([(2, 2)] * 5).boxes)


def test_deprecated_spellings_warn_and_match_the_new_api() -> None:
    sizes = [(2, 3)] * 5
    with pytest.warns(DeprecationWarning, match=r"from_preset.*AnchorGenerator\(convention=name"):
        old = AnchorGenerator.from_preset("keras-retinanet", sizes=(16, 32, 64, 128, 256))
    new = AnchorGenerator(convention="keras-retinanet", sizes=(16, 32, 64, 128, 256))
    assert old.offset == new.offset == 0.5
    assert torch.equal(old(sizes).boxes, new(sizes).boxes)
    with pytest.warns(DeprecationWarning, match="per_level"):
        parts = new.grid_anchors(sizes)
    assert all(torch.equal(a, b) for a, b in zip(parts, new(sizes).per_level()))
    with pytest.warns(DeprecationWarning, match=r"generator\(\.\.\.\)\.levels"):
        assert new.levels(sizes) == list(new(sizes).levels)


def test_bad_feature_sizes() -> None:
    gen = AnchorGenerator()
    with pytest.raises(ValueError, match=r"feature_sizes must have one \(H, W\) per level \(5\), got 4"):
        gen([(1, 1)] * 4)
    with pytest.raises(ValueError, match=r"feature_sizes\[2\] must be a pair"):
        gen([(1, 1), (1, 1), (0, 1), (1, 1), (1, 1)])
    with pytest.raises(ValueError, match=r"feature_sizes\[0\] must be a pair"):
        gen([(1, 1, 1)] + [(1, 1)] * 4)
    with pytest.raises(ValueError, match="level must be in"):
        gen.cell_anchors(5)
    with pytest.raises(ValueError, match="image_size must be a pair"):
        gen.feature_sizes_for((0, 10))


def test_feature_sizes_accept_torch_size() -> None:
    gen = AnchorGenerator()
    feats = [torch.zeros(1, 1, 3, 5).shape[-2:]] * 5
    assert gen(feats).boxes.shape[0] == 5 * 15 * 9


def test_feature_sizes_for_is_ceil() -> None:
    gen = AnchorGenerator()
    assert gen.feature_sizes_for((800, 1216)) == [(100, 152), (50, 76), (25, 38), (13, 19), (7, 10)]
    assert gen.feature_sizes_for((1, 1)) == [(1, 1)] * 5


# ----------------------------------------------------------------------------- torchvision


def _sample_check(anchors: torch.Tensor, case: dict) -> None:
    assert anchors.shape[0] == case["num_anchors"]
    for row in case["rows"]:
        assert anchors[row[0]].tolist() == row[1:], row[0]
    flat = [float(v) for r in anchors.tolist() for v in r]
    assert math.fsum(flat) == case["sum"]
    assert math.fsum((k // 4 + 1) * v for k, v in enumerate(flat)) == case["index_weighted_sum"]


def test_torchvision_golden() -> None:
    # Generated by tests/data/make_anchor_goldens.py with torchvision 0.29.1 (see the
    # file's "peer"/"call" fields): retinanet_resnet50_fpn's anchor generator.
    golden = json.loads((DATA / "anchors_torchvision.json").read_text())
    gen = AnchorGenerator(convention="torchvision")
    for lvl, cells in enumerate(golden["cell_anchors"]):
        assert gen.cell_anchors(lvl).tolist() == cells
    for case in golden["cases"]:
        fs = gen.feature_sizes_for(tuple(case["image_size"]))
        assert [list(f) for f in fs] == case["feature_sizes"]
        _sample_check(gen(fs).boxes, case)


def test_torchvision_differs_from_paper() -> None:
    # Truncated integer sizes and rounded corners: a plausible "just use the paper" bug.
    tv = AnchorGenerator(convention="torchvision").cell_anchors(0)
    paper = AnchorGenerator().cell_anchors(0)
    assert tv[2].tolist() == [-35.0, -18.0, 35.0, 18.0]  # size int(32 * 2**(2/3)) = 50
    assert not torch.equal(tv, paper)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_torchvision_live_parity(dtype: torch.dtype) -> None:
    pytest.importorskip("torchvision")
    from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
    from torchvision.models.detection.image_list import ImageList

    sizes = tuple((x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3))) for x in PAPER_SIZES)
    tv = TVAnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5)
    gen = AnchorGenerator(convention="torchvision")
    for height, width in [(256, 384), (640, 512)]:
        fs = gen.feature_sizes_for((height, width))
        feats = [torch.zeros(1, 1, h, w, dtype=dtype) for h, w in fs]
        ref = tv(ImageList(torch.zeros(1, 3, height, width, dtype=dtype), [(height, width)]), feats)[0]
        assert torch.equal(gen(fs, dtype=dtype).boxes, ref)


@pytest.mark.parametrize("padded", [(800, 1088), (800, 1216), (1088, 800), (800, 1024), (768, 1024)])
def test_torchvision_live_parity_derived_strides(padded: tuple[int, int]) -> None:
    # torchvision's default transform pads to a multiple of 32, not 128: its strides at
    # P6/P7 are then image // feature (61, 114 ... at 800 px), reproduced by derive_strides.
    pytest.importorskip("torchvision")
    from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
    from torchvision.models.detection.image_list import ImageList

    sizes = tuple((x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3))) for x in PAPER_SIZES)
    tv = TVAnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5)
    gen = AnchorGenerator(convention="torchvision", derive_strides=True)
    fs = gen.feature_sizes_for(padded)
    feats = [torch.zeros(1, 1, h, w) for h, w in fs]
    ref = tv(ImageList(torch.zeros(1, 3, *padded), [padded]), feats)[0]
    assert torch.equal(gen(fs, image_size=padded).boxes, ref)
    nominal = AnchorGenerator(convention="torchvision")(fs).boxes
    assert torch.equal(nominal, ref) == (padded[0] % 128 == 0 and padded[1] % 128 == 0)


# ----------------------------------------------------------------------------- detectron2


def test_detectron2_test_default_anchor_generator() -> None:
    # facebookresearch/detectron2 tests/modeling/test_anchor_generator.py
    # (commit 273e3b9746473a7469550bf793bbfb4c0a47c7d5), test_default_anchor_generator:
    # DefaultAnchorGenerator(SIZES=[[32, 64]], ASPECT_RATIOS=[[0.25, 1, 4]], stride 4),
    # feature map 1 x 2, OFFSET 0.0.
    expected = [
        [-32.0, -8.0, 32.0, 8.0],
        [-16.0, -16.0, 16.0, 16.0],
        [-8.0, -32.0, 8.0, 32.0],
        [-64.0, -16.0, 64.0, 16.0],
        [-32.0, -32.0, 32.0, 32.0],
        [-16.0, -64.0, 16.0, 64.0],
        [-28.0, -8.0, 36.0, 8.0],
        [-12.0, -16.0, 20.0, 16.0],
        [-4.0, -32.0, 12.0, 32.0],
        [-60.0, -16.0, 68.0, 16.0],
        [-28.0, -32.0, 36.0, 32.0],
        [-12.0, -64.0, 20.0, 64.0],
    ]
    gen = AnchorGenerator(
        convention="detectron2", sizes=(32,), scales=(1.0, 2.0), ratios=(0.25, 1, 4), strides=(4,)
    )
    assert gen([(1, 2)]).boxes.tolist() == expected


def test_detectron2_test_default_anchor_generator_centered() -> None:
    # Same file, test_default_anchor_generator_centered: same sizes/ratios/stride with
    # detectron2's default OFFSET 0.5 for the explicit-argument constructor.
    expected = [
        [-30.0, -6.0, 34.0, 10.0],
        [-14.0, -14.0, 18.0, 18.0],
        [-6.0, -30.0, 10.0, 34.0],
        [-62.0, -14.0, 66.0, 18.0],
        [-30.0, -30.0, 34.0, 34.0],
        [-14.0, -62.0, 18.0, 66.0],
        [-26.0, -6.0, 38.0, 10.0],
        [-10.0, -14.0, 22.0, 18.0],
        [-2.0, -30.0, 14.0, 34.0],
        [-58.0, -14.0, 70.0, 18.0],
        [-26.0, -30.0, 38.0, 34.0],
        [-10.0, -62.0, 22.0, 66.0],
    ]
    gen = AnchorGenerator(
        convention="detectron2", sizes=(32,), scales=(1.0, 2.0), ratios=(0.25, 1, 4), strides=(4,), offset=0.5
    )
    assert gen([(1, 2)]).boxes.tolist() == expected


def test_detectron2_retinanet_cells_are_scale_major() -> None:
    cells = AnchorGenerator(convention="detectron2").cell_anchors(0, dtype=torch.float64)
    w, h = _wh(cells)
    # a = scale_index * 3 + ratio_index: the first three share the size 32.
    torch.testing.assert_close(w[:3] * h[:3], torch.full((3,), 1024.0, dtype=torch.float64))
    assert (h[:3] / w[:3]).tolist() == pytest.approx([0.5, 1.0, 2.0])


# ----------------------------------------------------------------------------- mmdetection


def test_mmdetection_test_retina_anchor_base_anchors() -> None:
    # open-mmlab/mmdetection tests/test_models/test_task_modules/test_prior_generators/
    # test_anchor_generator.py (commit 19bceba56284d440278e80cfde1d95460330ccbb),
    # test_retina_anchor: AnchorGenerator(octave_base_scale=4, scales_per_octave=3,
    # ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128]).base_anchors, compared there
    # with Tensor.allclose (4-decimal literals); levels P3 and P7 shown here.
    expected = {
        0: [
            [-22.6274, -11.3137, 22.6274, 11.3137],
            [-28.5088, -14.2544, 28.5088, 14.2544],
            [-35.9188, -17.9594, 35.9188, 17.9594],
            [-16.0000, -16.0000, 16.0000, 16.0000],
            [-20.1587, -20.1587, 20.1587, 20.1587],
            [-25.3984, -25.3984, 25.3984, 25.3984],
            [-11.3137, -22.6274, 11.3137, 22.6274],
            [-14.2544, -28.5088, 14.2544, 28.5088],
            [-17.9594, -35.9188, 17.9594, 35.9188],
        ],
        4: [
            [-362.0387, -181.0193, 362.0387, 181.0193],
            [-456.1401, -228.0701, 456.1401, 228.0701],
            [-574.7006, -287.3503, 574.7006, 287.3503],
            [-256.0000, -256.0000, 256.0000, 256.0000],
            [-322.5398, -322.5398, 322.5398, 322.5398],
            [-406.3747, -406.3747, 406.3747, 406.3747],
            [-181.0193, -362.0387, 181.0193, 362.0387],
            [-228.0701, -456.1401, 228.0701, 456.1401],
            [-287.3503, -574.7006, 287.3503, 574.7006],
        ],
    }
    gen = AnchorGenerator(convention="mmdetection")
    for level, rows in expected.items():
        assert gen.cell_anchors(level).allclose(torch.tensor(rows))  # ratio-major order
    # The test's grid: 9 anchors per location, (80, 80) ... (5, 5) feature maps.
    fs = [(80, 80), (40, 40), (20, 20), (10, 10), (5, 5)]
    assert [p.shape[0] for p in gen(fs).per_level()] == [57600, 14400, 3600, 900, 225]


def test_mmdetection_golden() -> None:
    # Generated by tests/data/make_anchor_goldens.py from mmdetection 2.x's own
    # mmdet/core/anchor/anchor_generator.py (ZwwWayne/mmdetection, a maintainer's fork,
    # commit 0c84b65b57b394c572d9320e6747f19256fd57be; the base-anchor code is unchanged in
    # upstream 3.x prior_generators/anchor_generator.py, commit 0802aeeff01c). RetinaNet
    # settings, float32: bit-exact.
    golden = json.loads((DATA / "anchors_mmdetection.json").read_text())
    gen = AnchorGenerator(convention="mmdetection")
    for level, cells in enumerate(golden["cell_anchors"]):
        assert gen.cell_anchors(level).tolist() == cells
    for case in golden["cases"]:
        _sample_check(gen([tuple(f) for f in case["feature_sizes"]]).boxes, case)


@pytest.mark.parametrize("name", ["torchvision", "detectron2", "mmdetection"])
def test_float32_peers_keep_float32_cells_in_float64(name: str) -> None:
    # torchvision, detectron2 and mmdetection build cell anchors in float32 and only then
    # cast (torchvision/mmdetection) to the requested dtype: float64 output must carry
    # the float32 values, not a more accurate float64 computation.
    gen = AnchorGenerator(convention=name)
    for level in range(5):
        c64 = gen.cell_anchors(level, dtype=torch.float64)
        assert torch.equal(c64, c64.float().double())
    assert not torch.equal(
        gen.cell_anchors(0, dtype=torch.float64),
        AnchorGenerator(order=gen.order).cell_anchors(0, dtype=torch.float64),
    )


def test_mmdetection_test_strides() -> None:
    # Same file, test_strides: AnchorGenerator([10], [1.], [1.], [10])([(2, 2)]).per_level(),
    # compared there with torch.equal.
    gen = AnchorGenerator(convention="mmdetection", sizes=(10,), scales=(1.0,), ratios=(1.0,), strides=(10,))
    expected = torch.tensor(
        [[-5.0, -5.0, 5.0, 5.0], [5.0, -5.0, 15.0, 5.0], [-5.0, 5.0, 5.0, 15.0], [5.0, 5.0, 15.0, 15.0]]
    )
    assert torch.equal(gen([(2, 2)]).per_level()[0], expected)


def test_mmdetection_docstring_example_base_size_differs_from_stride() -> None:
    # mmdet/models/task_modules/prior_generators/anchor_generator.py (commit
    # 0802aeeff01c3302c0d1e30cc75b7e443afda63a), AnchorGenerator docstring:
    # AnchorGenerator([16], [1.], [1.], [9]).grid_priors([(2, 2)]).
    gen = AnchorGenerator(convention="mmdetection", sizes=(9,), scales=(1.0,), ratios=(1.0,), strides=(16,))
    expected = [
        [-4.5, -4.5, 4.5, 4.5],
        [11.5, -4.5, 20.5, 4.5],
        [-4.5, 11.5, 4.5, 20.5],
        [11.5, 11.5, 20.5, 20.5],
    ]
    assert gen([(2, 2)]).boxes.tolist() == expected


def test_mmdetection_center_offset_lives_in_the_cell() -> None:
    # mmdet adds center_offset * base_size to the base anchors, and x * stride in the grid.
    gen = AnchorGenerator(
        convention="mmdetection", sizes=(10,), scales=(1.0,), ratios=(1.0,), strides=(10,), offset=0.5
    )
    assert gen.cell_anchors(0).tolist() == [[0.0, 0.0, 10.0, 10.0]]
    assert gen([(2, 2)]).levels[0].shift == 0.0
    assert gen([(2, 2)]).boxes[1].tolist() == [10.0, 0.0, 20.0, 10.0]


def test_mmdetection_float32_cells_differ_from_float64_paper() -> None:
    # mmdet computes base anchors in float32 (scales float32, w * w_ratio * scale), the
    # paper convention in float64: same geometry to ~1e-6 relative, not the same bits.
    mm = AnchorGenerator(convention="mmdetection").cell_anchors(4, dtype=torch.float64)
    paper = AnchorGenerator().cell_anchors(4, dtype=torch.float64)
    torch.testing.assert_close(mm, paper, rtol=1e-6, atol=0)
    assert not torch.equal(mm, paper)


# ----------------------------------------------------------------------------- Detectron


def _detectron_golden() -> dict:
    return json.loads((DATA / "anchors_detectron.json").read_text())


def test_detectron_golden_cells_and_grid_float64() -> None:
    # Generated by tests/data/make_anchor_goldens.py from facebookresearch/Detectron
    # (commit in the file's "peer" field): generate_anchors per (octave, aspect) as its
    # RetinaNet does, shifted by x * stride; float64 (NumPy's precision there).
    golden = _detectron_golden()
    gen = AnchorGenerator(convention="detectron")
    for level, cells in enumerate(golden["cell_anchors"]):
        assert gen.cell_anchors(level, dtype=torch.float64).tolist() == cells
    fs = [tuple(g["feature_size"]) for g in golden["grids"]]
    for got, g in zip(gen(fs, dtype=torch.float64).per_level(), golden["grids"]):
        assert got.tolist() == g["anchors"]


def test_detectron_float32_within_one_ulp() -> None:
    # Detectron rounds cell + shift (float64) once to float32; we round the cell and the
    # shift to float32 and then add, which keeps AnchorLevel's identity exact but may
    # differ from Detectron's float32 anchors by one rounding of the cell anchor.
    golden = _detectron_golden()
    gen = AnchorGenerator(convention="detectron")
    fs = [tuple(g["feature_size"]) for g in golden["grids"]]
    mismatched = 0
    for level, (got, g) in enumerate(zip(gen(fs).per_level(), golden["grids"])):
        ref = torch.tensor(g["anchors_float32"], dtype=torch.float32)
        bound = torch.finfo(torch.float32).eps * (ref.abs() + gen.cell_anchors(level).abs().max())
        assert bool(((got - ref).abs() <= bound).all())
        mismatched += int((got != ref).sum())
    assert mismatched < sum(h * w * 9 * 4 for h, w in fs) // 2


def test_detectron_generate_anchors_header_example() -> None:
    # detectron/modeling/generate_anchors.py header comment: Shaoqing Ren's MATLAB anchors
    # for stride 16, sizes (128, 256, 512), ratios (0.5, 1, 2) in ratio-major order. They
    # are 1-based pixel indices; generate_anchors returns the same boxes 0-based (-1).
    matlab = [
        [-83, -39, 100, 56],
        [-175, -87, 192, 104],
        [-359, -183, 376, 200],
        [-55, -55, 72, 72],
        [-119, -119, 136, 136],
        [-247, -247, 264, 264],
        [-35, -79, 52, 96],
        [-79, -167, 96, 184],
        [-167, -343, 184, 360],
    ]
    gen = AnchorGenerator(
        convention="detectron", sizes=(128,), scales=(1.0, 2.0, 4.0), strides=(16,), order="ratio-major"
    )
    expected = [[v - 1.0 for v in row] for row in matlab]
    assert gen.cell_anchors(0, dtype=torch.float64).tolist() == expected
    assert _detectron_golden()["stride16_sizes_128_256_512"] == expected


def test_detectron_cells_are_inclusive_and_scale_major() -> None:
    cells = AnchorGenerator(convention="detectron").cell_anchors(0, dtype=torch.float64)
    # P3, octave 0, ratio 0.5: sqrt(64 / 0.5) = 11.3 -> 11, 11 * 0.5 = 5.5 -> 6 (half to
    # even), times 4, inclusive corners around (8 - 1) / 2 = 3.5.
    assert cells[0].tolist() == [3.5 - 0.5 * 43, 3.5 - 0.5 * 23, 3.5 + 0.5 * 43, 3.5 + 0.5 * 23]
    # a = octave * 3 + ratio: anchors 0..2 are octave 0 (ratios 0.5, 1, 2).
    assert cells[1].tolist() == [-12.0, -12.0, 19.0, 19.0]


# ----------------------------------------------------------------------------- keras-retinanet


def test_keras_retinanet_golden() -> None:
    # Generated by tests/data/make_anchor_goldens.py from fizyr/keras-retinanet (commit in
    # the file): utils.anchors.anchors_for_shape with AnchorParameters.default, float64.
    golden = json.loads((DATA / "anchors_keras_retinanet.json").read_text())
    gen = AnchorGenerator(convention="keras-retinanet")
    for level, cells in enumerate(golden["cell_anchors"]):
        assert gen.cell_anchors(level, dtype=torch.float64).tolist() == cells
    for case in golden["cases"]:
        fs = gen.feature_sizes_for(tuple(case["image_size"]))
        assert [list(f) for f in fs] == case["feature_sizes"]
        _sample_check(gen(fs, dtype=torch.float64).boxes, case)


def test_keras_retinanet_test_anchors_for_shape_values() -> None:
    # fizyr/keras-retinanet tests/utils/test_anchors.py (commit
    # 7ac91dfbbacce77d6d9633fc09e16cd0ee71fd5e), test_anchors_for_shape_values: sizes [12],
    # strides [8], ratios [1, 2], scales [1, 2], image (16, 16); its expected rows are
    # closed forms compared with assert_almost_equal(decimal=6).
    gen = AnchorGenerator(
        convention="keras-retinanet", sizes=(12,), strides=(8,), ratios=(1.0, 2.0), scales=(1.0, 2.0)
    )
    anchors = gen(gen.feature_sizes_for((16, 16)), dtype=torch.float64).boxes
    assert anchors.shape == (16, 4)
    stride, size = 8, 12
    k = 0
    for cy in (stride / 2, stride * 3 / 2):
        for cx in (stride / 2, stride * 3 / 2):
            for r in (1.0, 2.0):  # ratio-major
                for s in (1.0, 2.0):
                    w, h = size * s / math.sqrt(r), size * s * math.sqrt(r)
                    expect = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
                    assert anchors[k].tolist() == pytest.approx(expect, abs=1.5e-6), k
                    k += 1


def test_keras_retinanet_test_anchors_for_shape_dimensions() -> None:
    # Same file, test_anchors_for_shape_dimensions: sizes [32, 64, 128], strides [8, 16, 32],
    # ratios [0.5, 1, 2, 3], scales [1, 1.2, 1.6], image (64, 64) -> 1008 anchors.
    gen = AnchorGenerator(
        convention="keras-retinanet",
        sizes=(32, 64, 128),
        strides=(8, 16, 32),
        ratios=(0.5, 1, 2, 3),
        scales=(1, 1.2, 1.6),
    )
    assert gen(gen.feature_sizes_for((64, 64))).boxes.shape == (1008, 4)


def test_keras_retinanet_centres_at_half_stride() -> None:
    gen = AnchorGenerator(convention="keras-retinanet")
    anchors = gen(gen.feature_sizes_for((64, 64)), dtype=torch.float64).boxes
    centres = (anchors[:9, :2] + anchors[:9, 2:]) / 2
    torch.testing.assert_close(centres, torch.full((9, 2), 4.0, dtype=torch.float64), rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- all presets


@pytest.mark.parametrize("name", CONVENTIONS)
def test_presets_share_the_paper_geometry(name: str) -> None:
    # Every preset is RetinaNet's P3-P7, A = 9, sizes 32..512: areas within 5 % of the
    # paper's and aspect ratios within 10 % (torchvision truncates sizes and rounds
    # corners: up to ~3.5 % at P3), except Detectron, which rounds the ratio's sides at
    # stride scale before scaling: its P3 ratio-2 anchors are 6 x 12 px scaled, 12.5 %
    # larger than 32^2, with h/w = 2 exactly but ratio 0.5 becoming 6/11.
    gen = AnchorGenerator(convention=name)
    paper = AnchorGenerator(order=gen.order)
    assert gen.num_anchors_per_location == 9 and gen.strides == (8, 16, 32, 64, 128)
    for level in range(5):
        w, h = _wh(gen.cell_anchors(level, dtype=torch.float64))
        pw, ph = _wh(paper.cell_anchors(level, dtype=torch.float64))
        if name == "detectron":  # inclusive corners: width = x2 - x1 + 1
            w, h = w + 1, h + 1
        area_tol = 0.13 if name == "detectron" else 0.05
        torch.testing.assert_close(w * h, pw * ph, rtol=area_tol, atol=0)
        torch.testing.assert_close(h / w, ph / pw, rtol=0.1, atol=0)


def test_preset_offsets_and_orders() -> None:
    expect = {
        "paper": (0.0, "ratio-major"),
        "torchvision": (0.0, "ratio-major"),
        "detectron2": (0.0, "scale-major"),
        "mmdetection": (0.0, "ratio-major"),
        "detectron": (0.5, "scale-major"),
        "keras-retinanet": (0.5, "ratio-major"),
    }
    for name, (offset, order) in expect.items():
        gen = AnchorGenerator(convention=name)
        assert (gen.offset, gen.order) == (offset, order), name


def test_preset_overrides_keep_rules() -> None:
    gen = AnchorGenerator(convention="torchvision", sizes=(16,), strides=(4,))
    # torchvision's truncation int(16 * 2**(1/3)) = 20, int(16 * 2**(2/3)) = 25; ratio 1
    # corners +-size / 2 rounded half to even: 25 / 2 = 12.5 -> 12, so width 24.
    w, h = _wh(gen.cell_anchors(0))
    assert w[3:6].tolist() == [16.0, 20.0, 24.0]
    assert h[3:6].tolist() == [16.0, 20.0, 24.0]


def test_levels_and_cells_follow_device_and_dtype() -> None:
    gen = AnchorGenerator()
    fs = [(2, 3)] * 5
    lv = gen(fs, device=torch.device("cpu"), dtype=torch.float64).levels[2]
    assert lv.cell_anchors.dtype == torch.float64 and lv.cell_anchors.device.type == "cpu"
    assert gen.cell_anchors(2, dtype=torch.float16).dtype == torch.float16
    # The value is immutable: its levels are a tuple, the layout frozen.
    anchors = gen(fs)
    assert isinstance(anchors.levels, tuple) and len(anchors.per_level()) == 5
    with pytest.raises(AttributeError):
        anchors.levels = ()  # type: ignore[misc]


def test_scale_major_override_permutes_the_same_cells() -> None:
    rm = AnchorGenerator().cell_anchors(1, dtype=torch.float64)
    sm = AnchorGenerator(order="scale-major").cell_anchors(1, dtype=torch.float64)
    perm = [i * 3 + j for j in range(3) for i in range(3)]  # (scale j, ratio i) -> ratio-major index
    assert torch.equal(sm, rm[perm])
    assert not torch.equal(sm, rm)


# ------------------------------------------------------ per-axis and derived strides


def _loop_anchors_hw(gen: AnchorGenerator, feature_sizes, image_size=None, dtype=torch.float64):
    """Plain loop with separate strides per axis (documented AnchorLevel identity)."""
    rows = []
    levels = gen(feature_sizes, dtype=dtype, image_size=image_size).levels
    for lvl, (h, w) in enumerate(feature_sizes):
        lv, cells = levels[lvl], gen.cell_anchors(lvl, dtype=dtype)
        for y in range(h):
            for x in range(w):
                t = torch.tensor(
                    [x * lv.stride_w + lv.shift_x, y * lv.stride_h + lv.shift_y] * 2, dtype=dtype
                )
                rows.extend(cells[a] + t for a in range(cells.shape[0]))
    return torch.stack(rows)


def test_stride_pair_is_height_then_width() -> None:
    gen = AnchorGenerator(sizes=(8,), scales=(1.0,), ratios=(1.0,), strides=((16, 8),), offset=0.5)
    lv = gen([(2, 3)]).levels[0]
    assert (lv.stride_h, lv.stride_w, lv.shift_y, lv.shift_x) == (16, 8, 8.0, 4.0)
    # centres: x in {4, 12, 20} (stride 8), y in {8, 24} (stride 16)
    centres = (gen([(2, 3)]).boxes[:, :2] + gen([(2, 3)]).boxes[:, 2:]) / 2
    assert centres.tolist() == [[4.0, 8.0], [12.0, 8.0], [20.0, 8.0], [4.0, 24.0], [12.0, 24.0], [20.0, 24.0]]
    assert gen.strides == ((16, 8),)
    assert gen.feature_sizes_for((33, 33)) == [(3, 5)]
    with pytest.raises(ValueError, match="stride_h and stride_w must be equal"):
        _ = lv.stride
    with pytest.raises(ValueError, match="shift_y and shift_x must be equal"):
        _ = lv.shift
    # an equal pair is the same as an int
    assert AnchorGenerator(strides=(8, 16, (32, 32), 64, 128)).strides == (8, 16, 32, 64, 128)


@pytest.mark.parametrize("name", ["paper", "torchvision", "detectron2", "mmdetection", "keras-retinanet"])
def test_per_axis_strides_follow_the_documented_identity(name: str) -> None:
    gen = AnchorGenerator(convention=name, strides=(8, (16, 12), 32, (64, 40), 128))
    sizes = [(3, 4), (2, 3), (2, 2), (1, 2), (1, 1)]
    assert torch.equal(gen(sizes, dtype=torch.float64).boxes, _loop_anchors_hw(gen, sizes))


def test_mmdetection_stride_pairs_swap_to_height_width() -> None:
    # mmdet AnchorGenerator(strides=[(stride_w, stride_h)]) = [(10, 20)]: base size
    # min(10, 20) = 10, shift_x = x * 10, shift_y = y * 20 (its grid_priors). Here the
    # same level is strides=[(20, 10)] (height first).
    gen = AnchorGenerator(
        convention="mmdetection", sizes=(10,), scales=(1.0,), ratios=(1.0,), strides=((20, 10),)
    )
    assert gen.cell_anchors(0).tolist() == [[-5.0, -5.0, 5.0, 5.0]]
    assert gen([(2, 2)]).boxes.tolist() == [
        [-5.0, -5.0, 5.0, 5.0],
        [5.0, -5.0, 15.0, 5.0],
        [-5.0, 15.0, 5.0, 25.0],
        [5.0, 15.0, 15.0, 25.0],
    ]


def test_derived_strides_are_torchvisions_rule() -> None:
    # torchvision AnchorGenerator.forward: stride = image_size // feature_size per axis,
    # image_size the padded batch (800 x 1216 for a 427 x 640 COCO image at min_size 800).
    tv = AnchorGenerator(convention="torchvision", derive_strides=True)
    sizes = tv.feature_sizes_for((800, 1216))
    assert sizes == [(100, 152), (50, 76), (25, 38), (13, 19), (7, 10)]
    assert tv.level_strides(sizes, image_size=(800, 1216)) == [
        (8, 8),
        (16, 16),
        (32, 32),
        (61, 64),
        (114, 121),
    ]
    lv = tv(sizes, image_size=(800, 1216)).levels[3]
    anchors = tv(sizes, image_size=(800, 1216)).boxes
    # last P6 anchor, cell 4 (ratio 1, scale 2**(1/3)): cell + (18 * 64, 12 * 61)
    cell = tv.cell_anchors(3)[4]
    assert torch.equal(anchors[lv.end - 5], cell + torch.tensor([1152.0, 732.0, 1152.0, 732.0]))
    # the nominal generator puts it at (18 * 64, 12 * 64): 36 px lower
    nominal = AnchorGenerator(convention="torchvision")
    assert float(nominal(sizes).boxes[lv.end - 5, 1] - anchors[lv.end - 5, 1]) == 36.0
    # a multiple of 128 gives the nominal strides
    same = tv.feature_sizes_for((768, 1024))
    assert torch.equal(tv(same, image_size=(768, 1024)).boxes, nominal(same).boxes)


def test_derived_strides_cache_key_includes_the_image_size() -> None:
    tv = AnchorGenerator(convention="torchvision", derive_strides=True)
    sizes = [(100, 136), (50, 68), (25, 34), (13, 17), (7, 9)]
    a = tv(sizes, image_size=(800, 1088)).boxes
    b = tv(sizes, image_size=(800, 1100)).boxes  # same feature sizes, W // 9 = 122 at P7
    assert a is tv(sizes, image_size=(800, 1088)).boxes
    assert not torch.equal(a, b)
    assert tv.level_strides(sizes, image_size=(800, 1100))[4] == (114, 122)
    assert float(b[-1, 0] - a[-1, 0]) == 8 * 2  # x = 8 columns * (122 - 120)


def test_derived_stride_errors() -> None:
    tv = AnchorGenerator(convention="torchvision", derive_strides=True)
    sizes = [(4, 4), (2, 2), (1, 1), (1, 1), (1, 1)]
    with pytest.raises(ValueError, match="image_size must be given when strides are derived"):
        tv(sizes)
    with pytest.raises(
        ValueError, match=r"image_size must be at least every feature size.*feature_sizes\[0\]"
    ):
        tv(sizes, image_size=(3, 64))
    with pytest.raises(ValueError, match="image_size must be a pair"):
        tv(sizes, image_size=(32,))
    with pytest.raises(TypeError, match="derive_strides must be a bool"):
        AnchorGenerator(derive_strides=1)
    with pytest.raises(ValueError, match="strides must be square with convention 'detectron'"):
        AnchorGenerator(convention="detectron", strides=(8, 16, 32, 64, (128, 64)))
    with pytest.raises(ValueError, match=r"strides\[1\] must be an int or a \(stride_h, stride_w\) pair"):
        AnchorGenerator(strides=(8, (16, 16, 16), 32, 64, 128))
    with pytest.raises(ValueError, match=r"strides\[4\]\[1\] must be positive"):
        AnchorGenerator(strides=(8, 16, 32, 64, (128, 0)))
    # nominal generators check but do not need image_size
    assert torch.equal(AnchorGenerator()(sizes, image_size=(32, 32)).boxes, AnchorGenerator()(sizes).boxes)
