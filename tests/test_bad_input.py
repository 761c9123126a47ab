"""Regression tests for bad input that 0.1.0 answered silently or with a bare RuntimeError
(issue 10, section 2): each input gets a clear error naming the argument, or a
documented, safe result."""

from __future__ import annotations

import math

import pytest
import torch

from focal_detect import (
    sigmoid_focal_loss,
    sigmoid_focal_loss_star,
)

NAN = float("nan")


# --------------------------------------------------------------------------- 1. targets


@pytest.mark.parametrize("fn", [sigmoid_focal_loss, sigmoid_focal_loss_star])
@pytest.mark.parametrize(
    ("bad", "shown"),
    [(-1.0, "-1.0"), (2.0, "2.0"), (NAN, "nan"), (1.0 + 2**-20, "1.00000095")],
)
def test_focal_losses_reject_targets_outside_unit_interval(fn, bad, shown):
    x = torch.zeros(4)
    t = torch.tensor([0.0, 1.0, 0.5, bad])
    with pytest.raises(ValueError, match=rf"{fn.__name__}: targets must be in \[0, 1\].*got {shown}"):
        fn(x, t)


def test_focal_loss_suggests_the_conversion_of_plus_minus_one_targets():
    y = torch.tensor([-1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"\(y \+ 1\) / 2"):
        sigmoid_focal_loss(torch.zeros(3), y)
    # ... and the suggested conversion gives the {0, 1} loss, which is positive.
    loss = sigmoid_focal_loss(torch.zeros(3), (y + 1) / 2)
    assert torch.allclose(loss, torch.tensor([0.75, 0.25, 0.25]) * 0.25 * math.log(2))


@pytest.mark.parametrize("fn", [sigmoid_focal_loss, sigmoid_focal_loss_star])
def test_focal_target_check_can_be_switched_off(fn):
    # With the check off the old (meaningless) value comes back unchanged: the switch
    # only skips the reduction, it does not change the kernel.
    x = torch.tensor([0.3, -1.0])
    t = torch.tensor([-1.0, 2.0])
    got = fn(x, t, check_targets=False)
    assert torch.isfinite(got).all()
    if fn is sigmoid_focal_loss:
        from focal_detect.losses import _focal_formula

        assert torch.allclose(got, _focal_formula(x, t, 0.25, 2.0))


def test_focal_target_check_accepts_boundaries_half_and_integer_targets():
    x = torch.zeros(3, dtype=torch.float16)
    for t in (torch.tensor([0.0, 1.0, 0.5]).half(), torch.tensor([0, 1, 1]), torch.tensor([False, True, True])):
        got = sigmoid_focal_loss(x, t.to(torch.float16) if t.dtype == torch.bool else t)
        assert got.shape == (3,) and (got > 0).all()
    assert sigmoid_focal_loss(torch.zeros(0), torch.zeros(0)).shape == (0,)
