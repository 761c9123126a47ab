"""The focal-detect command: export-synthetic -> train -> evaluate -> predict, demo --quick, errors."""

from __future__ import annotations

import json

import pytest
import torch

from focal_detect.cli import build_model, load_config_file, load_model, main
from focal_detect.data import SHAPE_CLASSES


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    assert (
        main(
            [
                "export-synthetic",
                str(root / "train"),
                "--num-images",
                "8",
                "--image-size",
                "32",
                "--seed",
                "0",
            ]
        )
        == 0
    )
    assert (
        main(
            ["export-synthetic", str(root / "val"), "--num-images", "4", "--image-size", "32", "--seed", "7"]
        )
        == 0
    )
    return root


@pytest.mark.slow
def test_train_evaluate_predict_end_to_end(exported, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(
        '[model]\npreset = "tiny"\n[model.transform]\nsize_divisible = 32\n[train]\nlr = 0.001\noptimizer = "adamw"\n'
    )
    rc = main(
        [
            "train",
            "--config",
            str(cfg),
            "--train-images",
            str(exported / "train" / "images"),
            "--train-annotations",
            str(exported / "train" / "annotations.json"),
            "--val-images",
            str(exported / "val" / "images"),
            "--val-annotations",
            str(exported / "val" / "annotations.json"),
            "--iterations",
            "3",
            "--batch-size",
            "2",
            "--log-every",
            "1",
            "--output-dir",
            str(run),
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "3 steps" in out and "AP50" in out
    for name in (
        "model_final.pt",
        "checkpoint_last.pt",
        "metrics.csv",
        "loss_curve.png",
        "eval_metrics.json",
    ):
        assert (run / name).is_file(), name
    ckpt = torch.load(run / "checkpoint_last.pt", weights_only=True)
    assert ckpt["train_config"]["lr"] == 0.001 and ckpt["train_config"]["optimizer"] == "adamw"
    mc = ckpt["model_config"]
    assert mc["transform"]["size_divisible"] == 32 and mc["backbone"]["width"] == 8

    metrics_file = tmp_path / "m.json"
    rc = main(
        [
            "evaluate",
            "--checkpoint",
            str(run / "model_final.pt"),
            "--images",
            str(exported / "val" / "images"),
            "--annotations",
            str(exported / "val" / "annotations.json"),
            "--output",
            str(metrics_file),
        ]
    )
    assert rc == 0
    table = capsys.readouterr().out
    metrics = json.loads(metrics_file.read_text())
    assert set(metrics) >= {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert all(-1.0 <= v <= 1.0 for v in metrics.values())
    assert table.splitlines()[0].split()[:3] == ["AP", "AP50", "AP75"]
    assert table.splitlines()[2].startswith("AP per class: ")
    assert {k for k in metrics if k.startswith("AP/")} == {f"AP/{n}" for n in SHAPE_CLASSES}
    # The CLI's evaluation agrees with the one printed after training.
    assert metrics == json.loads((run / "eval_metrics.json").read_text())

    images = [str(exported / "val" / "images" / f"{i:06d}.png") for i in range(2)]
    rc = main(
        [
            "predict",
            *images,
            "--checkpoint",
            str(run / "model_final.pt"),
            "--output-dir",
            str(tmp_path / "pred"),
            "--score-threshold",
            "0.0",
            "--scale",
            "2",
        ]
    )
    assert rc == 0
    from PIL import Image

    for i in range(2):
        with Image.open(tmp_path / "pred" / f"{i:06d}_detections.png") as im:
            assert im.size == (64, 64)
    assert "detection(s)" in capsys.readouterr().out


@pytest.mark.slow
def test_demo_quick_writes_its_outputs(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--output-dir", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "smoke test" in text and "held-out" in text and "AP50" in text
    for name in ("detections.png", "loss_curve.png", "metrics.json", "model.pt"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert m["train_steps"] == 3 and 0.0 <= m["AP"] <= 1.0


def test_demo_names_each_deviation_from_the_paper() -> None:
    from focal_detect._demo import DEMO_TRAIN, _demo_deviations
    from focal_detect.models import RetinaNetConfig

    text = "\n".join(_demo_deviations(RetinaNetConfig.preset("demo"), DEMO_TRAIN))
    for needle in (
        "128x128 px",
        "ResNet-18 of width 16",
        "trainable BatchNorm",
        "64/64 channels",
        "2 convs",
        "GroupNorm",
        "anchor base sizes (12, 24, 48, 96, 192)",
        "giou box loss",
        "adamw lr 0.004",
        "cosine",
        "bfloat16",
        "paper: SGD lr 0.01",
    ):
        assert needle in text, needle
    # The demo model really is that configuration.
    cfg = build_model(5, "demo").config
    assert (cfg.backbone.depth, cfg.backbone.width, cfg.backbone.frozen_bn, cfg.head.channels) == (
        18,
        16,
        False,
        64,
    )


def test_model_roundtrip_keeps_weights_and_metadata(tmp_path) -> None:
    from focal_detect.cli import save_model

    torch.manual_seed(0)
    model = build_model(2, "tiny", transform={"size_divisible": 32})
    save_model(model, tmp_path / "m.pt", ["cat", "dog"], [3, 8])
    loaded, meta = load_model(tmp_path / "m.pt")
    assert meta == {"class_names": ["cat", "dog"], "category_ids": [3, 8]}
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    x = [torch.rand(3, 32, 32)]
    model.eval()
    with torch.no_grad():
        a, b = model(x)[0], loaded(x)[0]
    assert torch.equal(a["scores"], b["scores"])


def test_config_files_and_their_errors(tmp_path) -> None:
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"train": {"iterations": 7}, "model": {"preset": "tiny"}}))
    assert load_config_file(j) == {"train": {"iterations": 7}, "model": {"preset": "tiny"}}
    bad = tmp_path / "c.toml"
    bad.write_text("[trian]\niterations = 3\n")
    with pytest.raises(ValueError, match=r"unknown section\(s\) \['trian'\]"):
        load_config_file(bad)
    bad.write_text("[train\n")
    with pytest.raises(ValueError, match="invalid TOML"):
        load_config_file(bad)
    with pytest.raises(ValueError, match=r"must end in \.toml or \.json"):
        load_config_file(__file__)
    with pytest.raises(ValueError, match=r"RetinaNetConfig: unknown field\(s\) \['depth'\]"):
        build_model(3, "paper", depth=18)
    with pytest.raises(
        ValueError, match=r"RetinaNetConfig.backbone: unknown field\(s\) \['backbone_depth'\]"
    ):
        build_model(3, "paper", backbone={"backbone_depth": 18})
    with pytest.raises(ValueError, match="preset: name must be one of"):
        build_model(3, "huge")


def test_user_errors_exit_2_with_a_message(tmp_path, capsys) -> None:
    rc = main(
        [
            "evaluate",
            "--checkpoint",
            str(tmp_path / "none.pt"),
            "--images",
            str(tmp_path),
            "--annotations",
            str(tmp_path / "a.json"),
        ]
    )
    assert rc == 2
    assert "focal-detect evaluate: error: load_checkpoint: no checkpoint at" in capsys.readouterr().err
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nlearning_rate = 0.1\n")
    rc = main(["train", "--config", str(cfg), "--synthetic", "8", "--image-size", "32"])
    assert rc == 2
    assert "unknown option(s) ['learning_rate']" in capsys.readouterr().err
    rc = main(["train", "--train-images", str(tmp_path)])
    assert rc == 2
    assert (
        "data.train_annotations (or --train-annotations, or --synthetic N) is required"
        in capsys.readouterr().err
    )
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0


def test_installed_console_script_loads_the_cli_entry_point() -> None:
    from importlib.metadata import entry_points

    from focal_detect.cli import main

    found = [ep for ep in entry_points(group="console_scripts") if ep.name == "focal-detect"]
    if not found:
        pytest.skip("focal-detect is not installed (running from a source tree)")
    assert found[0].load() is main


def test_calibration_chooses_threads_and_estimates_the_steps(capsys) -> None:
    from focal_detect._demo import _calibrate
    from focal_detect.data import SyntheticShapes

    threads = torch.get_num_threads()
    ds = SyntheticShapes(num_images=8, image_size=32, seed=0, cache=True)
    settings = {"time_budget_s": 1e-6, "batch_size": 2, "amp": False, "max_iterations": 500}
    model = build_model(5, "tiny", transform={"size_divisible": 32})
    try:
        assert _calibrate(model, ds, settings, choose=True) == 1  # floor
        assert _calibrate(model, ds, {**settings, "time_budget_s": 1e6}, choose=True) == 500  # cap
        assert torch.get_num_threads() in {1, threads}
    finally:
        torch.set_num_threads(threads)
    assert "steps expected in the" in capsys.readouterr().out


def test_model_table_groups_and_deprecated_flat_keys() -> None:
    from focal_detect.cli import _model_changes
    from focal_detect.models import RetinaNetConfig

    preset, changes = _model_changes({"preset": "tiny", "matcher": {"high_threshold": 0.6}})
    assert (preset, changes) == ("tiny", {"matcher": {"high_threshold": 0.6}})
    # 0.1.0's flat keys still work for one release, with a warning naming the new place;
    # a group table given as well wins over the flat key of the same field.
    with pytest.warns(DeprecationWarning, match=r"fg_iou_thresh -> matcher.high_threshold.*"):
        preset, flat = _model_changes(
            {"fg_iou_thresh": 0.55, "size_divisible": 32, "matcher": {"low_threshold": 0.3}}
        )
    assert preset is None
    cfg = RetinaNetConfig.preset("tiny", 3, **flat)
    assert (cfg.matcher.high_threshold, cfg.matcher.low_threshold, cfg.transform.size_divisible) == (
        0.55,
        0.3,
        32,
    )
    with pytest.raises(ValueError, match=r"\[model\]: matcher must be a table of matcher settings, got 0.5"):
        _model_changes({"matcher": 0.5})


def test_train_accepts_every_registered_preset() -> None:
    from focal_detect.cli import _parser
    from focal_detect.models import PRESETS

    for name in PRESETS:
        assert _parser().parse_args(["train", "--preset", name]).preset == name
    with pytest.raises(SystemExit):
        _parser().parse_args(["train", "--preset", "huge"])
