"""Batched anchor assignment: windowed == dense == per-image matcher, targets, crowds,
memory cap, errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import valid_boxes

from focal_detect.anchors import AnchorGenerator, Anchors
from focal_detect.boxes import box_iou
from focal_detect.coding import BoxCoder
from focal_detect.constants import BACKGROUND, IGNORE
from focal_detect.matching import AnchorAssigner, AnchorAssignment, assign_anchors, match_anchors
from focal_detect.matching import dense as dense_mod
from focal_detect.matching.dense import plan_dense
from focal_detect.matching.pairs import iou_pairs

GEN = AnchorGenerator()
# A 128 px image: P3 16x16 ... P7 1x1 -> 2304 + 576 + 144 + 36 + 9 = 3069 anchors.
SIZES = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
GRID = GEN(SIZES)  # Anchors: boxes + layout (the windowed path)
ANCHORS = GRID.boxes  # a plain tensor (the dense fallback)
MODES = [
    dict(),
    dict(min_low_quality_iou=None),
    dict(low_quality="mmdetection"),
    dict(low_quality="mmdetection", min_low_quality_iou=None),
    dict(allow_low_quality_matches=False),
    dict(min_low_quality_iou=0.3),
    dict(high_threshold=0.7, low_threshold=0.3),
    dict(high_threshold=0.4, low_threshold=0.4),
    dict(low_threshold=0.0),
    dict(low_threshold=0.0, high_threshold=0.0),
]


def _labels(gts: list[torch.Tensor], seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 9, (len(b),), generator=g) for b in gts]


def _per_image_reference(anchors, gts, **kw) -> torch.Tensor:
    """Per-image loop: the dense IoU matrix + match_anchors (the matrix matcher)."""
    rows = []
    for b in gts:
        q = box_iou(b, anchors) if len(b) else anchors.new_zeros((0, len(anchors)))
        rows.append(match_anchors(q, **kw))
    return torch.stack(rows)


def _assert_same(a: AnchorAssignment, b: AnchorAssignment) -> None:
    assert torch.equal(a.matched_gt, b.matched_gt)
    assert torch.equal(a.labels, b.labels)
    assert torch.equal(a.foreground, b.foreground)
    assert torch.equal(a.box_targets, b.box_targets)


def _adversarial() -> list[torch.Tensor]:
    a = ANCHORS
    return [
        # partly outside the image, huge, tiny (2 px: best IoU small), degenerate
        torch.tensor(
            [
                [-40.0, -30.0, 20.0, 25.0],
                [0.0, 0.0, 400.0, 300.0],
                [61.0, 70.0, 63.0, 72.0],
                [5.0, 5.0, 5.0, 30.0],
            ]
        ),
        # exactly anchors (IoU 1), and boxes touching an anchor edge (IoU exactly 0)
        torch.stack([a[100], a[2400], a[3068]]),
        torch.tensor(
            [
                [a[0, 2].item(), 0.0, a[0, 2].item() + 8.0, 16.0],
                [-50.0, -50.0, a[0, 0].item(), a[0, 1].item()],
            ]
        ),
        # duplicates (ties between boxes) and a box far outside every anchor
        torch.tensor([[30.0, 30.0, 70.0, 60.0], [30.0, 30.0, 70.0, 60.0], [1000.0, 1000.0, 1010.0, 1012.0]]),
        torch.zeros((0, 4)),
        # thin boxes along a row of anchors; quarter-pixel grid (many equal IoUs)
        torch.tensor(
            [
                [0.0, 40.0, 128.0, 41.0],
                [16.25, 16.25, 48.25, 48.25],
                [16.0, 16.0, 48.0, 48.0],
                [112.0, 112.0, 128.0, 128.0],
            ]
        ),
    ]


# --------------------------------------------------------- exactness of both paths


@pytest.mark.parametrize("kw", MODES, ids=[str(k) for k in MODES])
def test_adversarial_windowed_equals_dense_equals_matrix_matcher(kw) -> None:
    gts = _adversarial()
    labels = _labels(gts)
    dense = assign_anchors(ANCHORS, gts, labels, **kw)
    fast = assign_anchors(GRID, gts, labels, **kw)
    _assert_same(fast, dense)
    assert torch.equal(dense.matched_gt, _per_image_reference(ANCHORS, gts, **kw))


def test_adversarial_cases_hit_the_edge_conditions() -> None:
    # the fixture must contain exact zeros at touching edges, IoU 1 and a no-overlap box
    gts = _adversarial()
    iou_touch = box_iou(gts[2], ANCHORS)
    assert iou_touch[0, 0] == 0 and iou_touch[1, 0] == 0
    assert box_iou(gts[1], ANCHORS).amax(1).tolist() == [1.0, 1.0, 1.0]
    assert box_iou(gts[3], ANCHORS)[2].max() == 0
    tiny_best = box_iou(gts[0][2:3], ANCHORS).max()
    assert 0 < tiny_best < 0.01


def test_guard_off_matches_the_whole_image_of_a_box_overlapping_nothing() -> None:
    gts = [torch.tensor([[30.0, 30.0, 70.0, 60.0], [1000.0, 1000.0, 1010.0, 1012.0]])]
    off = assign_anchors(GRID, gts, _labels(gts), min_low_quality_iou=None)
    on = assign_anchors(GRID, gts, _labels(gts))
    assert bool(off.foreground.all())  # torchvision's quirk, reproduced
    assert int(on.foreground.sum()) < 60
    ref = match_anchors(box_iou(gts[0], ANCHORS), min_low_quality_iou=None)
    assert torch.equal(off.matched_gt[0], ref)


def test_guard_is_strict_at_a_boxs_exact_best_iou() -> None:
    gts = [torch.tensor([[3.0, 5.0, 9.0, 29.0], [60.0, 60.0, 100.0, 90.0]])]
    best = float(box_iou(gts[0], ANCHORS)[0].max())
    assert 0 < best < 0.4  # box 0 has only low-quality anchors
    below = float(torch.nextafter(torch.tensor(best), torch.tensor(0.0)))
    for anchors in (ANCHORS, GRID):
        at = assign_anchors(anchors, gts, _labels(gts), min_low_quality_iou=best)
        under = assign_anchors(anchors, gts, _labels(gts), min_low_quality_iou=below)
        assert not bool((at.matched_gt == 0).any())
        assert bool((under.matched_gt == 0).any())


@given(
    gts=st.lists(valid_boxes(max_n=6, max_coord=160.0), min_size=1, max_size=3),
    shift=st.floats(-40.0, 0.0),
    kw=st.sampled_from(MODES),
)
@settings(max_examples=40)
def test_windowed_equals_dense_property(gts, shift, kw) -> None:
    gts = [g + shift for g in gts]
    labels = _labels(gts)
    dense = assign_anchors(ANCHORS, gts, labels, **kw)
    fast = assign_anchors(GRID, gts, labels, **kw)
    _assert_same(fast, dense)
    # the non-grid fallback, the windowed path and the matrix matcher: one result
    assert torch.equal(dense.matched_gt, _per_image_reference(ANCHORS, gts, **kw))


@given(
    gts=st.lists(valid_boxes(max_n=5, max_coord=140.0), min_size=1, max_size=3),
    mode=st.sampled_from(["torchvision", "mmdetection"]),
)
@settings(max_examples=30)
def test_batched_equals_per_image(gts, mode) -> None:
    labels = _labels(gts)
    batch = assign_anchors(GRID, gts, labels, low_quality=mode)
    for i, (g, lab) in enumerate(zip(gts, labels)):
        one = assign_anchors(GRID, [g], [lab], low_quality=mode)
        assert torch.equal(batch.matched_gt[i], one.matched_gt[0])
        assert torch.equal(batch.box_targets[i], one.box_targets[0])


@given(
    gts=st.lists(valid_boxes(max_n=5, max_coord=140.0), min_size=1, max_size=2),
    mode=st.sampled_from(["torchvision", "mmdetection"]),
)
@settings(max_examples=30)
def test_each_box_claims_its_best_anchors(gts, mode) -> None:
    gts = [g + torch.tensor([0.0, 0.0, 1.0, 1.0]) for g in gts]  # positive areas
    out = assign_anchors(GRID, gts, _labels(gts), low_quality=mode)
    for i, g in enumerate(gts):
        if not len(g):
            continue
        iou = box_iou(g, ANCHORS)
        best = iou.amax(1)
        for j in range(len(g)):
            if best[j] <= 0:  # the guard: a box overlapping nothing claims nothing
                continue
            mine = (iou[j] == best[j]).nonzero().flatten()
            got = out.matched_gt[i, mine]
            assert bool((got >= 0).all())
            if mode == "torchvision":  # each keeps its own arg-max box
                assert torch.equal(got, iou[:, mine].max(0).indices)
            else:  # the highest box index claiming it
                assert bool((got >= j).all())


@given(gts=st.lists(valid_boxes(max_n=5, max_coord=140.0), min_size=1, max_size=3))
@settings(max_examples=25)
def test_labels_box_targets_and_foreground_are_consistent(gts) -> None:
    labels = _labels(gts, seed=3)
    out = assign_anchors(GRID, gts, labels)
    assert torch.equal(out.foreground, out.matched_gt >= 0)
    neg = ~out.foreground
    assert torch.equal(out.labels[neg], out.matched_gt[neg])  # same negative codes
    assert bool(((out.labels >= IGNORE) & (out.labels < 9)).all())
    assert bool((out.box_targets[neg] == 0).all())
    coder = BoxCoder()
    for i, (g, lab) in enumerate(zip(gts, labels)):
        fg = out.foreground[i].nonzero().flatten()
        m = out.matched_gt[i, fg]
        assert torch.equal(out.labels[i, fg], lab[m])
        torch.testing.assert_close(out.box_targets[i, fg], coder.encode(g[m], ANCHORS[fg]))


def test_labels_are_accepted_by_the_focal_loss() -> None:
    losses = pytest.importorskip("focal_detect.losses")
    if not hasattr(losses, "sigmoid_focal_loss_from_labels"):
        pytest.skip("losses.sigmoid_focal_loss_from_labels not available yet")
    gts = _adversarial()[:2]
    out = assign_anchors(GRID, gts, _labels(gts))
    logits = torch.zeros(len(gts), len(ANCHORS), 9)
    loss = losses.sigmoid_focal_loss_from_labels(logits, out.labels, reduction="none")
    # at logit 0 every class term is 0.25*0.5^2*log2 (positive) or 0.75*0.5^2*log2:
    # ignored anchors contribute exactly 0, others do not
    per_anchor = loss.reshape(len(gts), len(ANCHORS), -1).sum(-1)
    assert bool((per_anchor[out.labels == IGNORE] == 0).all())
    assert bool((per_anchor[out.labels != IGNORE] > 0).all())


def test_values_of_a_hand_made_case() -> None:
    anchors = torch.tensor(
        [[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [20.0, 0.0, 30.0, 10.0], [100.0, 0.0, 110.0, 10.0]]
    )
    gts = [torch.tensor([[0.0, 0.0, 10.0, 10.0], [21.0, 0.0, 29.0, 10.0]]), torch.zeros(0, 4)]
    labels = [torch.tensor([4, 6]), torch.zeros(0, dtype=torch.int64)]
    out = assign_anchors(anchors, gts, labels)
    # IoUs: a0-g0 1.0; a1-g0 1/3; a2-g1 0.8; a3 nothing
    assert out.matched_gt.tolist() == [[0, BACKGROUND, 1, BACKGROUND], [BACKGROUND] * 4]
    assert out.labels.tolist() == [[4, BACKGROUND, 6, BACKGROUND], [BACKGROUND] * 4]
    torch.testing.assert_close(out.box_targets[0, 2], torch.tensor([0.0, 0.0, -0.22314355, 0.0]))


# --------------------------------------------------------------------- crowd regions


def test_crowd_turns_covered_background_into_ignore_but_keeps_foreground() -> None:
    anchors = torch.tensor(
        [[0.0, 0.0, 10.0, 10.0], [40.0, 0.0, 50.0, 10.0], [44.0, 0.0, 54.0, 10.0], [46.0, 0.0, 56.0, 10.0]]
    )
    gts = [torch.tensor([[0.0, 0.0, 10.0, 10.0]])]
    crowd = [torch.tensor([[0.0, 0.0, 51.0, 20.0]])]
    out = assign_anchors(anchors, gts, [torch.tensor([2])], crowd_boxes=crowd)
    # a0 foreground stays; a1 fully inside (IoA 1) -> IGNORE; a2 IoA 0.7 -> IGNORE;
    # a3 IoA 0.5 (== threshold) -> IGNORE
    assert out.matched_gt.tolist() == [[0, IGNORE, IGNORE, IGNORE]]
    strict = assign_anchors(anchors, gts, [torch.tensor([2])], crowd_boxes=crowd, crowd_ioa_threshold=0.6)
    assert strict.matched_gt.tolist() == [[0, IGNORE, IGNORE, BACKGROUND]]
    off = assign_anchors(anchors, gts, [torch.tensor([2])], crowd_boxes=crowd, crowd_ioa_threshold=None)
    assert off.matched_gt.tolist() == [[0, BACKGROUND, BACKGROUND, BACKGROUND]]
    assert out.labels.tolist() == [[2, IGNORE, IGNORE, IGNORE]]


@given(
    gts=st.lists(valid_boxes(max_n=4, max_coord=140.0), min_size=2, max_size=2),
    crowd=st.lists(valid_boxes(max_n=2, max_coord=140.0), min_size=2, max_size=2),
    thr=st.sampled_from([0.3, 0.5, 1.0]),
)
@settings(max_examples=30)
def test_crowd_windowed_equals_dense(gts, crowd, thr) -> None:
    labels = _labels(gts)
    dense = assign_anchors(ANCHORS, gts, labels, crowd_boxes=crowd, crowd_ioa_threshold=thr)
    fast = assign_anchors(GRID, gts, labels, crowd_boxes=crowd, crowd_ioa_threshold=thr)
    _assert_same(fast, dense)
    plain = assign_anchors(GRID, gts, labels)
    changed = fast.matched_gt != plain.matched_gt
    assert bool((plain.matched_gt[changed] == BACKGROUND).all())
    assert bool((fast.matched_gt[changed] == IGNORE).all())


# ------------------------------------------------------------------ chunks and memory


def test_tiny_memory_budget_gives_the_same_result() -> None:
    gts = _adversarial()
    labels = _labels(gts)
    crowd = [torch.tensor([[0.0, 0.0, 60.0, 60.0]])] + [torch.zeros(0, 4)] * (len(gts) - 1)
    for kw in MODES[:4]:
        ref = assign_anchors(ANCHORS, gts, labels, crowd_boxes=crowd, **kw)
        # the per-anchor arrays of 6 x 3069 anchors take ~810 kB: a few chunks per image
        for budget in (850_000, 1_000_000):
            for anchors in (ANCHORS, GRID):
                got = assign_anchors(anchors, gts, labels, crowd_boxes=crowd, max_memory_bytes=budget, **kw)
                _assert_same(got, ref)


def test_pair_iou_is_bit_identical_to_box_iou() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.rand(50, 4, generator=g) * 100
    a = torch.cat((a[:, :2], a[:, :2] + a[:, 2:]), 1)
    b = torch.rand(70, 4, generator=g) * 100
    b = torch.cat((b[:, :2], b[:, :2] + b[:, 2:] / 3), 1)
    dense = box_iou(a, b)
    assert torch.equal(iou_pairs(a[:, None, :], b[None, :, :]), dense)
    i, j = torch.meshgrid(torch.arange(50), torch.arange(70), indexing="ij")
    assert torch.equal(iou_pairs(a[i.flatten()], b[j.flatten()]), dense.flatten())


def test_chunk_planner_counts_every_buffer_within_the_byte_budget() -> None:
    # Deterministic replacement of a peak-RSS test (process RSS depends on the
    # allocator; the real 10-run measurement is benchmarks/bench_assignment_memory.py).
    # The 5000-box case: 120,087 anchors; the dense IoU alone would be 2.4 GB.
    cap = 512 * 2**20
    for b, m, n in [(1, 5000, 120_087), (16, 100, 120_087), (8, 3, 1_000_000), (2, 7, 3069)]:
        for itemsize in (4, 8):
            k = b * n  # batch-wide anchor slots
            plan = plan_dense(k, m, n, itemsize, cap)
            # three float buffers and one bool mask per (box, anchor) pair, nothing else
            assert plan.workspace_bytes == m * plan.per * (3 * itemsize + 1)
            assert plan.total_bytes <= cap, (b, m, n, itemsize, plan)
            # the batch-wide per-anchor arrays are counted: they dominate with few boxes
            assert plan.total_bytes - plan.workspace_bytes >= k * (2 * itemsize + 8)
            if plan.per < n:  # the budget is used, not wasted
                assert plan.total_bytes > 0.95 * cap, plan
            half = plan_dense(k, m, n, itemsize, cap // 2)
            assert half.per <= plan.per
            # below what the per-anchor arrays need, the chunks shrink to one anchor
            assert half.total_bytes <= cap // 2 or half.per == 1
    assert plan_dense(8 * 1_000_000, 3, 1_000_000, 8, cap // 2).per == 1
    # 5000 boxes: (512 MiB - 44 B x 120,087 anchors) / (5000 x 13 B + 12 B) = 8176 anchors,
    # less the 15 chunks' box maxima: 8048 (15 chunks)
    assert plan_dense(120_087, 5000, 120_087, 4, cap).per == 8048
    # few boxes: one chunk holds the whole image
    assert plan_dense(16 * 120_087, 7, 120_087, 4, cap).per == 120_087


def test_dense_path_allocates_the_planned_workspace_once(monkeypatch) -> None:
    made: list[int] = []

    class Recording(dense_mod.Workspace):
        def __init__(self, *a, **k) -> None:
            super().__init__(*a, **k)
            made.append(self.nbytes)

    monkeypatch.setattr(dense_mod, "Workspace", Recording)
    gts = _adversarial()
    labels = _labels(gts)
    budget = 850_000
    for kw in (MODES[0], MODES[2]):  # torchvision and mmdetection low-quality claims
        ref = assign_anchors(ANCHORS, gts, labels, max_memory_bytes=2**30, **kw)
        made.clear()
        got = assign_anchors(ANCHORS, gts, labels, max_memory_bytes=budget, **kw)
        _assert_same(got, ref)
        m, b = max(len(g) for g in gts), len(gts)
        plan = plan_dense(b * ANCHORS.shape[0], m, ANCHORS.shape[0], 4, budget)
        assert plan.per < ANCHORS.shape[0] // 4  # several chunks: the reuse is exercised
        assert made == [plan.workspace_bytes]  # one workspace for all chunks, images, revisits
        made.clear()
        windowed = assign_anchors(GRID, gts, labels, max_memory_bytes=budget, **kw)
        _assert_same(windowed, ref)
        assert made == []  # the grid path evaluates no dense IoU


# -------------------------------------------------------------------------- errors


def test_assigner_class_stores_hyper_parameters() -> None:
    gts = _adversarial()[:2]
    labels = _labels(gts)
    assigner = AnchorAssigner(low_quality="mmdetection", high_threshold=0.6)
    _assert_same(
        assigner(GRID, gts, labels),
        assign_anchors(ANCHORS, gts, labels, low_quality="mmdetection", high_threshold=0.6),
    )
    assert "mmdetection" in repr(assigner)
    with pytest.raises(ValueError, match="crowd_ioa_threshold must be in"):
        AnchorAssigner(crowd_ioa_threshold=0.0)


def test_empty_batch_and_no_boxes() -> None:
    out = assign_anchors(ANCHORS, [], [])
    assert out.labels.shape == (0, len(ANCHORS)) and out.box_targets.shape == (0, len(ANCHORS), 4)
    out = assign_anchors(GRID, [torch.zeros(0, 4)] * 2, [torch.zeros(0, dtype=torch.int64)] * 2)
    assert bool((out.labels == BACKGROUND).all()) and out.labels.shape == (2, len(ANCHORS))


def test_half_precision_boxes_match_float32() -> None:
    gts = [torch.tensor([[10.0, 12.0, 50.0, 40.0], [60.0, 60.0, 100.0, 90.0]])]
    ref = assign_anchors(GRID, gts, _labels(gts))
    half = assign_anchors(GEN(SIZES, dtype=torch.float16), [g.half() for g in gts], _labels(gts))
    assert torch.equal(half.matched_gt, ref.matched_gt)
    assert half.box_targets.dtype == torch.float32


def _ok():
    return [torch.tensor([[0.0, 0.0, 10.0, 10.0]])], [torch.tensor([1])]


@pytest.mark.parametrize(
    ("change", "exc", "match"),
    [
        (lambda a, g, l: (a[:, :3], g, l, {}), ValueError, r"anchors must have shape \(N, 4\)"),
        (lambda a, g, l: (a, g[0], l, {}), TypeError, "gt_boxes must be a list of tensors"),
        (lambda a, g, l: (a, g, l[0], {}), TypeError, "gt_labels must be a list of tensors"),
        (lambda a, g, l: (a, g, l + l, {}), ValueError, r"gt_labels must have one entry per image \(1\)"),
        (lambda a, g, l: (a, [g[0][:, :2]], l, {}), ValueError, r"gt_boxes\[0\] must have shape"),
        (lambda a, g, l: (a, [g[0].long()], l, {}), TypeError, r"gt_boxes\[0\] must be a floating-point"),
        (lambda a, g, l: (a, g, [l[0].int()], {}), TypeError, r"gt_labels\[0\] must have dtype torch.int64"),
        (lambda a, g, l: (a, g, [l[0][:0]], {}), ValueError, r"gt_labels\[0\] must have shape \(1,\)"),
        (
            lambda a, g, l: (a, [g[0].to("meta")], l, {}),
            ValueError,
            r"gt_boxes\[0\] must be on the same device",
        ),
        (
            lambda a, g, l: (a, g, [l[0].to("meta")], {}),
            ValueError,
            r"gt_labels\[0\] must be on the same device",
        ),
        (lambda a, g, l: (a, [g[0] * float("nan")], l, {}), ValueError, "gt_boxes must be finite"),
        (lambda a, g, l: (a, [g[0].flip(1)], l, {}), ValueError, "gt_boxes must satisfy x1 <= x2"),
        (lambda a, g, l: (a, g, [-l[0]], {}), ValueError, "gt_labels must be class indices >= 0"),
        (
            lambda a, g, l: (a, g, l, {"crowd_boxes": [torch.zeros(1, 4)] * 2}),
            ValueError,
            r"crowd_boxes must have one entry per image \(1\)",
        ),
        (
            lambda a, g, l: (a, g, l, {"levels": GRID.levels}),
            TypeError,
            "unexpected keyword argument 'levels'",
        ),
        (
            lambda a, g, l: (a, g, l, {"max_memory_bytes": 0}),
            ValueError,
            "max_memory_bytes must be a positive int",
        ),
        (
            lambda a, g, l: (a, g, l, {"low_threshold": 0.6}),
            ValueError,
            "low_threshold must be <= high_threshold",
        ),
        (
            lambda a, g, l: (a, g, l, {"crowd_ioa_threshold": 1.5}),
            ValueError,
            "crowd_ioa_threshold must be in",
        ),
    ],
)
def test_bad_input_names_the_argument(change, exc, match) -> None:
    boxes, labels = _ok()
    a, g, lab, kw = change(ANCHORS, boxes, labels)
    with pytest.raises(exc, match=match):
        assign_anchors(a, g, lab, **kw)


# ------------------------------------------------ per-axis and derived strides (issue 10)

# torchvision's rule on a 224 x 288 padded batch: P6 4 x 5 cells -> strides (56, 57), P7
# 2 x 3 -> (112, 96); a nominal-stride window would miss or misplace those anchors.
TV_DERIVED = AnchorGenerator(convention="torchvision", derive_strides=True)
TV_IMAGE = (224, 288)
TV_SIZES = TV_DERIVED.feature_sizes_for(TV_IMAGE)
PAIRS = AnchorGenerator(strides=(8, 16, (32, 16), 64, (128, 96)))


def _random_boxes(n: int, h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    wh = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6]) + 2.0
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w, h]) - wh / 4
    return torch.cat([xy, xy + wh], dim=1)


@pytest.mark.parametrize("gen", [TV_DERIVED, PAIRS], ids=["derived", "pairs"])
@pytest.mark.parametrize("kw", MODES, ids=[str(k) for k in MODES])
def test_per_axis_strides_windowed_equals_dense(gen, kw) -> None:
    strides = gen.level_strides(TV_SIZES, image_size=TV_IMAGE)
    assert any(sh != sw for sh, sw in strides)  # the case under test: non-square strides
    anchors = gen(TV_SIZES, image_size=TV_IMAGE)
    big = anchors.per_level()[4]
    gts = [
        _random_boxes(12, *TV_IMAGE, seed=1),
        torch.cat(
            [big[[0, 7, 20, 53]], torch.tensor([[500.0, 500.0, 510.0, 530.0]])]
        ),  # IoU 1 at P7, one outside
        _random_boxes(3, *TV_IMAGE, seed=2) * 0.2,  # small boxes near the origin
        torch.zeros((0, 4)),
    ]
    labels = _labels(gts)
    dense = assign_anchors(anchors.boxes, gts, labels, **kw)
    fast = assign_anchors(anchors, gts, labels, **kw)
    _assert_same(fast, dense)
    assert torch.equal(dense.matched_gt, _per_image_reference(anchors.boxes, gts, **kw))
    if kw.get("low_threshold", 0.4) > 0:
        assert int(fast.foreground[1].sum()) >= 4  # the P7 anchors were found


def test_per_axis_strides_crowd_windowed_equals_dense() -> None:
    anchors = TV_DERIVED(TV_SIZES, image_size=TV_IMAGE)
    gts = [_random_boxes(6, *TV_IMAGE, seed=3), _random_boxes(2, *TV_IMAGE, seed=4)]
    crowd = [_random_boxes(2, *TV_IMAGE, seed=5), _random_boxes(1, *TV_IMAGE, seed=6)]
    dense = assign_anchors(anchors.boxes, gts, _labels(gts), crowd_boxes=crowd)
    fast = assign_anchors(anchors, gts, _labels(gts), crowd_boxes=crowd)
    _assert_same(fast, dense)
    assert int((fast.labels == IGNORE).sum()) > 0


def test_nominal_levels_for_derived_anchors_are_rejected() -> None:
    # A hand-made Anchors is checked against the coordinates: nominal levels (P7 stride
    # 128) do not describe anchors made with derived strides (112 x 96).
    nominal = AnchorGenerator(convention="torchvision")
    anchors = TV_DERIVED(TV_SIZES, image_size=TV_IMAGE)
    with pytest.raises(
        ValueError, match="levels must reproduce boxes bit for bit, got a mismatch at level 3"
    ):
        Anchors(anchors.boxes, nominal(TV_SIZES).levels)
    assert Anchors(anchors.boxes.clone(), anchors.levels).levels == anchors.levels
