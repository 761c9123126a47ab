"""focal_detect.data: synthetic shapes, COCO-format loading and validation, flips, batching."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
import torch

from focal_detect.data import (
    SHAPE_CLASSES,
    CocoDetection,
    RandomHorizontalFlip,
    SeededAugment,
    SyntheticShapes,
    collate_detection,
    export_coco,
    hflip,
    load_coco_json,
    render_shapes,
    sample_seed,
)
from focal_detect.data.synthetic import _shape_distance

# ----------------------------------------------------------------------------- synthetic


def test_synthetic_is_a_pure_function_of_seed_and_index() -> None:
    a = SyntheticShapes(num_images=5, image_size=64, seed=3)
    b = SyntheticShapes(num_images=5, image_size=64, seed=3)
    c = SyntheticShapes(num_images=5, image_size=64, seed=4)
    img_a, t_a = a[4]
    img_b, t_b = b[4]  # fresh object, same item
    assert torch.equal(img_a, img_b) and torch.equal(t_a["boxes"], t_b["boxes"])
    assert not torch.equal(img_a, c[4][0])
    assert img_a.dtype == torch.float32 and 0.0 <= float(img_a.min()) and float(img_a.max()) <= 1.0


@pytest.mark.parametrize("label", range(len(SHAPE_CLASSES)))
def test_each_shape_fills_exactly_its_box(label: int) -> None:
    # The pixels inside the shape must touch all four sides of the box (tight boxes):
    # a wrong sign in a distance function leaves the shape empty or spilling out.
    box = np.array([10.0, 20.0, 70.0, 60.0])
    yy, xx = np.mgrid[0:80, 0:80].astype(np.float64) + 0.5
    params = {"inner": 0.5, "thickness": 0.35, "apex": 0.3, "side": 0.0}
    d = _shape_distance(label, xx, yy, box, params)
    ys, xs = np.nonzero(d < 0.49)  # pixels the anti-aliased shape covers visibly
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (10, 20, 70, 60)
    inside = d < 0
    frac = inside.sum() / (60 * 40)
    expected = {
        "rectangle": 1.0,
        "ellipse": math.pi / 4,
        "triangle": 0.5,
        "ring": math.pi / 4 * (1 - 0.25),
        "cross": 2 * 0.35 - 0.35**2,
    }[SHAPE_CLASSES[label]]
    assert frac == pytest.approx(expected, abs=0.03)


def test_synthetic_statistics_cover_sizes_and_are_imbalanced() -> None:
    sizes, labels = [], []
    for i in range(100):
        img, boxes, lab = render_shapes(seed=0, index=i, image_size=128)
        assert img.shape == (128, 128, 3)
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 128).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        sizes += np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).tolist()
        labels += lab.tolist()
    counts = Counter(labels)
    assert set(counts) == set(range(5))
    assert counts[0] > 2 * counts[4]  # rectangles much more frequent than rings
    sizes_arr = np.array(sizes)
    assert sizes_arr.min() < 10 and sizes_arr.max() > 80  # from P3-sized to P6/P7-sized
    # Every pyramid level (anchor sizes 16..256 at 8 px images up to 128 px) gets objects.
    for lo, hi in ((8, 16), (16, 32), (32, 64), (64, 128)):
        assert ((sizes_arr >= lo) & (sizes_arr < hi)).sum() >= 20


def test_synthetic_objects_are_visible() -> None:
    # Each object's box region differs from a flat background: its pixels vary.
    img, boxes, _ = render_shapes(seed=1, index=0, image_size=128)
    for x1, y1, x2, y2 in boxes.astype(int):
        patch = img[y1 : max(y2, y1 + 1), x1 : max(x2, x1 + 1)].astype(float)
        assert patch.std() > 5


def test_to_coco_matches_items() -> None:
    ds = SyntheticShapes(num_images=3, image_size=48, seed=2)
    coco = ds.to_coco()
    for i in range(3):
        anns = [a for a in coco["annotations"] if a["image_id"] == i]
        _, t = ds[i]
        xywh = torch.tensor([a["bbox"] for a in anns]).reshape(-1, 4)
        assert torch.allclose(xywh[:, :2], t["boxes"][:, :2])
        assert torch.allclose(xywh[:, :2] + xywh[:, 2:], t["boxes"][:, 2:], atol=1e-5)
        assert [a["category_id"] - 1 for a in anns] == t["labels"].tolist()
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])


def test_synthetic_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="image_size"):
        SyntheticShapes(image_size=4)
    with pytest.raises(ValueError, match="max_size"):
        SyntheticShapes(image_size=64, min_size=30, max_size=10)
    with pytest.raises(TypeError, match="seed"):
        SyntheticShapes(seed=1.5)  # type: ignore[arg-type]
    with pytest.raises(IndexError):
        SyntheticShapes(num_images=2)[2]


def test_export_then_load_as_coco_roundtrips(tmp_path) -> None:
    ds = SyntheticShapes(num_images=3, image_size=40, seed=5)
    ann = export_coco(ds, tmp_path)
    coco = CocoDetection(tmp_path / "images", ann)
    assert coco.class_names == SHAPE_CLASSES and coco.category_ids == [1, 2, 3, 4, 5]
    for i in range(3):
        img_a, t_a = ds[i]
        img_b, t_b = coco[i]
        assert torch.equal(img_a, img_b)  # PNG is lossless
        torch.testing.assert_close(t_a["boxes"], t_b["boxes"])
        assert torch.equal(t_a["labels"], t_b["labels"])
        assert not t_b["iscrowd"].any()


# ---------------------------------------------------------------------------------- COCO


def _write_set(tmp_path, annotations, images=None, categories=None, sizes=((20, 10),)):
    from PIL import Image

    for i, (w, h) in enumerate(sizes):
        Image.new("RGB", (w, h), (i, 0, 0)).save(tmp_path / f"im{i}.png")
    if images is None:
        images = [
            {"id": i + 1, "file_name": f"im{i}.png", "width": w, "height": h}
            for i, (w, h) in enumerate(sizes)
        ]
    data = {
        "images": images,
        "categories": categories
        if categories is not None
        else [{"id": 5, "name": "a"}, {"id": 9, "name": "b"}],
        "annotations": annotations,
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return str(path)


def _ann(i, bbox, cat=5, image_id=1, **kw):
    return {"id": i, "image_id": image_id, "category_id": cat, "bbox": bbox, **kw}


def test_coco_labels_are_contiguous_and_crowd_flagged(tmp_path) -> None:
    ann = _write_set(tmp_path, [_ann(1, [1, 2, 3, 4], cat=9), _ann(2, [0, 0, 5, 5], cat=5, iscrowd=1)])
    ds = CocoDetection(tmp_path, ann)
    _, t = ds[0]
    assert t["labels"].tolist() == [1, 0]  # category 9 -> label 1, 5 -> 0
    assert t["boxes"].tolist() == [[1.0, 2.0, 4.0, 6.0], [0.0, 0.0, 5.0, 5.0]]
    assert t["iscrowd"].tolist() == [False, True]
    assert t["image_id"] == 1


def test_coco_clips_boxes_to_the_image(tmp_path) -> None:
    ann = _write_set(tmp_path, [_ann(1, [-3, 2, 10, 30])])
    _, t = CocoDetection(tmp_path, ann)[0]
    assert t["boxes"].tolist() == [[0.0, 2.0, 7.0, 10.0]]


def test_coco_bad_boxes_are_skipped_with_one_counted_warning(tmp_path) -> None:
    anns = [
        _ann(1, [1, 1, 0, 4]),  # zero width
        _ann(2, [1, 1, 3, -2]),  # negative height
        _ann(3, [float("nan"), 1, 3, 3]),  # NaN (json writes NaN)
        _ann(4, [100, 100, 3, 3]),  # outside the 20x10 image
        _ann(5, [1, 1, 3, 3]),  # good
    ]
    ann = _write_set(tmp_path, anns)
    with pytest.warns(UserWarning, match=r"skipped 4 annotation\(s\).*annotation id 1"):
        ds = CocoDetection(tmp_path, ann)
    assert ds.num_skipped == 4
    _, t = ds[0]
    assert t["boxes"].tolist() == [[1.0, 1.0, 4.0, 4.0]]
    assert [a["id"] for a in ds.to_coco()["annotations"]] == [5]
    with pytest.raises(ValueError, match=r"ann.json: annotation id 1: non-positive"):
        CocoDetection(tmp_path, ann, strict=True)


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ([{"id": 7, "image_id": 1, "bbox": [1, 1, 2, 2]}], r"annotation id 7: missing key 'category_id'"),
        ([_ann(8, [1, 1, 2, 2], cat=42)], r"annotation id 8: unknown category_id 42"),
        ([_ann(9, [1, 1, 2, 2], image_id=3)], r"annotation id 9: unknown image_id 3"),
        ([_ann(10, [1, 1, 2])], r"annotation id 10: 'bbox' must be a list of 4 numbers"),
        ([_ann(11, [1, 1, 2, 2], iscrowd=2)], r"annotation id 11: 'iscrowd' must be 0 or 1"),
        (["oops"], r"annotations\[0\] must be an object"),
    ],
)
def test_coco_malformed_records_name_the_file_and_record(tmp_path, annotations, message) -> None:
    ann = _write_set(tmp_path, annotations)
    with pytest.raises(ValueError, match="ann.json: " + message):
        CocoDetection(tmp_path, ann)


def test_coco_image_problems_are_found_at_construction(tmp_path) -> None:
    images = [
        {"id": 1, "file_name": "im0.png", "width": 20, "height": 10},
        {"id": 2, "file_name": "missing.png", "width": 5, "height": 5},
    ]
    ann = _write_set(tmp_path, [], images=images)
    with pytest.raises(FileNotFoundError, match=r"1 image file\(s\).*missing.png"):
        CocoDetection(tmp_path, ann)
    images = [{"id": 1, "file_name": "im0.png", "width": 21, "height": 10}]
    ann = _write_set(tmp_path, [], images=images)
    with pytest.raises(ValueError, match="image id 1: JSON size 21x10 differs from the file's 20x10"):
        CocoDetection(tmp_path, ann)
    images = [{"id": 1, "file_name": "im0.png"}, {"id": 1, "file_name": "im0.png"}]
    ann = _write_set(tmp_path, [], images=images)
    with pytest.raises(ValueError, match="image id 1: duplicate image id"):
        CocoDetection(tmp_path, ann)
    with pytest.raises(ValueError, match="image id 1: 'width' must be a positive finite number"):
        CocoDetection(
            tmp_path,
            _write_set(tmp_path, [], images=[{"id": 1, "file_name": "im0.png", "width": float("inf")}]),
        )


def test_coco_file_level_errors(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not a valid JSON file"):
        load_coco_json(bad)
    bad.write_text(json.dumps({"images": [], "categories": []}))
    with pytest.raises(ValueError, match="bad.json: missing top-level key 'annotations'"):
        load_coco_json(bad)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_coco_json(tmp_path / "nope.json")
    ann = _write_set(tmp_path, [], categories=[])
    with pytest.raises(ValueError, match="'categories' must not be empty"):
        CocoDetection(tmp_path, ann)


# ---------------------------------------------------------------------- transforms, batching


def test_hflip_maps_boxes_onto_the_mirrored_pixels() -> None:
    img = torch.zeros(3, 6, 10)
    img[:, 1:4, 2:5] = 1.0  # object at x in [2, 5)
    target = {"boxes": torch.tensor([[2.0, 1.0, 5.0, 4.0]]), "labels": torch.tensor([0])}
    out, t = hflip(img, target)
    x1, y1, x2, y2 = t["boxes"][0].int().tolist()
    assert (x1, x2) == (5, 8)
    assert out[:, y1:y2, x1:x2].min() == 1.0 and out.sum() == img.sum()
    back, t2 = hflip(out, t)
    assert torch.equal(back, img) and torch.equal(t2["boxes"], target["boxes"])
    assert t["labels"] is target["labels"]  # other keys untouched


def test_random_flip_probability_and_generator() -> None:
    flip = RandomHorizontalFlip(0.5)
    box = {"boxes": torch.tensor([[0.0, 0.0, 1.0, 1.0]])}
    flipped = sum(
        flip(torch.zeros(1, 1, 4), box, torch.Generator().manual_seed(s))[1]["boxes"][0, 0].item() == 3.0
        for s in range(400)
    )
    assert 160 < flipped < 240
    assert RandomHorizontalFlip(0.0)(torch.zeros(1, 1, 4), box)[1] is box
    with pytest.raises(ValueError, match="p must be in"):
        RandomHorizontalFlip(1.5)


def test_seeded_augment_depends_only_on_seed_epoch_index() -> None:
    base = SyntheticShapes(num_images=16, image_size=32, seed=0)
    aug = SeededAugment(base, RandomHorizontalFlip(0.5), seed=7)
    first = [aug[i][1]["boxes"] for i in range(16)]
    again = [aug[i][1]["boxes"] for i in range(16)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    aug.set_epoch(1)
    other = [aug[i][1]["boxes"] for i in range(16)]
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    assert aug.class_names == SHAPE_CLASSES  # metadata passes through
    assert len({sample_seed(7, e, i) for e in range(5) for i in range(50)}) == 250


def test_collate_keeps_lists_and_rejects_bad_batches() -> None:
    imgs, tgts = collate_detection(
        [(torch.ones(3, 2, 2), {"image_id": 4}), (torch.zeros(3, 5, 3), {"image_id": 9})]
    )
    assert [i.shape[1:] for i in imgs] == [(2, 2), (5, 3)] and [t["image_id"] for t in tgts] == [4, 9]
    with pytest.raises(ValueError, match="at least one sample"):
        collate_detection([])
    with pytest.raises(TypeError, match=r"batch\[0\] must be an \(image, target\) pair"):
        collate_detection([torch.zeros(3)])  # type: ignore[list-item]
