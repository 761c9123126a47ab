"""Model I/O (focal_detect.models.io): build_model, save_model, load_model, and 0.1.0 files.

The 0.1.0 files in tests/data were written by tests/data/make_v010_checkpoint.py with the
0.1.0 tree (commit 1dff6bf): a ``tiny`` model saved by 0.1.0's ``save_model`` with
non-default flat settings in every group, a 0.1.0 training checkpoint, and 0.1.0's own
outputs on a fixed input (dense head outputs, detections, losses).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from focal_detect.engine import CheckpointError, save_checkpoint
from focal_detect.models import (
    MODEL_FORMAT,
    RetinaNet,
    RetinaNetConfig,
    build_model,
    flat_config_to_nested,
    load_model,
    save_model,
)
from focal_detect.models.config import FLAT_KEYS

DATA = Path(__file__).resolve().parent / "data"
V010_MODEL = DATA / "v010_model.pt"
V010_TRAIN = DATA / "v010_train" / "checkpoint_last.pt"
V010_OUTPUTS = DATA / "v010_outputs.pt"


def _outputs(model: RetinaNet, images: list[torch.Tensor], targets: list[dict]) -> dict:
    model.eval()
    with torch.no_grad():
        batch, _, _, _ = model.preprocess(images)
        cls, box = model.dense(batch)
        detections = model(images)
    model.train()
    with torch.no_grad():
        losses = model(images, targets)
    model.eval()
    return {"dense_cls": cls, "dense_box": box, "detections": detections, "losses": losses}


@pytest.fixture
def one_thread():
    """The 0.1.0 outputs were written with one intra-op thread (OMP_NUM_THREADS=1); two
    threads sum the convolutions in another order (last-bit differences), so compare like
    with like."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", ["model", "train"])
def test_files_written_by_0_1_0_load_and_give_0_1_0s_outputs(name: str, one_thread) -> None:
    ref = torch.load(V010_OUTPUTS, weights_only=True)
    assert ref["version"] == "0.1.0"
    path = V010_MODEL if name == "model" else V010_TRAIN
    with pytest.warns(UserWarning, match="no integrity digest"):  # 0.1.0 wrote none
        model, meta = load_model(path)
    want = ref[name]
    assert meta == want["meta"]
    got = _outputs(model, ref["images"], ref["targets"])
    for a, b in zip(got["dense_cls"] + got["dense_box"], want["dense_cls"] + want["dense_box"]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(got["detections"], want["detections"]):
        assert a["boxes"].shape == b["boxes"].shape
        assert torch.equal(a["labels"], b["labels"])
        torch.testing.assert_close(a["boxes"], b["boxes"], rtol=0, atol=0)
        torch.testing.assert_close(a["scores"], b["scores"], rtol=0, atol=0)
    for key, value in want["losses"].items():
        torch.testing.assert_close(got["losses"][key], value, rtol=1e-6, atol=0)
    if name == "model":  # the file has detections to compare, and its 0.1.0 settings arrived
        assert want["detections"][0]["boxes"].shape[0] == 20
        cfg = model.config
        assert (cfg.matcher.high_threshold, cfg.matcher.low_threshold) == (0.55, 0.35)
        assert (cfg.loss.gamma, cfg.loss.alpha, cfg.loss.smooth_l1_beta) == (1.5, 0.3, 0.2)
        assert (cfg.inference.score_threshold, cfg.inference.nms_threshold) == (0.1, 0.6)
        assert (cfg.inference.detections_per_img, cfg.inference.topk_candidates) == (20, 50)
        assert cfg.anchors.sizes == (16.0, 32.0, 64.0, 128.0, 256.0) and cfg.transform.size_divisible == 32


def test_a_0_1_0_model_resaved_keeps_its_outputs(tmp_path) -> None:
    with pytest.warns(UserWarning, match="no integrity digest"):
        model, meta = load_model(V010_MODEL)
    save_model(model, tmp_path / "m.pt", meta["class_names"], meta["category_ids"])
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    assert raw["format"] == MODEL_FORMAT and "matcher" in raw["model_config"]  # nested now
    again, meta2 = load_model(tmp_path / "m.pt")
    assert again.config == model.config and meta2 == meta
    x = [torch.rand(3, 40, 56)]
    with torch.no_grad():
        assert torch.equal(again(x)[0]["scores"], model(x)[0]["scores"])


def test_every_0_1_0_flat_key_maps_to_a_real_field() -> None:
    ckpt = torch.load(V010_TRAIN, weights_only=True)
    flat = ckpt["model_config"]
    nested = flat_config_to_nested(flat)
    cfg = RetinaNetConfig.from_dict(flat)
    assert cfg == RetinaNetConfig.from_dict(nested)
    # Each 0.1.0 value arrives at its new place.
    for old, value in flat.items():
        new = cfg
        for part in FLAT_KEYS[old].split("."):
            new = getattr(new, part)
        assert new == ("paper" if old == "anchor_preset" and value is None else value), old
    with pytest.raises(ValueError, match=r"unknown \['depth'\]"):
        flat_config_to_nested({"depth": 18})


def test_build_save_load_roundtrip(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model(2, "tiny", transform={"size_divisible": 32}, loss={"box_loss": "giou"})
    save_model(model, tmp_path / "m.pt", ["cat", "dog"], [3, 8])
    loaded, meta = load_model(tmp_path / "m.pt")
    assert meta == {"class_names": ["cat", "dog"], "category_ids": [3, 8]}
    assert loaded.config == model.config and loaded.config.loss.box_loss == "giou"
    assert not loaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])


def test_load_model_errors_name_the_problem(tmp_path) -> None:
    save_checkpoint({"step": 1}, tmp_path / "a.pt")
    with pytest.raises(CheckpointError, match="holds no model weights and config"):
        load_model(tmp_path / "a.pt")
    model = build_model(2, "tiny")
    bad = model.config.to_dict()
    bad["matcher"]["high_threshold"] = 2.0
    save_checkpoint({"model": model.state_dict(), "model_config": bad}, tmp_path / "b.pt")
    with pytest.raises(
        CheckpointError, match=r"invalid model config: RetinaNetConfig.matcher: high_threshold"
    ):
        load_model(tmp_path / "b.pt")
    other = build_model(3, "tiny").config.to_dict()
    save_checkpoint({"model": model.state_dict(), "model_config": other}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_model(tmp_path / "c.pt")
    with pytest.raises(TypeError, match="save_model: model must be a RetinaNet"):
        save_model(torch.nn.Linear(1, 1), tmp_path / "d.pt", [], [])  # type: ignore[arg-type]
