"""ONNX export of the whole inference path: onnxruntime's detections equal eager PyTorch's.

Skipped without the ``export`` extra (onnx, onnxscript, onnxruntime). One export per
model (module-scoped fixtures): the demo configuration, and a width-reduced ResNet-50
with the torchvision_v1 settings (anchors, P6 from P5, padding to 32, 300 detections,
resizing on). Both get a raised classifier bias so that thousands of scores pass 0.05
and NMS and the cap have work to do. Boxes are compared within 1e-3 px, in order,
except inside runs of scores equal to within the backends' float32 difference
(``SCORE_ATOL``), whose order is free (documented in ``focal_detect.models.export``;
with thousands of random scores a pair 1e-6 apart does occur and swapped once in CI).
"""

from __future__ import annotations

import json
import math
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

pytestmark = pytest.mark.export  # tracing is slow: `python -m pytest -m export` (CI runs it)

from focal_detect.cli import build_model
from focal_detect.models import (
    RetinaNet,
    RetinaNetConfig,
    RetinaNetInference,
    export_onnx,
)

ROOT = Path(__file__).resolve().parents[1]
# Classifier bias of the test models: with logits of spread ~1, ~half the scores pass 0.05.
BIAS = -3.0
NAMES = ["circle", "square", "triangle", "cross"]


def _informative(model: RetinaNet, bias: float, seed: int) -> RetinaNet:
    """Random weights scaled so that the class logits spread with standard deviation
    ~1 around ``bias`` and the box deltas with ~0.3 (on a calibration batch): many
    distinct scores above 0.05, no saturation."""
    torch.manual_seed(seed)
    model.eval()
    calib = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        cls, box = model.dense(model.preprocess(calib)[0])
        cls_std = torch.cat(cls, 1).sub(model.head.cls_logits.bias[0]).std()
        box_std = torch.cat(box, 1).std()
        model.head.cls_logits.weight.mul_(1.0 / cls_std)
        model.head.cls_logits.bias.fill_(bias)
        model.head.bbox_pred.weight.mul_(0.3 / box_std)
    return model


#: onnxruntime's and ATen's float32 convolutions round differently: scores agree to this
#: (measured up to 1.5e-5 on the demo model's raised-bias scores near 0.5, in CI).
SCORE_ATOL = 5e-5


def _session(path: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _assert_same(onnx_out: list[np.ndarray], eager: list[dict[str, torch.Tensor]]) -> int:
    boxes, scores, labels, num = onnx_out
    assert num.shape == (len(eager),)
    total = 0
    for b, ref in enumerate(eager):
        n = int(num[b])
        assert n == ref["boxes"].shape[0], (b, n, ref["boxes"].shape[0])
        ref_scores = ref["scores"].numpy().copy()
        ref_labels, ref_boxes = ref["labels"].numpy().copy(), ref["boxes"].numpy().copy()
        sorted_scores = ref_scores.copy()  # eager order, for finding the runs
        got_labels, got_boxes, got_scores = labels[b, :n].copy(), boxes[b, :n].copy(), scores[b, :n].copy()
        # Runs of eager scores equal to within the two backends' float32 difference
        # (SCORE_ATOL) have no specified order (tie-order freedom, documented): order each
        # such run by (label, x1, y1) on both sides.
        start = 0
        while start < n:
            end = start
            while end + 1 < n and sorted_scores[end] - sorted_scores[end + 1] <= SCORE_ATOL:
                end += 1
            if end > start:
                for lab, bx, sc in ((ref_labels, ref_boxes, ref_scores), (got_labels, got_boxes, got_scores)):
                    seg = slice(start, end + 1)
                    order = np.lexsort((np.round(bx[seg, 1], 2), np.round(bx[seg, 0], 2), lab[seg]))
                    lab[seg], bx[seg], sc[seg] = lab[seg][order], bx[seg][order], sc[seg][order]
            start = end + 1
        np.testing.assert_array_equal(got_labels, ref_labels)
        np.testing.assert_allclose(got_boxes, ref_boxes, rtol=0, atol=1e-3)
        np.testing.assert_allclose(got_scores, ref_scores, rtol=0, atol=SCORE_ATOL)
        # Padding rows.
        assert (labels[b, n:] == -1).all() and (scores[b, n:] == 0).all() and (boxes[b, n:] == 0).all()
        total += n
    return total


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    torch.manual_seed(0)  # module fixtures run before conftest's per-test seed
    model = _informative(build_model(4, "demo"), bias=BIAS, seed=0)
    path = export_onnx(
        model, tmp_path_factory.mktemp("onnx") / "demo.onnx", metadata={"class_names": json.dumps(NAMES)}
    )
    return model, path


def _float32_size_differs(h: int, w: int, min_size: int, max_size: int) -> bool:
    """Would float32 size arithmetic pick another resized size than Python's float64?"""
    f = np.float32
    s64 = min(min_size / min(h, w), max_size / max(h, w))
    s32 = min(f(min_size) / f(min(h, w)), f(max_size) / f(max(h, w)))
    return any(math.floor(x * s64) != math.floor(f(x) * s32) for x in (h, w))


R50_MIN, R50_MAX = 160, 256


@pytest.fixture(scope="module")
def r50(tmp_path_factory):
    cfg = RetinaNetConfig.preset(
        "torchvision_v1",
        91,
        backbone={"width": 8},
        fpn={"channels": 32},
        transform={"min_size": R50_MIN, "max_size": R50_MAX},
    )
    torch.manual_seed(1)
    model = _informative(RetinaNet(cfg), bias=BIAS, seed=1)
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "r50.onnx")
    return model, path


def test_graph_is_one_dynamic_onnx_graph_with_nms(demo) -> None:
    _, path = demo
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    ops = {n.op_type for n in proto.graph.node}
    assert {"NonMaxSuppression", "TopK", "Conv"} <= ops
    (images,) = proto.graph.input
    dims = images.type.tensor_type.shape.dim
    assert [d.dim_param != "" for d in dims] == [True, False, True, True]  # B, 3, H, W
    assert [o.name for o in proto.graph.output] == ["boxes", "scores", "labels", "num_detections"]
    assert json.loads({p.key: p.value for p in proto.metadata_props}["class_names"]) == NAMES


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(2, 128, 128), (1, 96, 200), (3, 250, 130), (1, 40, 33)])
def test_demo_model_onnxruntime_equals_eager(demo, shape) -> None:
    model, path = demo
    torch.manual_seed(sum(shape))
    images = torch.rand(shape[0], 3, *shape[1:])
    with torch.no_grad():
        eager = model(images)
    n = _assert_same(_session(path).run(None, {"images": images.numpy()}), eager)
    assert n == shape[0] * model.config.inference.detections_per_img  # the cap binds: NMS had work


@pytest.mark.slow
@pytest.mark.parametrize("hw", [(160, 160), (120, 200), (301, 97), "float32-size-trap"])
def test_r50_torchvision_v1_onnxruntime_equals_eager(r50, hw) -> None:
    model, path = r50
    if hw == "float32-size-trap":
        # An input size where float32 size arithmetic would resize to another size.
        hw = next(
            (h, w)
            for h in range(100, 400)
            for w in range(100, 400)
            if _float32_size_differs(h, w, R50_MIN, R50_MAX)
        )
    torch.manual_seed(hw[0] * 1000 + hw[1])
    images = torch.rand(2, 3, *hw)
    with torch.no_grad():
        eager = model(images)
    n = _assert_same(_session(path).run(None, {"images": images.numpy()}), eager)
    assert n > 50


def test_inference_module_equals_model_eagerly_with_resize() -> None:
    # The traced module itself (its own bilinear resize, anchors and top-k) against
    # RetinaNet.forward, without ONNX; sizes that shrink, enlarge and keep.
    cfg = RetinaNetConfig.preset(
        "tiny", 3, transform={"min_size": 64, "max_size": 100}, inference={"detections_per_img": 40}
    )
    model = _informative(RetinaNet(cfg), bias=BIAS, seed=2)
    wrapper = RetinaNetInference(model)
    for hw in [(64, 64), (50, 130), (200, 90)]:
        images = torch.rand(2, 3, *hw)
        with torch.no_grad():
            eager = model(images)
            out = [t.numpy() for t in wrapper(images)]
        assert _assert_same(out, eager) > 0


def test_onnx_graph_with_no_score_above_threshold_returns_only_padding(demo, tmp_path) -> None:
    # The demo graph with its classifier bias set to -20 in the ONNX file itself: no
    # candidate, an empty NonMaxSuppression, zero detections per image; eager agrees.
    model, path = demo
    proto = onnx.load(path)
    (bias,) = [t for t in proto.graph.initializer if t.name.endswith("cls_logits.bias")]
    bias.CopyFrom(
        onnx.numpy_helper.from_array(
            np.full(onnx.numpy_helper.to_array(bias).shape, -20.0, np.float32), bias.name
        )
    )
    onnx.save(proto, tmp_path / "quiet.onnx")
    images = torch.rand(2, 3, 64, 96)
    boxes, scores, labels, num = _session(str(tmp_path / "quiet.onnx")).run(None, {"images": images.numpy()})
    assert num.tolist() == [0, 0] and (labels == -1).all() and (scores == 0).all() and (boxes == 0).all()
    with torch.no_grad():
        model.head.cls_logits.bias.fill_(-20.0)
        eager = model(images)
        model.head.cls_logits.bias.fill_(BIAS)
    assert [d["boxes"].shape[0] for d in eager] == [0, 0]


def test_export_rejects_bad_arguments(tmp_path) -> None:
    with pytest.raises(TypeError, match="export_onnx: model must be a RetinaNet"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "x.onnx")
    model = RetinaNet(RetinaNetConfig.preset("tiny"))
    with pytest.raises(ValueError, match="export_onnx: opset_version must be an int >= 17, got 16"):
        export_onnx(model, tmp_path / "x.onnx", opset_version=16)
    with pytest.raises(ValueError, match="example_size must be a pair"):
        export_onnx(model, tmp_path / "x.onnx", example_size=(1, 64))
    with pytest.raises(TypeError, match="RetinaNetInference: model must be a RetinaNet"):
        RetinaNetInference(torch.nn.Linear(2, 2))


@pytest.mark.slow
def test_documented_onnxruntime_script_runs_without_model_code(demo, tmp_path, monkeypatch) -> None:
    pytest.importorskip("PIL")
    from PIL import Image

    model, path = demo
    image = (np.random.default_rng(0).random((70, 90, 3)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    monkeypatch.setattr("sys.argv", ["predict_onnx.py", str(path), str(tmp_path / "a.png")])
    ns = runpy.run_path(str(ROOT / "docs" / "_snippets" / "predict_onnx.py"), run_name="__main__")
    x = torch.from_numpy(image.astype(np.float32).transpose(2, 0, 1) / 255.0)
    with torch.no_grad():
        ref = model([x])[0]
    assert ns["boxes"].shape == tuple(ref["boxes"].shape)
    np.testing.assert_allclose(ns["boxes"], ref["boxes"].numpy(), atol=1e-3, rtol=0)


@pytest.mark.slow
def test_cli_predict_onnx_draws_the_onnxruntime_detections(demo, tmp_path, capsys) -> None:
    pytest.importorskip("PIL")
    from PIL import Image

    from focal_detect.cli import main

    _, path = demo
    Image.fromarray((np.random.default_rng(1).random((64, 80, 3)) * 255).astype(np.uint8)).save(
        tmp_path / "b.png"
    )
    out = tmp_path / "pred"
    args = [
        "predict",
        "--onnx",
        str(path),
        str(tmp_path / "b.png"),
        "--output-dir",
        str(out),
        "--score-threshold",
        "0.3",
    ]
    assert main(args) == 0
    image = (
        np.asarray(Image.open(tmp_path / "b.png").convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0
    )
    _, scores, _, num = _session(str(path)).run(None, {"images": image[None]})
    expected = int((scores[0, : int(num[0])] >= 0.3).sum())
    assert expected > 0
    assert f"{expected} detection(s)" in capsys.readouterr().out
    assert Image.open(out / "b_detections.png").size == (80, 64)


def test_cli_export_passes_the_checkpoint_model_and_class_names(tmp_path, monkeypatch, capsys) -> None:
    # Wiring only (the export itself is tested above): the checkpoint's model, its
    # class names as metadata, the opset and the output path reach export_onnx.
    import focal_detect.models.export as export_mod
    from focal_detect.cli import main, save_model

    model = build_model(2, "tiny")
    save_model(model, tmp_path / "m.pt", ["cat", "dog"], [3, 5])
    seen = {}

    def fake_export(m, path, *, opset_version, metadata):
        seen.update(model=m, path=path, opset=opset_version, metadata=metadata)
        return path

    monkeypatch.setattr(export_mod, "export_onnx", fake_export)
    rc = main(
        [
            "export",
            "--checkpoint",
            str(tmp_path / "m.pt"),
            "--format",
            "onnx",
            "--output",
            str(tmp_path / "m.onnx"),
            "--opset",
            "17",
        ]
    )
    assert rc == 0
    assert seen["path"] == str(tmp_path / "m.onnx") and seen["opset"] == 17
    assert json.loads(seen["metadata"]["class_names"]) == ["cat", "dog"]
    assert json.loads(seen["metadata"]["category_ids"]) == [3, 5]
    torch.testing.assert_close(seen["model"].head.cls_logits.weight, model.head.cls_logits.weight)
    assert "wrote" in capsys.readouterr().out
    assert (
        main(["export", "--checkpoint", str(tmp_path / "missing.pt"), "--output", str(tmp_path / "x.onnx")])
        == 2
    )
