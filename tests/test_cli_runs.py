"""focal-detect train/demo/evaluate/predict: --seed reproduces a run, bad checkpoint
files end in one line and exit 2, --resume semantics, --dist-timeout."""

from __future__ import annotations

import csv
import datetime
import random

import pytest
import torch

from focal_detect.cli import build_model, main, save_model
from focal_detect.engine import load_checkpoint


def _noise(n: int) -> bytes:
    """Deterministic garbage (the seed is fixed: the test gives the same file every run)."""
    return random.Random(n).randbytes(n)


CONFIG = (
    "[data]\nsynthetic = {num_images = 4, image_size = 32, val_images = 1}\n"
    '[model]\npreset = "tiny"\n[model.transform]\nsize_divisible = 32\n[model.backbone]\nfrozen_bn = false\n'
    "[train]\nbatch_size = 2\nlr = 0.01\nwarmup_iters = 0\nlog_every = 1\n"
)


@pytest.fixture()
def config(tmp_path):
    path = tmp_path / "cfg.toml"
    path.write_text(CONFIG)
    return path


def _train(config, out, *extra: str) -> int:
    return main(["train", "--config", str(config), "--output-dir", str(out), "--no-progress", *extra])


def _weights(path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


@pytest.mark.slow
def test_train_seed_gives_bit_identical_weights_and_another_seed_differs(config, tmp_path, capsys) -> None:
    # 0.1.0 built the model before seeding: two `train --seed 0` runs differed from step 1.
    torch.manual_seed(1)
    assert _train(config, tmp_path / "a", "--iterations", "2", "--seed", "0") == 0
    torch.manual_seed(2)  # whatever the process did before must not matter
    assert _train(config, tmp_path / "b", "--iterations", "2", "--seed", "0") == 0
    assert _train(config, tmp_path / "c", "--iterations", "2", "--seed", "1") == 0
    a, b, c = (_weights(tmp_path / x / "model_final.pt") for x in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    # the first logged losses agree too (initial weights, data order, flips)
    losses = []
    for x in "ab":
        with open(tmp_path / x / "metrics.csv") as f:
            losses.append([r["loss"] for r in csv.DictReader(f)])
    assert len(losses[0]) == 2 and losses[0] == losses[1]


@pytest.mark.slow
def test_demo_seed_gives_bit_identical_weights(tmp_path, capsys) -> None:
    args = ["demo", "--quick", "--iterations", "1", "--no-progress"]
    torch.manual_seed(1)
    assert main([*args, "--output-dir", str(tmp_path / "a")]) == 0
    torch.manual_seed(2)
    assert main([*args, "--output-dir", str(tmp_path / "b")]) == 0
    assert main([*args, "--seed", "3", "--output-dir", str(tmp_path / "c")]) == 0
    a, b, c = (_weights(tmp_path / x / "model.pt") for x in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_resume_semantics_on_the_command_line(config, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    # nothing to resume from (a wrong --output-dir): exit 2, one line
    assert _train(config, out, "--iterations", "2", "--resume") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing to resume from" in err and str(out) in err, err
    # --resume auto starts afresh, then continues
    assert _train(config, out, "--iterations", "1", "--resume", "auto") == 0
    assert _train(config, out, "--iterations", "2", "--resume", "auto") == 0
    assert load_checkpoint(out / "checkpoint_last.pt")["step"] == 2


BAD_FILES = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:1000]),
    "zero bytes": lambda p: p.write_bytes(b""),
    "random bytes": lambda p: p.write_bytes(_noise(5000)),
    "overwritten mid-file": lambda p: p.write_bytes(
        p.read_bytes()[: p.stat().st_size // 2]
        + _noise(4096)
        + p.read_bytes()[p.stat().st_size // 2 + 4096 :]
    ),
    "bare tensor": lambda p: torch.save(torch.ones(2), p),
    "a directory": lambda p: (p.unlink(), p.mkdir()),
}


@pytest.fixture(scope="module")
def good_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "model.pt"
    save_model(build_model(3, "tiny", transform={"size_divisible": 32}), path, ["a", "b", "c"], [1, 2, 3])
    return path.read_bytes()


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_model_files_end_in_one_line_and_exit_2(kind, good_model, tmp_path, capsys) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(good_model)
    BAD_FILES[kind](path)
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (32, 32)).save(image)
    for argv in (
        [
            "evaluate",
            "--checkpoint",
            str(path),
            "--images",
            str(tmp_path),
            "--annotations",
            str(tmp_path / "a.json"),
        ],
        ["predict", str(image), "--checkpoint", str(path), "--output-dir", str(tmp_path / "pred")],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(path) in err and "error: " in err, err


def test_weights_that_do_not_fit_the_config_are_a_clear_error(good_model, tmp_path, capsys) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(good_model)
    ckpt = load_checkpoint(path)
    ckpt["model_config"]["num_classes"] = 4  # classifier shape no longer matches
    from focal_detect.engine import save_checkpoint

    save_checkpoint(ckpt, path)
    from focal_detect.cli import load_model

    with pytest.raises(ValueError, match="the weights do not fit its model config .*size mismatch"):
        load_model(path)
    ckpt["model_config"]["depth"] = 3
    save_checkpoint(ckpt, path)
    with pytest.raises(
        ValueError, match=r"has an invalid model config: RetinaNetConfig: unknown field\(s\) \['depth'\]"
    ):
        load_model(path)


def test_bad_training_checkpoint_on_resume_exits_2(config, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert _train(config, out, "--iterations", "1") == 0
    ckpt = out / "checkpoint_last.pt"
    data = bytearray(ckpt.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 4096] = _noise(4096)
    ckpt.write_bytes(bytes(data))
    capsys.readouterr()
    assert _train(config, out, "--iterations", "2", "--resume") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(ckpt) in err, err
    assert "corrupt" in err or "not a readable torch file" in err, err


def test_dist_timeout_reaches_init_process_group(config, tmp_path, monkeypatch, capsys) -> None:
    seen: list[dict] = []

    def fake_init(**kw):
        seen.append(kw)
        raise ValueError("stop here")  # the CLI reports it on one line, exit 2

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.distributed, "init_process_group", fake_init)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    assert _train(config, tmp_path / "r", "--dist-timeout", "42.5") == 2
    assert seen[-1]["timeout"] == datetime.timedelta(seconds=42.5) and seen[-1]["backend"] in ("gloo", "nccl")
    config.write_text(CONFIG + "dist_timeout = 7\n")
    assert _train(config, tmp_path / "r") == 2
    assert seen[-1]["timeout"] == datetime.timedelta(seconds=7)
    config.write_text(CONFIG)
    assert _train(config, tmp_path / "r") == 2
    assert "timeout" not in seen[-1]  # torch's own default
    assert "stop here" in capsys.readouterr().err
    assert _train(config, tmp_path / "r", "--dist-timeout", "0") == 2
    assert "dist_timeout must be in" in capsys.readouterr().err


def test_train_auto_with_a_time_budget_prints_coverage_and_time_left(tmp_path, capsys) -> None:
    from focal_detect.data import SyntheticShapes, export_coco

    threads = torch.get_num_threads()
    export_coco(SyntheticShapes(num_images=8, image_size=64, seed=0), tmp_path / "data")
    args = [
        "train",
        "--train-images", str(tmp_path / "data" / "images"),
        "--train-annotations", str(tmp_path / "data" / "annotations.json"),
        "--preset", "auto",
        "--time-budget", "6",
        "--batch-size", "2",
        "--log-every", "1",
        "--output-dir", str(tmp_path / "run"),
        "--no-progress",
    ]  # fmt: skip
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)  # the calibration may have chosen one thread
    out = capsys.readouterr().out
    assert "anchor coverage:" in out and "auto: anchor sizes" in out
    assert "steps expected in 6 s" in out  # the calibration's estimate
    assert " s left, about " in out  # the reports during the run
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint_last.pt")
    assert ckpt["train_config"]["optimizer"] == "adamw"  # the auto recipe
    assert ckpt["train_config"]["time_budget_s"] == 6.0
    assert ckpt["scheduler"]["elapsed_s"] <= 6.5
    from focal_detect.models import load_model

    model, _ = load_model(tmp_path / "run" / "model_final.pt")
    assert model.config.anchors.offset == 0.5  # the fitted anchors travel with the model
