"""predict_dataset / evaluate_coco progress: shown when asked (tqdm or plain lines), silent when not."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from focal_detect.data import SyntheticShapes
from focal_detect.evaluation import evaluate_coco, predict_dataset


class _Empty(nn.Module):
    def forward(self, images):
        return [
            {
                "boxes": torch.zeros(0, 4),
                "scores": torch.zeros(0),
                "labels": torch.zeros(0, dtype=torch.int64),
            }
            for _ in images
        ]


def _data(n: int) -> list:
    return [(torch.zeros(3, 4, 4), {"image_id": i}) for i in range(n)]


def test_progress_false_and_default_are_silent(capsys) -> None:
    predict_dataset(_Empty(), _data(5), batch_size=2, progress=False)
    predict_dataset(_Empty(), _data(5), batch_size=2)  # stderr is not a terminal under pytest
    evaluate_coco(_Empty(), SyntheticShapes(num_images=2, image_size=32), batch_size=2, progress=False)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_progress_shows_a_tqdm_bar(capsys) -> None:
    pytest.importorskip("tqdm")
    predict_dataset(_Empty(), _data(5), batch_size=2, progress=True)
    err = capsys.readouterr().err
    assert "predict_dataset" in err and "5/5" in err


def test_progress_without_tqdm_prints_plain_lines(capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now raises ImportError
    predict_dataset(_Empty(), _data(20), batch_size=4, progress=True)
    lines = capsys.readouterr().err.splitlines()
    # Batches of 4 of 20 images: 20 %, 40 %, ... each crosses two tenths but prints one line.
    assert [ln.split(",")[0] for ln in lines] == [
        f"predict_dataset: {k}/20 images ({5 * k}%)" for k in (4, 8, 12, 16, 20)
    ]


def test_evaluate_coco_passes_progress_on(capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)
    evaluate_coco(_Empty(), SyntheticShapes(num_images=3, image_size=32), batch_size=2, progress=True)
    assert "3/3 images (100%)" in capsys.readouterr().err


def test_progress_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="progress must be a bool or None"):
        predict_dataset(_Empty(), _data(1), progress="yes")  # type: ignore[arg-type]
