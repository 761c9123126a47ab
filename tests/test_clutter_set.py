"""benchmarks/clutter_set.py: the second synthetic set loads as COCO, stays in range, is imbalanced and seeded."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from focal_detect.data import CocoDetection

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "clutter_set.py"


@pytest.fixture(scope="module")
def clutter():
    pytest.importorskip("PIL")
    spec = importlib.util.spec_from_file_location("clutter_set", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cli_writes_splits_that_coco_detection_reads(clutter, tmp_path, capsys) -> None:
    assert (
        clutter.main(["--out", str(tmp_path), "--train", "3", "--val", "2", "--size", "320", "--seed", "0"])
        == 0
    )
    assert "train: 3 images" in capsys.readouterr().out
    for split, n in (("train", 3), ("val", 2)):
        ds = CocoDetection(tmp_path / split / "images", tmp_path / split / "annotations.json", strict=True)
        assert len(ds) == n and ds.num_skipped == 0
        assert ds.class_names == ("star", "arrow", "crescent", "bolt", "glyph")
        for i in range(n):
            img, t = ds[i]
            assert img.shape == (3, 320, 320)
            b = t["boxes"]
            assert len(b) >= 1 and (b[:, :2] >= 0).all() and (b[:, 2:] <= 320).all()
            assert (b[:, 2:] > b[:, :2]).all()
            raw, boxes, labels = clutter.render_clutter(0, i, size=320, split=clutter.SPLITS[split])
            assert torch.equal(img, torch.from_numpy(raw).permute(2, 0, 1).float() / 255)  # PNG is lossless
            torch.testing.assert_close(b, torch.from_numpy(boxes), atol=1e-4, rtol=0)
            assert t["labels"].tolist() == labels.tolist()
    train = json.loads((tmp_path / "train" / "annotations.json").read_text())
    val = json.loads((tmp_path / "val" / "annotations.json").read_text())
    assert train["annotations"] != val["annotations"]  # the splits are different images


def test_sizes_span_10_to_180_px_inside_the_image(clutter) -> None:
    sides = []
    for i in range(40):
        img, boxes, _ = clutter.render_clutter(1, i, size=320)
        assert img.shape == (320, 320, 3) and img.dtype == np.uint8
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 320).all()
        sides += np.max(boxes[:, 2:] - boxes[:, :2], axis=1).tolist()
    s = np.array(sides)
    assert s.min() >= 10 - 1e-3 and s.max() <= 180 + 1e-3
    assert s.min() < 20 and s.max() > 120  # both ends are reached


def test_class_frequencies_are_the_documented_imbalance(clutter) -> None:
    labels = []
    for i in range(250):
        labels += clutter.render_clutter(2, i, size=64)[2].tolist()
    counts = Counter(labels)
    n = sum(counts.values())
    assert n > 800
    share = [counts[k] / n for k in range(5)]
    assert share == pytest.approx([0.40, 0.25, 0.15, 0.12, 0.08], abs=0.035)
    assert counts[0] > 3 * counts[4]


def test_objects_stand_out_from_the_background(clutter) -> None:
    img, boxes, _ = clutter.render_clutter(3, 0, size=320)
    for x1, y1, x2, y2 in boxes.astype(int):
        patch = img[y1 : max(y2, y1 + 1), x1 : max(x2, x1 + 1)].astype(float)
        assert patch.std() > 5


def test_rendering_is_a_function_of_seed_split_and_index(clutter) -> None:
    a = clutter.render_clutter(5, 7, size=96)
    b = clutter.render_clutter(5, 7, size=96)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    for other in (clutter.render_clutter(6, 7, size=96), clutter.render_clutter(5, 7, size=96, split=2)):
        assert not np.array_equal(a[0], other[0])
    with pytest.raises(ValueError, match="size must be >= 32"):
        clutter.render_clutter(0, 0, size=16)
