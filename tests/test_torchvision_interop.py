"""torchvision interop at torchvision's default sizes (min_size 800, max_size 1333, pad 32).

At these sizes the padded batch is a multiple of 32, not of 128, and torchvision derives
each level's anchor stride as ``image_size // feature_size`` (P6/P7: 61/114 px at 800 px
instead of 64/128). ``RetinaNetConfig.torchvision_v1()`` reproduces that
(``derive_anchor_strides=True``) and torchvision's matcher (no minimum-IoU guard).

* golden: ``tests/data/retinanet_tv_golden_800.pt`` from ``make_retinanet_golden_800.py``
  (torchvision 0.29.1 / torch 2.14.1, slim ResNet-50 FPN, 20 classes), runs everywhere;
* live (skipped without torchvision): torchvision's full ``retinanet_resnet50_fpn``
  (91 classes) against the converted model, same images and targets.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from focal_detect.models import RetinaNet, RetinaNetConfig, load_torchvision_retinanet

DATA = Path(__file__).resolve().parent / "data"
GOLDEN = DATA / "retinanet_tv_golden_800.pt"
sys.path.insert(0, str(DATA))
from make_retinanet_golden_800 import SHAPES, cases, image  # noqa: E402  (torch-only helpers)

BOX_ATOL = 1e-3
LOSS_RTOL = 1e-5


def compare(ours: list[dict], ref: list[dict]) -> dict:
    """Per-batch agreement of detections: counts, labels/order, max box and score diff."""
    out = {"counts": [], "same_count": True, "same_labels": True, "box": 0.0, "score": 0.0}
    for a, b in zip(ours, ref):
        out["counts"].append(int(b["boxes"].shape[0]))
        if a["boxes"].shape != b["boxes"].shape:
            out["same_count"] = False
            out["same_labels"] = False
            out["box"] = out["score"] = float("inf")
            continue
        out["same_labels"] &= bool(torch.equal(a["labels"], b["labels"]))
        if b["boxes"].numel():
            out["box"] = max(out["box"], float((a["boxes"] - b["boxes"]).abs().max()))
            out["score"] = max(out["score"], float((a["scores"] - b["scores"]).abs().max()))
    return out


def loss_rel(ours: dict, ref: dict) -> dict[str, float]:
    return {k: abs(float(ours[k].detach()) - float(ref[k])) / abs(float(ref[k])) for k in ref}


def assert_detections_equal(ours: list[dict], ref: list[dict]) -> None:
    c = compare(ours, ref)
    assert c["same_count"], c
    assert c["same_labels"], c  # labels in the same (decreasing score) order
    assert c["box"] <= BOX_ATOL, c
    for a in ours:
        assert bool((a["scores"][1:] <= a["scores"][:-1]).all())
    assert c["score"] <= 1e-5, c


def assert_losses_equal(ours: dict, ref: dict) -> None:
    rel = loss_rel(ours, ref)
    assert max(rel.values()) <= LOSS_RTOL, rel


# --------------------------------------------------------------------------- golden


def _golden():
    return torch.load(GOLDEN, weights_only=True)


def _golden_model(golden: dict, **changes) -> RetinaNet:
    s = golden["settings"]
    cfg = RetinaNetConfig.torchvision_v1(
        num_classes=s["num_classes"],
        backbone_depth=s["backbone_depth"],
        backbone_width=s["backbone_width"],
        fpn_channels=s["fpn_channels"],
        frozen_bn=False,  # torchvision's weights=None model: trainable BatchNorm
        trainable_layers=5,
        **changes,
    )
    model = RetinaNet(cfg)
    load_torchvision_retinanet(model, golden["state_dict"])
    return model


def _images(case: dict) -> list[torch.Tensor]:
    images = [image(h, w, s) for (h, w), s in zip(case["shapes"], case["seeds"])]
    assert [float(im.double().sum()) for im in images] == case["image_sums"]
    return images


def test_golden_holds_the_hard_cases() -> None:
    golden = _golden()
    assert golden["versions"]["torchvision"].startswith("0.29")
    names = [c["name"] for c in golden["cases"]]
    assert names == [c["name"] for c in cases()]
    shapes = {tuple(s) for c in golden["cases"] for s in c["shapes"]}
    assert shapes >= set(SHAPES)
    model = _golden_model(golden)
    for case in golden["cases"]:
        batch, _, _, _ = model.eval().preprocess(_images(case))
        padded = tuple(batch.shape[-2:])
        strides = model.anchor_generator.level_strides(model.feature_sizes(padded), image_size=padded)
        # every case has derived strides that differ from the nominal ones
        assert strides != [(s, s) for s in (8, 16, 32, 64, 128)], (case["name"], padded)
        if "detections" in case:
            assert all(d["boxes"].shape[0] == 300 for d in case["detections"])  # the cap is hit
    batch_case = golden["cases"][4]
    assert len(batch_case["shapes"]) == 2 and batch_case["shapes"][0] != batch_case["shapes"][1]


@pytest.mark.parametrize("index", range(6), ids=[c["name"] for c in cases()])
def test_golden_torchvision_default_sizes(index: int) -> None:
    # Golden: tests/data/make_retinanet_golden_800.py, torchvision 0.29.1 / torch 2.14.1.
    golden = _golden()
    case = golden["cases"][index]
    model = _golden_model(golden)
    images = _images(case)
    if "detections" in case:
        model.eval()
        with torch.no_grad():
            dets = model([im.clone() for im in images])
        assert_detections_equal(dets, case["detections"])
    model.train()
    losses = model([im.clone() for im in images], case["targets"])
    assert_losses_equal(losses, case["losses"])


def test_golden_nominal_strides_are_not_exact() -> None:
    # 0.1.0's behaviour (nominal strides 8 ... 128, minimum-IoU guard on) at the same
    # sizes: the detections and losses differ from torchvision's.
    golden = _golden()
    case = golden["cases"][0]
    model = _golden_model(golden, derive_anchor_strides=False, min_low_quality_iou=0.0)
    images = _images(case)
    with torch.no_grad():
        dets = model.eval()([im.clone() for im in images])
    c = compare(dets, case["detections"])
    assert not (c["same_labels"] and c["box"] <= BOX_ATOL), c
    losses = model.train()([im.clone() for im in images], case["targets"])
    assert max(loss_rel(losses, case["losses"]).values()) > 1e-3


def test_golden_guard_off_is_needed_for_a_box_off_every_anchor() -> None:
    golden = _golden()
    case = golden["cases"][5]
    images = _images(case)
    guarded = _golden_model(golden, min_low_quality_iou=0.0).train()
    losses = guarded([im.clone() for im in images], case["targets"])
    # with the guard the far-off box claims nothing: a much smaller box loss
    assert float(losses["bbox_regression"].detach()) < 0.5 * float(case["losses"]["bbox_regression"])
