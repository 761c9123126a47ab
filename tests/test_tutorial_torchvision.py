"""Live run of the torchvision tutorial (docs/tutorials/torchvision_retinanet.py).

Skipped without torchvision; tests/test_docs.py checks the same loss against a golden
file made with torchvision 0.29.1, so the tutorial stays honest either way.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

torchvision = pytest.importorskip("torchvision")

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorials" / "torchvision_retinanet.py"


def _tutorial():
    spec = importlib.util.spec_from_file_location("_docs_torchvision_retinanet", TUTORIAL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_focal_detect_loss_equals_torchvision_loss_on_the_same_model() -> None:
    reference, ours = _tutorial().compare(seed=0)
    assert set(ours) == {"classification", "bbox_regression"}
    for key in ours:
        torch.testing.assert_close(ours[key], reference[key], rtol=1e-5, atol=1e-6)
        assert ours[key].item() > 0


def test_gradients_equal_torchvision_gradients() -> None:
    tutorial = _tutorial()
    torch.manual_seed(0)
    model = tutorial.tiny_retinanet().train()
    images, targets = tutorial.demo_batch()
    grads = []
    for patch in (False, True):
        if patch:
            tutorial.use_focal_detect_loss(model)
        model.zero_grad()
        losses = model(images, targets)
        (losses["classification"] + losses["bbox_regression"]).backward()
        grads.append([p.grad.clone() for p in model.head.parameters()])
    for g_ref, g_ours in zip(*grads):
        torch.testing.assert_close(g_ours, g_ref, rtol=1e-4, atol=1e-6)


def test_training_with_focal_detect_loss_lowers_it_and_inference_still_works() -> None:
    tutorial = _tutorial()
    history = tutorial.train(steps=10, seed=0)
    assert history[-1] < history[0]
    torch.manual_seed(0)
    model = tutorial.use_focal_detect_loss(tutorial.tiny_retinanet()).eval()
    images, _ = tutorial.demo_batch()
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == 2 and set(detections[0]) == {"boxes", "scores", "labels"}


def test_matcher_is_a_drop_in_for_torchvisions_proposal_matcher() -> None:
    """The tutorial's other route: keep torchvision's loss, swap in our Matcher only."""
    from focal_detect.matching import Matcher

    tutorial = _tutorial()
    torch.manual_seed(0)
    model = tutorial.tiny_retinanet().train()
    images, targets = tutorial.demo_batch()
    reference = model(images, targets)
    model.proposal_matcher = Matcher(0.5, 0.4, True, min_low_quality_iou=None)
    ours = model(images, targets)
    for key in reference:
        torch.testing.assert_close(ours[key], reference[key], rtol=0, atol=0)


def test_script_prints_what_the_page_shows() -> None:
    """``python torchvision_retinanet.py`` as displayed; the page's output to the digit.

    The page's numbers are from torch 2.14.1 / torchvision 0.29.1 (the pair it tells
    readers to install); other releases may differ in the last digits.
    """
    from tutorial_pages import console_output, run_tutorial

    shown = console_output("torchvision_retinanet.rst", "python torchvision_retinanet.py")
    printed = run_tutorial("torchvision_retinanet.py")
    if (torch.__version__.split("+")[0], torchvision.__version__.split("+")[0]) == ("2.14.1", "0.29.1"):
        assert printed == shown
    else:
        assert [line.split()[0] for line in printed] == [line.split()[0] for line in shown]
