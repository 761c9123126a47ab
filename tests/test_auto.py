"""focal_detect.models.auto: anchors fitted to the data, the input size, the coverage report."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from focal_detect.analysis import anchor_coverage, best_anchor_iou
from focal_detect.anchors import AnchorGenerator
from focal_detect.models import RetinaNet
from focal_detect.models.auto import (
    COVERAGE_TARGET,
    AnchorFit,
    _grid_best_iou,
    auto_config,
    dataset_boxes,
    fit_anchors,
)


def _boxes(n: int, lo: float, hi: float, image: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    side = lo * (hi / lo) ** torch.rand(n, generator=g)
    aspect = 2 ** (torch.rand(n, generator=g) - 0.5)  # h / w in [0.7, 1.4]
    w, h = side / aspect.sqrt(), side * aspect.sqrt()
    x1 = torch.rand(n, generator=g) * (image - w)
    y1 = torch.rand(n, generator=g) * (image - h)
    return torch.stack([x1, y1, x1 + w, y1 + h], dim=1)


# ------------------------------------------------------------------------ exact fast coverage


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    s3=st.floats(4.0, 48.0),
    offset=st.sampled_from([0.0, 0.5, None]),
    convention=st.sampled_from(["paper", "torchvision", "detectron2"]),
    size=st.tuples(st.integers(32, 300), st.integers(32, 300)),
)
def test_grid_best_iou_equals_the_best_over_all_anchors(seed, s3, offset, convention, size) -> None:
    h, w = size
    boxes = _boxes(30, 3.0, float(min(h, w)), min(h, w), seed)
    kw = {} if offset is None or convention == "detectron2" else {"offset": offset}
    gen = AnchorGenerator(sizes=tuple(s3 * 2**k for k in range(5)), convention=convention, **kw)
    anchors = gen(gen.feature_sizes_for((h, w)))
    exact = best_anchor_iou(anchors.boxes, boxes).double()
    assert torch.allclose(_grid_best_iou(anchors, boxes), exact, atol=1e-5)


# ------------------------------------------------------------------------ fit_anchors


def test_small_and_large_object_sets_get_different_anchors() -> None:
    small = fit_anchors(_boxes(400, 8, 40, 320), (320, 320))
    large = fit_anchors(_boxes(400, 80, 300, 320), (320, 320))
    assert small.sizes[0] < large.sizes[0]
    assert all(a < b for a, b in zip(small.sizes, small.sizes[1:]))  # doubling per level
    assert small.sizes[1] == pytest.approx(2 * small.sizes[0], rel=1e-3)
    for fit, boxes in ((small, _boxes(400, 8, 40, 320)), (large, _boxes(400, 80, 300, 320))):
        gen = AnchorGenerator(sizes=fit.sizes, ratios=fit.ratios, scales=fit.scales, offset=fit.offset)
        measured = anchor_coverage(gen(gen.feature_sizes_for((320, 320))).boxes, boxes)
        assert fit.coverage == pytest.approx(measured, abs=1e-9)  # what it reports is the coverage


def test_the_fit_beats_the_paper_anchors_on_small_objects() -> None:
    boxes = _boxes(400, 8, 40, 320)
    paper = AnchorGenerator()  # 32 ... 512 px
    paper_cov = anchor_coverage(paper(paper.feature_sizes_for((320, 320))).boxes, boxes)
    assert fit_anchors(boxes, (320, 320)).coverage > paper_cov + 0.3


def test_elongated_boxes_widen_the_ratios() -> None:
    boxes = _boxes(200, 20, 80, 320)
    assert fit_anchors(boxes, (320, 320)).ratios == (0.5, 1.0, 2.0)
    thin = boxes.clone()
    thin[:, 3] = thin[:, 1] + (thin[:, 2] - thin[:, 0]) * 0.3  # h / w = 0.3
    assert len(fit_anchors(thin, (320, 320)).ratios) == 5


def test_coverage_of_a_hand_made_case() -> None:
    # Two 16-px boxes centred on P3 cell centres (4 + 8k with offset 0.5), which 16-px
    # anchors match exactly, and a 2-px box no anchor reaches IoU 0.5 with (the smallest
    # anchor, 4 px, overlaps it at 4 / 16 at best). Ties go to the smallest size that
    # covers: it need not be the exact one.
    boxes = torch.tensor([[4.0, 4.0, 20.0, 20.0], [20.0, 20.0, 36.0, 36.0], [40.0, 40.0, 42.0, 42.0]])
    fit = fit_anchors(boxes, (64, 64))
    assert fit.coverage == pytest.approx(2 / 3)
    gen = AnchorGenerator(sizes=fit.sizes, ratios=fit.ratios, scales=fit.scales, offset=fit.offset)
    best = best_anchor_iou(gen(gen.feature_sizes_for((64, 64))).boxes, boxes)
    assert bool((best[:2] >= 0.5).all()) and best[2] < 0.5
    exact = fit_anchors(boxes[:2], (64, 64))
    assert exact.coverage == 1.0


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((torch.zeros(0, 4), (64, 64)), {}, "at least one box"),
        ((torch.tensor([[0.0, 0.0, float("nan"), 4.0]]), (64, 64)), {}, "finite"),
        ((torch.zeros(3, 5), (64, 64)), {}, r"shape \(M, 4\)"),
        ((torch.tensor([[0.0, 0.0, 4.0, 4.0]]), (64,)), {}, "image_size"),
        ((torch.tensor([[0.0, 0.0, 4.0, 4.0]]), (64, 64)), {"high_threshold": 0.0}, "high_threshold"),
    ],
)
def test_fit_anchors_rejects_bad_input(args, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        fit_anchors(*args, **kwargs)


# ------------------------------------------------------------------------ auto_config


def test_auto_upscales_small_objects_until_covered_and_reports_it() -> None:
    boxes = [_boxes(20, 6, 40, 320, seed=i) for i in range(20)]
    choice = auto_config(boxes, [(320, 320)] * 20, num_classes=5)
    assert choice.input_scale > 1.0
    assert choice.config.transform.min_size == choice.input_size[0]
    text = "\n".join(choice.summary())
    assert "anchor coverage" in text
    assert ("warning" in text) == (choice.anchors.coverage < COVERAGE_TARGET)
    RetinaNet(choice.config)  # a buildable model


def test_auto_keeps_large_objects_at_their_size_and_shrinks_big_images() -> None:
    boxes = [_boxes(5, 60, 200, 320, seed=i) for i in range(10)]
    choice = auto_config(boxes, [(320, 320)] * 10, num_classes=2)
    assert choice.input_scale == 1.0 and choice.config.transform.min_size is None
    big = auto_config([b * 3 for b in boxes], [(960, 960)] * 10, num_classes=2)
    assert big.input_scale < 1.0 and max(big.input_size) <= 448


def test_auto_warns_when_nothing_reaches_the_target() -> None:
    tiny = [torch.tensor([[10.0, 10.0, 12.0, 12.0], [50.0, 50.0, 53.0, 52.0]])] * 4
    choice = auto_config(tiny, [(128, 128)] * 4, num_classes=1)
    assert not choice.coverage_ok
    assert choice.summary()[-1].startswith("warning: anchor coverage")


def test_auto_model_size_follows_the_device() -> None:
    boxes = [_boxes(5, 20, 100, 320, seed=i) for i in range(4)]
    cpu = auto_config(boxes, [(320, 320)] * 4, 3, device="cpu")
    gpu = auto_config(boxes, [(320, 320)] * 4, 3, device="cuda")  # only the device's kind is read
    assert cpu.device == "cpu" and gpu.device == "accelerator"
    assert gpu.config.backbone.width > cpu.config.backbone.width


def test_auto_config_rejects_mismatched_input() -> None:
    with pytest.raises(ValueError, match="same length"):
        auto_config([torch.zeros(1, 4)], [], 2)
    with pytest.raises(ValueError, match=r"image_sizes\[0\]"):
        auto_config([torch.tensor([[0.0, 0.0, 4.0, 4.0]])], [(0, 5)], 2)


def test_dataset_boxes_reads_coco_without_decoding(tmp_path) -> None:
    import json

    from PIL import Image

    from focal_detect.data import CocoDetection

    Image.new("RGB", (30, 20)).save(tmp_path / "a.png")
    ann = {
        "images": [{"id": 1, "file_name": "a.png", "width": 30, "height": 20}],
        "categories": [{"id": 1, "name": "x"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 3, 10, 5]}],
    }
    (tmp_path / "a.json").write_text(json.dumps(ann))
    ds = CocoDetection(str(tmp_path), str(tmp_path / "a.json"))
    boxes, sizes = dataset_boxes(ds)
    assert boxes[0].tolist() == [[2.0, 3.0, 12.0, 8.0]] and sizes == [(20, 30)]


def test_anchor_fit_changes_build_the_model() -> None:
    fit = AnchorFit((10.0, 20.0, 40.0, 80.0, 160.0), (0.5, 1.0, 2.0), (1.0,), 0.5, 0.9, 0.5)
    assert fit.anchor_changes()["sizes"] == (10.0, 20.0, 40.0, 80.0, 160.0)


def test_boxes_of_other_sized_images_are_placed_in_the_median_image() -> None:
    box = torch.tensor([[10.0, 20.0, 50.0, 40.0]])
    mixed = auto_config([box, box * 2, box], [(100, 160), (200, 320), (100, 160)], num_classes=1)
    same = auto_config([box, box, box], [(100, 160)] * 3, num_classes=1)
    assert mixed.anchors == same.anchors and mixed.input_size == same.input_size == (100, 160)
    assert mixed.config.transform.min_size == 100  # the images differ in size: resized to the median
