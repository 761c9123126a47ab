"""anchor_coverage / best_anchor_iou: the share of boxes with a foreground anchor."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given
from strategies import box_pairs

import focal_detect.analysis as analysis
from focal_detect.analysis import anchor_coverage, best_anchor_iou
from focal_detect.boxes import box_iou


def _grid_anchors(size: float, stride: float, extent: float) -> torch.Tensor:
    """Square anchors of side ``size`` centred on a grid of ``stride`` over ``[0, extent)``."""
    c = torch.arange(stride / 2, extent, stride)
    cy, cx = torch.meshgrid(c, c, indexing="ij")
    ctr = torch.stack([cx.flatten(), cy.flatten()], 1)
    return torch.cat([ctr - size / 2, ctr + size / 2], 1)


def test_hand_made_case_with_known_coverage() -> None:
    # 16 px anchors every 16 px over 64 px: cells [16i, 16i + 16).
    anchors = _grid_anchors(16.0, 16.0, 64.0)
    gt = torch.tensor(
        [
            [16.0, 16.0, 32.0, 32.0],  # exactly one anchor: IoU 1
            [16.0, 16.0, 32.0, 40.0],  # 16x24 over a cell: IoU 256/384 = 2/3
            [8.0, 16.0, 24.0, 32.0],  # half a cell off: IoU 128/384 = 1/3 at best
            [0.0, 0.0, 64.0, 64.0],  # far too large: IoU 256/4096
            [16.0, 16.0, 32.0, 48.0],  # 16x32: IoU exactly 1/2, counts (>=)
        ]
    )
    best = best_anchor_iou(anchors, gt)
    torch.testing.assert_close(best, torch.tensor([1.0, 2 / 3, 1 / 3, 1 / 16, 0.5]))
    assert anchor_coverage(anchors, gt) == pytest.approx(3 / 5)
    assert anchor_coverage(anchors, gt, high_threshold=0.3) == pytest.approx(4 / 5)
    assert anchor_coverage(anchors, gt, high_threshold=1.0) == pytest.approx(1 / 5)


def test_per_image_lists_and_value_objects_give_the_same_answer() -> None:
    @dataclass(frozen=True)
    class Anchors:
        boxes: torch.Tensor

    anchors = _grid_anchors(32.0, 16.0, 128.0)
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(30, 2, generator=g) * 90
    gt = torch.cat([xy, xy + 8 + torch.rand(30, 2, generator=g) * 40], 1)
    per_image = [gt[:10], gt[10:10], gt[10:]]
    ref = anchor_coverage(anchors, gt)
    assert 0.0 < ref < 1.0  # a case that discriminates
    assert anchor_coverage(Anchors(anchors), per_image) == ref
    torch.testing.assert_close(best_anchor_iou(anchors, per_image), box_iou(anchors, gt).amax(0))


@given(pair=box_pairs(max_n=12, max_coord=100.0))
def test_blocked_computation_equals_the_dense_maximum(pair) -> None:
    anchors, gt = pair
    dense = box_iou(anchors, gt).amax(0) if anchors.shape[0] else torch.zeros(gt.shape[0])
    old = analysis._IOU_BLOCK_ELEMENTS, analysis._BOX_BLOCK
    analysis._IOU_BLOCK_ELEMENTS, analysis._BOX_BLOCK = 5, 3  # many small blocks
    try:
        blocked = best_anchor_iou(anchors, gt)
    finally:
        analysis._IOU_BLOCK_ELEMENTS, analysis._BOX_BLOCK = old
    assert torch.equal(blocked, dense)


def test_empty_inputs() -> None:
    anchors = _grid_anchors(16.0, 16.0, 32.0)
    assert math.isnan(anchor_coverage(anchors, torch.zeros(0, 4)))  # nothing to cover
    assert math.isnan(anchor_coverage(anchors, []))
    assert math.isnan(anchor_coverage(anchors, [torch.zeros(0, 4), torch.zeros(0, 4)]))
    gt = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    assert anchor_coverage(torch.zeros(0, 4), gt) == 0.0  # no anchors: nothing covered
    assert best_anchor_iou(torch.zeros(0, 4), gt).tolist() == [0.0]


def test_many_anchors_and_boxes_stay_memory_bounded() -> None:
    # 100k anchors x 300 boxes would be a 30M-entry matrix (120 MB); blocks keep it at 16 MiB.
    anchors = _grid_anchors(24.0, 2.0, 632.0)
    assert anchors.shape[0] > 99_000
    gt = torch.tensor([[100.0, 100.0, 124.0, 124.0]]).repeat(300, 1) + torch.arange(300.0)[:, None]
    best = best_anchor_iou(anchors, gt)
    # Anchors every 2 px from x1 = -11: an odd shift fits exactly, an even one is 1 px off in x and y.
    expect = torch.where(torch.arange(300) % 2 == 1, 1.0, 23.0**2 / (2 * 24.0**2 - 23.0**2))
    torch.testing.assert_close(best, expect)


@pytest.mark.parametrize(
    ("anchors", "boxes", "kw", "exc", "match"),
    [
        ([[0.0, 0.0, 1.0, 1.0]], torch.zeros(1, 4), {}, TypeError, "anchors must be an"),
        (torch.zeros(3, 5), torch.zeros(1, 4), {}, ValueError, r"anchors must have shape \(N, 4\)"),
        (
            torch.zeros(3, 4, dtype=torch.int64),
            torch.zeros(1, 4),
            {},
            TypeError,
            "anchors must be a floating",
        ),
        (torch.zeros(3, 4), torch.zeros(4), {}, ValueError, r"boxes must have shape \(N, 4\)"),
        (
            torch.zeros(3, 4),
            [torch.zeros(1, 4), torch.zeros(2, 3)],
            {},
            ValueError,
            r"boxes\[1\] must have shape",
        ),
        (torch.zeros(3, 4), "boxes", {}, TypeError, "boxes must be an"),
        (
            torch.zeros(3, 4),
            torch.zeros(1, 4),
            {"high_threshold": 0.0},
            ValueError,
            "high_threshold must be in",
        ),
        (
            torch.zeros(3, 4),
            torch.zeros(1, 4),
            {"high_threshold": 1.5},
            ValueError,
            "high_threshold must be in",
        ),
    ],
)
def test_bad_input_errors_name_the_argument(anchors, boxes, kw, exc, match) -> None:
    with pytest.raises(exc, match=match):
        anchor_coverage(anchors, boxes, **kw)


def test_value_object_with_bad_boxes_is_named() -> None:
    class Bad:
        boxes = torch.zeros(2, 3)

    with pytest.raises(ValueError, match=r"anchors.boxes must have shape"):
        anchor_coverage(Bad(), torch.zeros(1, 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_coverage_on_the_gpu_with_cpu_boxes() -> None:
    anchors = _grid_anchors(16.0, 16.0, 64.0)
    gt = torch.tensor([[16.0, 16.0, 32.0, 32.0], [8.0, 16.0, 24.0, 32.0]])
    assert anchor_coverage(anchors.cuda(), [gt]) == anchor_coverage(anchors, gt) == 0.5
    assert best_anchor_iou(anchors.cuda(), gt).is_cuda
