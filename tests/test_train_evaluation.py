"""focal_detect.evaluation: COCO AP via pycocotools, inference over datasets, drawing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from focal_detect.data import CocoDetection, SyntheticShapes, export_coco
from focal_detect.evaluation import (
    coco_metrics,
    detections_to_coco,
    draw_detections,
    evaluate_coco,
    format_metrics,
    predict_dataset,
)


def _gt(crowd: bool = False):
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0}]
    if crowd:
        anns.append(
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [60, 60, 30, 30], "area": 900, "iscrowd": 1}
        )
    return {
        "images": [{"id": 1, "width": 100, "height": 100}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": anns,
    }


def _det(x, y, w, h, score=0.9):
    return {"image_id": 1, "category_id": 1, "bbox": [x, y, w, h], "score": score}


def test_perfect_and_shifted_detections() -> None:
    assert coco_metrics(_gt(), [_det(10, 10, 40, 40)])["AP"] == pytest.approx(1.0)
    # Shift by 10 px: IoU = 30*40 / (2*1600 - 1200) = 0.6 -> counts at .50, .55, .60 only.
    m = coco_metrics(_gt(), [_det(20, 10, 40, 40)])
    assert m["AP50"] == pytest.approx(1.0) and m["AP75"] == 0.0
    assert m["AP"] == pytest.approx(0.3, abs=1e-6)
    assert m["APm"] == pytest.approx(0.3, abs=1e-6) and m["APs"] == -1.0


def test_a_confident_false_positive_lowers_ap() -> None:
    m = coco_metrics(_gt(), [_det(10, 10, 40, 40, 0.5), _det(55, 0, 40, 40, 0.9)])
    assert m["AP50"] == pytest.approx(0.5, abs=0.01)


def test_detections_on_crowd_regions_are_ignored() -> None:
    dets = [_det(10, 10, 40, 40, 0.5), _det(60, 60, 30, 30, 0.9)]
    assert coco_metrics(_gt(crowd=True), dets)["AP"] == pytest.approx(1.0)
    # The same box on a non-crowd image is a false positive.
    assert coco_metrics(_gt(crowd=False), dets)["AP"] < 0.6


def test_per_class_ap_averages_to_the_overall_ap() -> None:
    gt = _gt()
    gt["categories"] = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}]
    gt["annotations"].append(
        {"id": 3, "image_id": 1, "category_id": 2, "bbox": [60, 60, 30, 30], "area": 900}
    )
    # class a found exactly, class b shifted to IoU 0.6, class c has no ground truth
    dets = [_det(10, 10, 40, 40), {**_det(70, 60, 30, 30), "category_id": 2}]
    m = coco_metrics(gt, dets, per_class=True)
    assert m["AP/a"] == pytest.approx(1.0)
    iou = 20 * 30 / (2 * 900 - 20 * 30)  # 0.5: counts at the .50 threshold only
    assert iou == pytest.approx(0.5) and m["AP/b"] == pytest.approx(0.1, abs=1e-6)
    assert m["AP/c"] == -1.0
    assert m["AP"] == pytest.approx((m["AP/a"] + m["AP/b"]) / 2, abs=1e-6)
    assert "AP/a" not in coco_metrics(gt, dets)  # only when asked
    empty = coco_metrics(gt, [], per_class=True)
    assert (empty["AP/a"], empty["AP/b"], empty["AP/c"]) == (0.0, 0.0, -1.0)


def test_no_detections_score_zero() -> None:
    assert coco_metrics(_gt(), [])["AP"] == 0.0


def test_detections_to_coco_maps_labels_and_checks_them() -> None:
    det = {
        "image_id": 3,
        "boxes": torch.tensor([[1.0, 2.0, 5.0, 10.0]]),
        "scores": torch.tensor([0.25]),
        "labels": torch.tensor([2]),
    }
    assert detections_to_coco([det], [4, 5, 6]) == [
        {"image_id": 3, "category_id": 6, "bbox": [1.0, 2.0, 4.0, 8.0], "score": 0.25}
    ]
    with pytest.raises(ValueError, match=r"label 2 must be in \[0, 2\)"):
        detections_to_coco([det], [4, 5])


class _Oracle(nn.Module):
    """Returns each image's ground truth, optionally jittered, as detections."""

    def __init__(self, dataset, shift: float = 0.0) -> None:
        super().__init__()
        self.lookup = [(dataset[i][0], dataset[i][1]) for i in range(len(dataset))]
        self.shift = shift

    def forward(self, images):
        out = []
        for im in images:
            t = next(t for img, t in self.lookup if torch.equal(img, im))
            b = t["boxes"].clone()
            b[:, [0, 2]] += self.shift * (b[:, 2:3] - b[:, 0:1])
            out.append({"boxes": b, "labels": t["labels"], "scores": torch.linspace(1, 0.5, len(b))})
        return out


def test_evaluate_coco_on_synthetic_and_exported_sets(tmp_path) -> None:
    ds = SyntheticShapes(num_images=4, image_size=48, seed=3)
    assert evaluate_coco(_Oracle(ds), ds, batch_size=3)["AP"] == pytest.approx(1.0)
    # Shifting every box by 30% of its width: IoU = 0.7/1.3 = 0.54 -> AP50 = 1, AP75 = 0.
    m = evaluate_coco(_Oracle(ds, shift=0.3), ds)
    assert m["AP50"] == pytest.approx(1.0) and m["AP75"] == 0.0
    ann = export_coco(ds, tmp_path)
    coco = CocoDetection(tmp_path / "images", ann)
    assert evaluate_coco(_Oracle(coco), coco)["AP"] == pytest.approx(1.0)
    with pytest.raises(TypeError, match="must have 'category_ids'"):
        evaluate_coco(_Oracle(ds), [ds[0]])


def test_predict_dataset_restores_training_mode_and_keeps_order() -> None:
    ds = SyntheticShapes(num_images=5, image_size=32, seed=1)
    model = _Oracle(ds).train()
    dets = predict_dataset(model, ds, batch_size=2)
    assert model.training
    assert [d["image_id"] for d in dets] == [0, 1, 2, 3, 4]
    assert torch.equal(dets[3]["boxes"], ds[3][1]["boxes"])


def test_format_metrics_prints_percent_and_na() -> None:
    text = format_metrics({"AP": 0.5123, "APl": -1.0}, names=("AP", "APl"))
    assert text.splitlines() == ["AP     APl", "51.2   n/a"]


def test_draw_detections_colours_box_edges_above_threshold() -> None:
    img = torch.zeros(3, 60, 60)
    boxes = torch.tensor([[20.0, 20.0, 40.0, 40.0], [45.0, 45.0, 58.0, 58.0]])
    pil = draw_detections(
        img, boxes, torch.tensor([0, 1]), torch.tensor([0.9, 0.1]), ["a", "b"], score_threshold=0.3
    )
    assert pil.getpixel((20, 30)) != (0, 0, 0)  # left edge of the kept box
    assert pil.getpixel((45, 50)) == (0, 0, 0)  # low-score box not drawn
    assert pil.getpixel((30, 30)) == (0, 0, 0)  # inside stays untouched
    with pytest.raises(ValueError, match=r"image must have shape \(3, H, W\)"):
        draw_detections(torch.zeros(20, 20), boxes, torch.tensor([0, 1]))
