"""Prior-probability initialisation (Section 4.1)."""

from __future__ import annotations

import math

import pytest
import torch

from focal_detect.init import init_conv_, init_prior_bias_, prior_bias


def test_prior_bias_closed_form() -> None:
    assert prior_bias(0.01) == pytest.approx(-math.log(99), rel=1e-12)
    assert prior_bias() == pytest.approx(-math.log(99), rel=1e-12)
    assert prior_bias(0.5) == 0.0
    assert torch.sigmoid(torch.tensor(prior_bias(0.2), dtype=torch.float64)).item() == pytest.approx(
        0.2, rel=1e-12
    )


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_prior_bias_rejects_out_of_range(bad: float) -> None:
    with pytest.raises(ValueError, match="prior"):
        prior_bias(bad)


def test_prior_bias_rejects_non_number() -> None:
    with pytest.raises(TypeError, match="prior"):
        prior_bias("0.01")  # type: ignore[arg-type]


def test_init_prior_bias_sets_weights_and_bias() -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(64, 90, 3)
    out = init_prior_bias_(conv, prior=0.01, std=0.01)
    assert out is conv
    torch.testing.assert_close(conv.bias.detach(), torch.full((90,), -math.log(99)))
    assert conv.weight.std().item() == pytest.approx(0.01, rel=0.02)
    assert abs(conv.weight.mean().item()) < 1e-3
    # every anchor starts at foreground probability ~ prior
    y = conv(torch.randn(1, 64, 8, 8))
    assert torch.sigmoid(y).mean().item() == pytest.approx(0.01, rel=0.1)


def test_init_conv_std_and_bias() -> None:
    torch.manual_seed(0)
    conv = init_conv_(torch.nn.Conv2d(128, 128, 3), std=0.05, bias=0.3)
    assert conv.weight.std().item() == pytest.approx(0.05, rel=0.02)
    assert (conv.bias == 0.3).all()
    nb = init_conv_(torch.nn.Conv2d(64, 64, 1, bias=False))
    assert nb.bias is None and nb.weight.std().item() == pytest.approx(0.01, rel=0.05)


def test_init_errors() -> None:
    with pytest.raises(ValueError, match="bias"):
        init_prior_bias_(torch.nn.Conv2d(4, 4, 1, bias=False))
    with pytest.raises(ValueError, match="prior"):
        init_prior_bias_(torch.nn.Conv2d(4, 4, 1), prior=1.0)
    with pytest.raises(ValueError, match="std"):
        init_conv_(torch.nn.Conv2d(4, 4, 1), std=-1.0)
    with pytest.raises(TypeError, match="conv"):
        init_conv_(torch.zeros(3))  # type: ignore[arg-type]
