"""FL* (Appendix A): closed forms and the analytic gradient of eq. (11)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from focal_detect.losses import sigmoid_focal_loss_star

EXTREMES = [-1e4, -80.0, -20.0, -1.0, 0.0, 1.0, 20.0, 80.0, 1e4]


@pytest.mark.parametrize("gamma,beta", [(4.0, 0.0), (2.0, 1.0), (1.0, -0.5)])
def test_closed_form_value(gamma: float, beta: float) -> None:
    x = torch.tensor(EXTREMES * 2)
    t = torch.tensor([1.0] * len(EXTREMES) + [0.0] * len(EXTREMES))
    y = (2 * t - 1).double()
    expected = -F.logsigmoid(gamma * y * x.double() + beta) / gamma  # -log(p*_t) / gamma
    got = sigmoid_focal_loss_star(x, t, gamma=gamma, beta=beta)
    torch.testing.assert_close(got.double(), expected, rtol=2e-6, atol=1e-37)


def test_defaults_are_gamma_4_beta_0() -> None:
    got = sigmoid_focal_loss_star(torch.zeros(1), torch.ones(1))
    assert got.item() == pytest.approx(math.log(2) / 4, rel=1e-6)


@pytest.mark.parametrize("gamma,beta", [(4.0, 0.0), (2.0, 1.0)])
def test_analytic_gradient_is_eq11(gamma: float, beta: float) -> None:
    x = torch.tensor(EXTREMES * 2)
    t = torch.tensor([1.0] * len(EXTREMES) + [0.0] * len(EXTREMES))
    y = (2 * t - 1).double()
    xx = x.clone().requires_grad_(True)
    loss = sigmoid_focal_loss_star(xx, t, gamma=gamma, beta=beta, reduction="sum")
    # One autograd node between the loss and the logits: the saved analytic gradient,
    # not the graph of a formula.
    leaves = [getattr(f, "variable", None) for f, _ in loss.grad_fn.next_functions if f is not None]
    assert len(leaves) == 1 and leaves[0] is xx
    loss.backward()
    # eq. (11): y (p*_t - 1) = -y sigma(-(gamma y x + beta))
    expected = -y * torch.sigmoid(-(gamma * y * x.double() + beta))
    assert torch.isfinite(xx.grad).all()
    torch.testing.assert_close(xx.grad.double(), expected, rtol=2e-6, atol=1e-37)


def test_alpha_weights_the_two_terms() -> None:
    x = torch.randn(10) * 2
    t = (torch.rand(10) < 0.5).float()
    base = sigmoid_focal_loss_star(x, t)
    w = sigmoid_focal_loss_star(x, t, alpha=0.25)
    torch.testing.assert_close(w, base * (0.25 * t + 0.75 * (1 - t)))


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_gradcheck_float64(reduction: str) -> None:
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(5, 4, generator=g, dtype=torch.float64) * 3).requires_grad_(True)
    soft = torch.rand(5, 4, generator=g, dtype=torch.float64)
    for kw in ({}, {"gamma": 2.0, "beta": 1.0, "alpha": 0.3}):
        assert torch.autograd.gradcheck(
            lambda z: sigmoid_focal_loss_star(z, soft, reduction=reduction, **kw), (x,)
        )


def test_reductions_consistent() -> None:
    x = torch.randn(4, 9) * 3
    t = torch.rand(4, 9)
    none = sigmoid_focal_loss_star(x, t)
    torch.testing.assert_close(sigmoid_focal_loss_star(x, t, reduction="sum"), none.sum())
    torch.testing.assert_close(sigmoid_focal_loss_star(x, t, reduction="mean"), none.mean())


def test_bad_arguments() -> None:
    x, t = torch.zeros(2), torch.ones(2)
    with pytest.raises(ValueError, match="gamma"):
        sigmoid_focal_loss_star(x, t, gamma=0.0)
    with pytest.raises(ValueError, match="beta"):
        sigmoid_focal_loss_star(x, t, beta=float("inf"))
    with pytest.raises(ValueError, match="alpha"):
        sigmoid_focal_loss_star(x, t, alpha=1.1)
    with pytest.raises(ValueError, match="reduction"):
        sigmoid_focal_loss_star(x, t, reduction="x")
    with pytest.raises(ValueError, match="targets"):
        sigmoid_focal_loss_star(x, torch.ones(3))
    with pytest.raises(TypeError, match="inputs"):
        sigmoid_focal_loss_star(1.0, t)  # type: ignore[arg-type]
