r"""Initialisation of RetinaNet's subnet convolutions (Lin et al. 2017, Section 4.1).

All new convolutions get weights :math:`\mathcal N(0, \sigma^2)` with
:math:`\sigma = 0.01` and bias 0, except the last layer of the classification subnet,
whose bias is :math:`b = -\log((1 - \pi)/\pi)` so that every anchor starts with
foreground probability :math:`\sigma(b) = \pi = 0.01`. Without it the huge number of
background anchors makes the first iterations of training diverge.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from focal_detect._checks import check_number

__all__ = ["prior_bias", "init_conv_", "init_prior_bias_"]


def prior_bias(prior: float = 0.01) -> float:
    r"""Bias whose sigmoid is ``prior``: :math:`b = -\log((1 - \pi) / \pi)`.

    Args:
        prior: Foreground probability :math:`\pi`, ``0 < prior < 1``.

    Returns:
        The logit of ``prior`` (about -4.595 for the paper's 0.01).

    Raises:
        ValueError: ``prior`` not strictly between 0 and 1.
        TypeError: ``prior`` not a real number.

    Example:
        >>> round(prior_bias(0.01), 4)
        -4.5951
        >>> prior_bias(0.5)
        0.0
    """
    pi = check_number("prior_bias", "prior", prior, low=0.0, high=1.0, low_open=True, high_open=True)
    if pi < 1e-300:
        # (1 - pi) / pi overflows for subnormal pi; log pi - log1p(-pi) stays exact
        # (prior_bias(1e-320) = -736.8...).
        return math.log(pi) - math.log1p(-pi)
    return -math.log((1.0 - pi) / pi)


def _check_module(fn: str, conv: object) -> nn.Module:
    if not isinstance(conv, nn.Module) or not isinstance(getattr(conv, "weight", None), torch.Tensor):
        raise TypeError(f"{fn}: conv must be a module with a weight tensor, got {type(conv).__name__}")
    return conv


def _parameters(conv: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(weight, bias or None)`` of a module checked by :func:`_check_module`."""
    weight, bias = conv.weight, getattr(conv, "bias", None)
    assert isinstance(weight, torch.Tensor)  # _check_module
    return weight, bias if isinstance(bias, torch.Tensor) else None


def init_conv_(conv: nn.Module, std: float = 0.01, bias: float = 0.0) -> nn.Module:
    r"""In place: weights :math:`\sim \mathcal N(0, \mathrm{std}^2)`, bias ``bias``.

    The paper's initialisation of every new convolution of the subnets (and the FPN in
    some implementations). A layer without bias only gets its weights set.

    Args:
        conv: Module with ``weight`` (and optionally ``bias``), e.g. ``nn.Conv2d``.
        std: Standard deviation of the weights, ``>= 0``.
        bias: Constant bias value.

    Returns:
        ``conv`` itself.

    Example:
        >>> conv = init_conv_(torch.nn.Conv2d(256, 256, 3), bias=0.5)
        >>> conv.bias[:3]
        tensor([0.5000, 0.5000, 0.5000], grad_fn=<SliceBackward0>)
        >>> bool(conv.weight.std().sub(0.01).abs() < 1e-3)
        True
    """
    fn = "init_conv_"
    _check_module(fn, conv)
    s = check_number(fn, "std", std, low=0.0)
    b = check_number(fn, "bias", bias)
    weight, bias_param = _parameters(conv)
    with torch.no_grad():
        weight.normal_(0.0, s)
        if bias_param is not None:
            bias_param.fill_(b)
    return conv


def init_prior_bias_(conv: nn.Module, prior: float = 0.01, std: float = 0.01) -> nn.Module:
    r"""In place: the classification subnet's last layer, weights :math:`\mathcal N(0, \mathrm{std}^2)`,
    bias :func:`prior_bias` ``(prior)``.

    Args:
        conv: Module with ``weight`` and ``bias`` (e.g. the ``K*A``-output ``nn.Conv2d``).
        prior: Initial foreground probability :math:`\pi`, ``0 < prior < 1``.
        std: Standard deviation of the weights, ``>= 0``.

    Returns:
        ``conv`` itself.

    Raises:
        ValueError: ``conv`` has no bias, or ``prior``/``std`` out of range.

    Example:
        >>> conv = init_prior_bias_(torch.nn.Conv2d(256, 9 * 80, 3))
        >>> torch.sigmoid(conv.bias[:2]).detach()
        tensor([0.0100, 0.0100])
    """
    fn = "init_prior_bias_"
    _check_module(fn, conv)
    if getattr(conv, "bias", None) is None:
        raise ValueError(f"{fn}: conv must have a bias, got bias=None")
    s = check_number(fn, "std", std, low=0.0)
    b = prior_bias(check_number(fn, "prior", prior, low=0.0, high=1.0, low_open=True, high_open=True))
    weight, bias_param = _parameters(conv)
    assert bias_param is not None  # checked above
    with torch.no_grad():
        weight.normal_(0.0, s)
        bias_param.fill_(b)
    return conv
