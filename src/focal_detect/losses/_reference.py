r"""Reference formulas of the focal losses: plain, differentiable tensor expressions.

They define the numbers the fused kernels (``focal_detect.losses._fused``) must
reproduce. They are used under :func:`torch.compile` (inductor fuses each into one
kernel), when a target or weight requires a gradient, for a second derivative
(``create_graph=True``), and by the tests as the reference.

Numerics. Every logarithm is taken of a quantity that cannot round to zero:

.. math::
    -\log p = \max(-x, 0) + L, \qquad -\log(1 - p) = \max(x, 0) + L, \qquad
    L = \log\bigl(1 + e^{-|x|}\bigr),

and :math:`L` is computed as :math:`\log d - ((d - 1) - e)` with
:math:`e = e^{-|x|}`, :math:`d = \mathrm{fl}(1 + e)`, which removes the rounding error
of :math:`d` to first order (as accurate as ``log1p``, which is ~10x slower than
``log`` on CPU in some torch builds). :math:`p = \sigma(x)` and
:math:`1 - p = \sigma(-x)` are two separate sigmoids, so neither is a rounded
difference, and :math:`p - t` is formed as :math:`p(1 - t) - (1 - p)t`.

Derivation of the analytic gradient (torchvision's formula, which this package
reproduces for every target :math:`t \in [0, 1]`)::

  L(x) = a_t q^g C,   p = sigma(x),  q = 1 - p_t = p (1 - t) + (1 - p) t,
  a_t = alpha t + (1 - alpha)(1 - t),  C = -t log p - (1 - t) log(1 - p),
  dp/dx = p (1 - p),   dq/dx = p (1 - p)(1 - 2t),   dC/dx = p - t,

  dL/dx = a_t [g q^(g-1) p (1 - p)(1 - 2t) C + q^g (p - t)]
        = a_t q^g [g (1 - 2t) r C + p - t],      r = p (1 - p) / q  in [0, 1]

(:math:`q \ge \min(p, 1 - p) \ge p(1 - p)`, so :math:`r` is bounded; :math:`q` is
clamped at the smallest normal number, where :math:`q^\gamma = 0` anyway). For
:math:`t = 1`: :math:`q = 1 - p`, :math:`r = p`, :math:`C = -\log p` and
:math:`dL/dx = \alpha (1 - p)^\gamma(\gamma p \log p + p - 1)` (eq. 10 times
:math:`\alpha_t`); for :math:`t = 0` it is eq. (10) with :math:`y = -1`.

For fractional :math:`t` this is *not* the per-class split
:math:`S = -t\alpha(1-p)^\gamma\log p - (1-t)(1-\alpha)p^\gamma\log(1-p)`, whose
derivative is :math:`t\,[\text{eq. 10}, y{=}1] + (1 - t)\,[\text{eq. 10}, y{=}{-1}]`;
the two agree for :math:`t \in \{0, 1\}`. We follow torchvision (drop-in parity, soft
targets included).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor

REDUCTIONS = ("none", "mean", "sum")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other float dtype is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def result_dtype(inputs: Tensor) -> torch.dtype:
    """Input dtype; float32 for half inputs under autocast (PyTorch's loss policy)."""
    dt = inputs.dtype
    if dt in (torch.float16, torch.bfloat16):
        try:
            if torch.is_autocast_enabled(inputs.device.type):
                return torch.float32
        except Exception:  # pragma: no cover - device type without autocast
            pass
    return dt


def no_autocast(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """Disable autocast for ``device`` (no-op for device types without autocast)."""
    try:
        return torch.autocast(device.type, enabled=False)
    except (RuntimeError, ValueError):
        return contextlib.nullcontext()


def reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean()
    return loss


def logistic(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Out-of-place ``sigma(x)``, ``sigma(-x)``, ``log(1 + exp(-|x|))`` (see above)."""
    p = torch.sigmoid(x)
    omp = torch.sigmoid(-x)
    e = torch.minimum(p, omp) / torch.maximum(p, omp)
    dd = 1.0 + e
    L = torch.log(dd) - ((dd - 1.0) - e)
    return p, omp, L


def _focal_terms(
    x: Tensor, t: Tensor, alpha: float | None, gamma: float
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    p, omp, L = logistic(x)
    ce = (torch.clamp(x, min=0.0) - t * x) + L
    q = torch.lerp(p, omp, t).clamp(min=torch.finfo(x.dtype).tiny)
    coef = q.pow(gamma) if gamma != 2.0 else q * q
    if alpha is not None:
        coef = coef * ((1.0 - alpha) + (2.0 * alpha - 1.0) * t)
    return p, omp, ce, q, coef


def focal_formula(x: Tensor, t: Tensor, alpha: float | None, gamma: float) -> Tensor:
    """Elementwise focal loss (torchvision's definition), differentiable by autograd."""
    _, _, ce, _, coef = _focal_terms(x, t, alpha, gamma)
    return coef * ce


def focal_grad_formula(x: Tensor, t: Tensor, alpha: float | None, gamma: float) -> Tensor:
    """Closed-form d(loss)/dx, see the derivation above."""
    p, omp, ce, q, coef = _focal_terms(x, t, alpha, gamma)
    r = p * omp / q
    return coef * (gamma * (1.0 - 2.0 * t) * r * ce + torch.lerp(p, -omp, t))


def positive_terms(x: Tensor, alpha: float | None, gamma: float) -> tuple[Tensor, Tensor]:
    """Target-1 loss and gradient (eq. 10 x alpha) of a small tensor, out of place."""
    p, omp, L = logistic(x)
    nlogp = torch.clamp(-x, min=0.0) + L  # -log p
    q = omp.pow(gamma) if gamma != 2.0 else omp * omp
    a = 1.0 if alpha is None else alpha
    loss = a * q * nlogp
    grad = a * q * (-gamma * p * nlogp - omp)
    return loss, grad


def star_formula(
    x: Tensor, t: Tensor, gamma: float, beta: float, alpha: float | None, reduction: str
) -> Tensor:
    """FL* as the mixture ``a+ t FL*(y=+1) + a- (1 - t) FL*(y=-1)``, by autograd."""
    ap = 1.0 if alpha is None else alpha
    an = 1.0 if alpha is None else 1.0 - alpha
    loss = (ap * t * F.softplus(-(gamma * x + beta)) + an * (1 - t) * F.softplus(gamma * x - beta)) / gamma
    return reduce(loss, reduction)


class FocalRecomputeFn(torch.autograd.Function):
    """Loss from the formula; backward recomputes the closed-form gradient from x, t.

    Used under :func:`torch.compile`, where both passes fuse into single kernels and
    saving the inputs costs no extra memory.
    """

    @staticmethod
    def forward(ctx, x: Tensor, t: Tensor, alpha: float | None, gamma: float) -> Tensor:
        ctx.save_for_backward(x, t)
        ctx.alpha, ctx.gamma = alpha, gamma
        return focal_formula(x, t, alpha, gamma)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor, None, None, None]:
        x, t = ctx.saved_tensors
        return grad_output * focal_grad_formula(x, t, ctx.alpha, ctx.gamma), None, None, None
