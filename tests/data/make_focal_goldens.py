"""Generate tests/data/focal_goldens.json from torchvision (peer reference values).

Run from the repository root with the peer environment (torch 2.14.1, torchvision 0.29.1):

    ~/peer-venv/bin/python tests/data/make_focal_goldens.py

Each focal case stores logits, targets, alpha, gamma, reduction and torchvision's
``sigmoid_focal_loss`` output and input gradient (of ``loss.sum()``) computed in float32
and in float64 (the float64 run is the precision reference). GIoU cases store
``torchvision.ops.generalized_box_iou_loss`` outputs. The test suite reads the JSON
only; it never imports torchvision for these.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torchvision
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

OUT = Path(__file__).with_name("focal_goldens.json")


def _focal_case(x, t, alpha, gamma, reduction):
    rec = {
        "inputs": x.tolist(),
        "targets": t.tolist(),
        "alpha": alpha,
        "gamma": gamma,
        "reduction": reduction,
        "shape": list(x.shape),
    }
    for dt, key in ((torch.float32, "f32"), (torch.float64, "f64")):
        xi = x.detach().to(dt).clone().requires_grad_(True)
        out = sigmoid_focal_loss(xi, t.to(dt), alpha=alpha, gamma=gamma, reduction=reduction)
        out.sum().backward()
        rec[f"loss_{key}"] = out.detach().reshape(-1).tolist()
        rec[f"grad_{key}"] = xi.grad.reshape(-1).tolist()
    return rec


def main() -> None:
    g = torch.Generator().manual_seed(20170807)
    cases = []
    # Logits on a grid that covers easy/hard positives and negatives, plus random ones.
    grid = torch.tensor([-30.0, -12.0, -6.0, -4.595, -2.0, -0.5, 0.0, 0.5, 2.0, 6.0, 12.0, 30.0])
    hard = torch.cat([torch.ones(12), torch.zeros(12)])
    xg = torch.cat([grid, grid])
    rand_x = (torch.randn(4, 6, generator=g, dtype=torch.float64) * 4).float()
    rand_hard = (torch.rand(4, 6, generator=g) < 0.3).float()
    rand_soft = torch.rand(4, 6, generator=g)
    for alpha, gamma in ((0.25, 2.0), (-1.0, 2.0), (0.5, 0.0), (0.75, 1.5), (-1.0, 0.0), (0.25, 5.0)):
        cases.append(_focal_case(xg, hard, alpha, gamma, "none"))
        for red in ("none", "mean", "sum"):
            cases.append(_focal_case(rand_x, rand_hard, alpha, gamma, red))
            cases.append(_focal_case(rand_x, rand_soft, alpha, gamma, red))
    giou = []
    b1 = torch.tensor(
        [
            [0.0, 0.0, 2.0, 2.0],
            [1.0, 1.0, 3.0, 4.0],
            [0.0, 0.0, 1.0, 1.0],
            [5.0, 5.0, 9.0, 7.0],
            [0.0, 0.0, 4.0, 4.0],
        ]
    )
    b2 = torch.tensor(
        [
            [1.0, 1.0, 3.0, 3.0],
            [1.0, 1.0, 3.0, 4.0],
            [2.0, 2.0, 3.0, 3.0],
            [4.0, 6.0, 8.0, 10.0],
            [1.0, 1.0, 2.0, 2.0],
        ]
    )
    for red in ("none", "mean", "sum"):
        out = generalized_box_iou_loss(b1, b2, reduction=red)
        giou.append(
            {"boxes1": b1.tolist(), "boxes2": b2.tolist(), "reduction": red, "loss": out.reshape(-1).tolist()}
        )
    data = {
        "generator": "tests/data/make_focal_goldens.py",
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "call": "torchvision.ops.sigmoid_focal_loss(inputs, targets, alpha=alpha, gamma=gamma, reduction=reduction); "
        "grad = d(loss.sum())/d(inputs)",
        "focal": cases,
        "giou": giou,
    }
    OUT.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(cases)} focal cases, {len(giou)} giou cases)")


if __name__ == "__main__":
    main()
