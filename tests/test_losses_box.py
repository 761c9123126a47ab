"""Box losses: smooth L1, L1, GIoU (torchvision goldens)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from focal_detect.losses import giou_loss, l1_loss, smooth_l1_loss

GOLDENS = json.loads((Path(__file__).parent / "data" / "focal_goldens.json").read_text())


@pytest.mark.parametrize("beta", [0.11, 1.0, 0.0])
def test_smooth_l1_matches_torch(beta: float) -> None:
    a = torch.randn(50, 4)
    b = torch.randn(50, 4)
    for red in ("none", "mean", "sum"):
        torch.testing.assert_close(
            smooth_l1_loss(a, b, beta, red), F.smooth_l1_loss(a, b, reduction=red, beta=beta)
        )


def test_smooth_l1_closed_form_and_beta_zero_is_l1() -> None:
    d = torch.tensor([0.05, -0.05, 0.2, -3.0])
    got = smooth_l1_loss(d, torch.zeros(4), beta=0.11)
    torch.testing.assert_close(
        got, torch.tensor([0.5 * 0.05**2 / 0.11, 0.5 * 0.05**2 / 0.11, 0.2 - 0.055, 3.0 - 0.055])
    )
    torch.testing.assert_close(smooth_l1_loss(d, torch.zeros(4), beta=0.0), d.abs())
    torch.testing.assert_close(l1_loss(d, torch.zeros(4), reduction="sum"), d.abs().sum())


def test_giou_goldens_from_torchvision() -> None:
    # torchvision 0.29.1 generalized_box_iou_loss(boxes1, boxes2, reduction); see make_focal_goldens.py.
    for case in GOLDENS["giou"]:
        got = giou_loss(
            torch.tensor(case["boxes1"]), torch.tensor(case["boxes2"]), reduction=case["reduction"]
        )
        torch.testing.assert_close(got.reshape(-1), torch.tensor(case["loss"]), rtol=1e-6, atol=1e-7)


def test_giou_closed_forms() -> None:
    b = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    assert giou_loss(b, b).item() == pytest.approx(0.0, abs=1e-6)
    # disjoint unit boxes 1 apart: IoU 0, enclosing 3x1, union 2 -> GIoU = -1/3
    far = giou_loss(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([[2.0, 0.0, 3.0, 1.0]]))
    assert far.item() == pytest.approx(1 + 1 / 3, rel=1e-6)
    assert giou_loss(torch.zeros(0, 4), torch.zeros(0, 4), reduction="mean").item() == 0.0


def test_gradcheck_box_losses() -> None:
    g = torch.Generator().manual_seed(2)
    a = torch.randn(6, 4, generator=g, dtype=torch.float64).requires_grad_(True)
    b = torch.randn(6, 4, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: smooth_l1_loss(z, b, 0.11, "sum"), (a,))
    assert torch.autograd.gradcheck(lambda z: l1_loss(z, b, "mean"), (a,))
    xy = torch.rand(5, 2, generator=g, dtype=torch.float64) * 10
    wh = torch.rand(5, 2, generator=g, dtype=torch.float64) * 5 + 1
    b1 = torch.cat([xy, xy + wh], -1).requires_grad_(True)
    b2 = torch.cat([xy + 0.7, xy + wh + 0.3], -1)
    assert torch.autograd.gradcheck(lambda z: giou_loss(z, b2, reduction="sum"), (b1,))


def test_live_giou_parity_with_torchvision() -> None:
    tv = pytest.importorskip("torchvision")
    xy = torch.rand(40, 2) * 50
    b1 = torch.cat([xy, xy + torch.rand(40, 2) * 20], -1)
    xy2 = torch.rand(40, 2) * 50
    b2 = torch.cat([xy2, xy2 + torch.rand(40, 2) * 20], -1)
    torch.testing.assert_close(
        giou_loss(b1, b2), tv.ops.generalized_box_iou_loss(b1, b2), rtol=1e-5, atol=1e-6
    )


def test_bad_arguments() -> None:
    a = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="beta"):
        smooth_l1_loss(a, a, beta=-1.0)
    with pytest.raises(ValueError, match="target"):
        smooth_l1_loss(a, torch.zeros(3, 3))
    with pytest.raises(ValueError, match="boxes1"):
        giou_loss(torch.zeros(3, 3), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="boxes2"):
        giou_loss(a, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="reduction"):
        l1_loss(a, a, reduction="avg")
