"""Matrix-level matching: torchvision parity, batching, low-quality modes, guard, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from focal_detect.constants import BACKGROUND, IGNORE
from focal_detect.matching import Matcher, match_anchors

GOLDEN = json.loads((Path(__file__).parent / "data" / "matcher_torchvision.json").read_text())


def _quality(case: dict) -> torch.Tensor:
    return torch.tensor(case["quality_int"], dtype=torch.float32) / case["scale"]


def _mmdet_reference(q: torch.Tensor, high: float, low: float, min_pos_iou: float) -> torch.Tensor:
    """mmdetection MaxIoUAssigner.assign_wrt_overlaps (gt_max_assign_all=True,
    match_low_quality=True), written as its plain loop and mapped to our codes:
    mmdet 0 -> BACKGROUND, -1 -> IGNORE, i + 1 -> i."""
    m, n = q.shape
    vals, arg = q.max(dim=0)
    out = [IGNORE] * n
    for j in range(n):
        if 0 <= vals[j] < low:
            out[j] = BACKGROUND
        if vals[j] >= high:
            out[j] = int(arg[j])
    highest = q.max(dim=1).values
    for i in range(m):  # later boxes overwrite earlier ones
        if highest[i] >= min_pos_iou:
            for j in range(n):
                if q[i, j] == highest[i]:
                    out[j] = i
    return torch.tensor(out)


# ------------------------------------------------------------------ torchvision parity


@pytest.mark.parametrize("idx", range(0, len(GOLDEN["matrix_cases"])))
def test_matches_torchvision_golden_matrices(idx: int) -> None:
    # Peer: torchvision 0.29.1 Matcher(high, low, allow_low_quality_matches)(q), see
    # tests/data/make_matcher_goldens.py. Guard off = torchvision-exact.
    case = GOLDEN["matrix_cases"][idx]
    got = Matcher(case["high"], case["low"], case["allow_low_quality_matches"], min_low_quality_iou=None)(
        _quality(case)
    )
    assert got.tolist() == case["expected"]


def test_golden_set_exercises_the_quirks() -> None:
    # the goldens must contain ties, an all-zero box row and both negative codes
    cases = GOLDEN["matrix_cases"]
    assert any(all(v == 0 for v in c["quality_int"][0]) for c in cases)
    assert any(IGNORE in c["expected"] for c in cases)
    assert any(BACKGROUND in c["expected"] for c in cases)


def test_matches_torchvision_golden_boxes() -> None:
    # Peer: torchvision 0.29.1 Matcher(0.5, 0.4, True)(box_iou(gt_boxes, anchors)).
    from focal_detect.matching import assign_anchors

    (case,) = GOLDEN["box_cases"]
    anchors = torch.tensor(case["anchors"])
    gts = [torch.tensor(img["gt_boxes"]) for img in case["images"]]
    labels = [torch.zeros(len(g), dtype=torch.int64) for g in gts]
    out = assign_anchors(anchors, gts, labels, min_low_quality_iou=None)
    for i, img in enumerate(case["images"]):
        assert out.matched_gt[i].tolist() == img["expected"], i


def test_guard_differs_from_torchvision_only_on_boxes_overlapping_nothing() -> None:
    # Golden image 0 holds a box outside every anchor: torchvision (guard off) turns all
    # zero-IoU anchors into matches; the default guard does not.
    from focal_detect.matching import assign_anchors

    (case,) = GOLDEN["box_cases"]
    anchors = torch.tensor(case["anchors"])
    img = case["images"][0]
    gt = torch.tensor(img["gt_boxes"])
    out = assign_anchors(anchors, [gt], [torch.zeros(len(gt), dtype=torch.int64)])
    tv = torch.tensor(img["expected"])
    assert (tv >= 0).float().mean() > 0.5  # the quirk: most anchors matched
    assert (out.matched_gt[0] >= 0).sum() < (tv >= 0).sum()
    for other in case["images"][1:]:
        g = torch.tensor(other["gt_boxes"])
        res = assign_anchors(anchors, [g], [torch.zeros(len(g), dtype=torch.int64)])
        assert res.matched_gt[0].tolist() == other["expected"]


@given(
    m=st.integers(1, 6),
    n=st.integers(1, 25),
    levels=st.sampled_from([3, 5, 11]),
    lq=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_live_parity_with_torchvision(m: int, n: int, levels: int, lq: bool, seed: int) -> None:
    tv = pytest.importorskip("torchvision.models.detection._utils")
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, levels, (m, n), generator=g).float() / (levels - 1)  # many ties
    expected = tv.Matcher(0.5, 0.4, lq)(q.clone())
    got = match_anchors(q, allow_low_quality_matches=lq, min_low_quality_iou=None)
    assert torch.equal(got, expected)


# ----------------------------------------------------------------- semantics by value


def test_thresholds_and_codes() -> None:
    q = torch.tensor([[0.5, 0.49, 0.4, 0.39, 0.0]])
    got = match_anchors(q, allow_low_quality_matches=False)
    assert got.tolist() == [0, IGNORE, IGNORE, BACKGROUND, BACKGROUND]


def test_ties_go_to_the_lowest_box_index() -> None:
    q = torch.tensor([[0.3, 0.7, 0.6], [0.3, 0.7, 0.6], [0.1, 0.2, 0.6]])
    got = match_anchors(q, allow_low_quality_matches=False)
    assert got.tolist() == [BACKGROUND, 0, 0]


def test_low_quality_keeps_the_argmax_box_torchvision() -> None:
    # anchor 1 is box 1's best (0.3) but box 0 overlaps it more (0.35): it keeps box 0
    q = torch.tensor([[0.9, 0.35, 0.0], [0.1, 0.3, 0.2]])
    assert match_anchors(q).tolist() == [0, 0, BACKGROUND]
    assert match_anchors(q, low_quality="mmdetection").tolist() == [0, 1, BACKGROUND]


def test_anchor_tied_for_best_of_two_boxes_keeps_its_argmax() -> None:
    # anchor 0 is the best of both boxes with the same IoU: torchvision keeps box 0,
    # mmdetection's later box (1) overwrites.
    q = torch.tensor([[0.3, 0.1], [0.3, 0.2]])
    assert match_anchors(q).tolist() == [0, BACKGROUND]
    assert match_anchors(q, low_quality="mmdetection").tolist() == [1, BACKGROUND]


def test_mmdetection_low_quality_overrides_a_high_match() -> None:
    q = torch.tensor([[0.9, 0.0], [0.8, 0.1]])  # anchor 0 is box 1's best
    assert match_anchors(q).tolist() == [0, BACKGROUND]
    assert match_anchors(q, low_quality="mmdetection").tolist() == [1, BACKGROUND]


@given(
    m=st.integers(1, 5),
    n=st.integers(1, 20),
    seed=st.integers(0, 2**16),
    high=st.sampled_from([0.5, 0.7]),
    min_pos=st.sampled_from([0.0, 0.3]),
)
def test_mmdetection_mode_equals_reference_loop(m, n, seed, high, min_pos) -> None:
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 6, (m, n), generator=g).float() / 5
    # mmdet's min_pos_iou is ">="; our guard is ">": 0.0 with ">=" == guard off
    guard = None if min_pos == 0.0 else min_pos - 1e-6
    got = match_anchors(
        q, high_threshold=high, low_threshold=0.4, low_quality="mmdetection", min_low_quality_iou=guard
    )
    assert torch.equal(got, _mmdet_reference(q, high, 0.4, min_pos))


def test_guard_blocks_the_zero_overlap_quirk() -> None:
    q = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.6, 0.2, 0.0]])
    # torchvision: box 0's best is 0 -> every zero-IoU anchor restored to argmax (box 0)
    assert match_anchors(q, min_low_quality_iou=None).tolist() == [0, 1, 1, 0]
    assert match_anchors(q).tolist() == [BACKGROUND, 1, BACKGROUND, BACKGROUND]
    assert match_anchors(q, low_quality="mmdetection", min_low_quality_iou=None).tolist() == [0, 1, 0, 0]


def test_guard_threshold_is_strict() -> None:
    q = torch.tensor([[0.2, 0.1], [0.6, 0.0]])
    assert match_anchors(q, min_low_quality_iou=0.2).tolist() == [1, BACKGROUND]
    assert match_anchors(q, min_low_quality_iou=0.19).tolist() == [1, BACKGROUND]
    q2 = torch.tensor([[0.2, 0.1]])
    assert match_anchors(q2, min_low_quality_iou=0.2).tolist() == [BACKGROUND, BACKGROUND]
    assert match_anchors(q2, min_low_quality_iou=0.19).tolist() == [0, BACKGROUND]


def test_empty_ground_truth_gives_background() -> None:
    assert match_anchors(torch.zeros(0, 3)).tolist() == [BACKGROUND] * 3
    assert match_anchors(torch.zeros(2, 0, 3)).tolist() == [[BACKGROUND] * 3] * 2
    assert match_anchors(torch.zeros(2, 0)).shape == (0,)


def test_all_invalid_rows_give_background() -> None:
    q = torch.full((1, 2, 3), 0.9)
    valid = torch.zeros(1, 2, dtype=torch.bool)
    assert match_anchors(q, valid).tolist() == [[BACKGROUND] * 3]


@given(
    b=st.integers(1, 4),
    m=st.integers(0, 5),
    n=st.integers(1, 12),
    seed=st.integers(0, 2**16),
    mode=st.sampled_from(["torchvision", "mmdetection"]),
    guard=st.sampled_from([None, 0.0]),
)
def test_batched_with_mask_equals_per_image(b, m, n, seed, mode, guard) -> None:
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 6, (b, m, n), generator=g).float() / 5
    valid = torch.rand(b, m, generator=g) < 0.7
    got = match_anchors(q, valid, low_quality=mode, min_low_quality_iou=guard)
    for i in range(b):
        rows = valid[i].nonzero().flatten()
        ref = match_anchors(q[i, rows], low_quality=mode, min_low_quality_iou=guard)
        ref = torch.where(ref >= 0, rows[ref.clamp(min=0)] if len(rows) else ref, ref)
        assert torch.equal(got[i], ref)


def test_half_precision_matrix_gives_the_same_matches() -> None:
    q = torch.tensor([[0.5, 0.25, 0.375], [0.75, 0.25, 0.125]])
    for dt in (torch.float16, torch.bfloat16, torch.float64):
        assert torch.equal(match_anchors(q.to(dt)), match_anchors(q))


def test_matcher_class_keeps_hyper_parameters_and_codes() -> None:
    m = Matcher(0.6, 0.3, False, low_quality="mmdetection", min_low_quality_iou=None)
    assert (m.high_threshold, m.low_threshold, m.allow_low_quality_matches) == (0.6, 0.3, False)
    assert (m.BELOW_LOW_THRESHOLD, m.BETWEEN_THRESHOLDS) == (BACKGROUND, IGNORE)
    assert m(torch.tensor([[0.59, 0.6, 0.29]])).tolist() == [IGNORE, 0, BACKGROUND]
    assert "mmdetection" in repr(m)


def test_matcher_does_not_modify_its_input() -> None:
    q = torch.tensor([[0.0, 0.2], [0.7, 0.1]])
    before = q.clone()
    match_anchors(q, torch.tensor([True, False]))
    assert torch.equal(q, before)


# ------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"high_threshold": 1.5}, ValueError, "high_threshold must be in"),
        ({"low_threshold": -0.1}, ValueError, "low_threshold must be in"),
        (
            {"high_threshold": 0.3, "low_threshold": 0.4},
            ValueError,
            "low_threshold must be <= high_threshold",
        ),
        ({"allow_low_quality_matches": 1}, TypeError, "allow_low_quality_matches must be a bool"),
        ({"low_quality": "detectron"}, ValueError, "low_quality must be one of"),
        ({"min_low_quality_iou": 2.0}, ValueError, "min_low_quality_iou must be in"),
        ({"high_threshold": "0.5"}, TypeError, "high_threshold must be a real number"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, exc, match) -> None:
    with pytest.raises(exc, match=match):
        Matcher(**kwargs)
    with pytest.raises(exc, match=match):
        match_anchors(torch.zeros(1, 1), **kwargs)


def test_bad_matrices_name_the_argument() -> None:
    with pytest.raises(ValueError, match=r"quality must have shape \(M, N\) or \(B, M, N\)"):
        match_anchors(torch.zeros(3))
    with pytest.raises(TypeError, match="quality must be a floating-point tensor"):
        match_anchors(torch.zeros(2, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="quality must be a torch.Tensor"):
        match_anchors([[0.5]])
    with pytest.raises(ValueError, match=r"valid must have shape \(2, 3\)"):
        match_anchors(torch.zeros(2, 3, 4), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="valid must be a bool tensor"):
        match_anchors(torch.zeros(2, 3, 4), torch.ones(2, 3))
    with pytest.raises(ValueError, match="valid must be on the same device"):
        match_anchors(torch.zeros(2, 3, 4), torch.ones(2, 3, dtype=torch.bool, device="meta"))
