r"""Fused analytic kernels of the focal losses: loss and gradient in one forward pass.

Each kernel evaluates the closed forms of ``focal_detect.losses._reference`` with
in-place ops on preallocated work buffers, and writes the gradient of the summed loss
while it computes the loss. How much of the tensor one pass covers is decided by
:func:`pass_elements`, a pure function of the device type, the size and the thread
count:

* accelerators (``device.type != "cpu"``): one whole-tensor pass, i.e. each op is a
  single kernel launch over all elements (no chunk loop of tiny launches);
* CPU: cache-sized chunks of :data:`CHUNK_ELEMENTS`. On CPU the cost is memory
  traffic, not arithmetic: chunks keep the ~20 work-buffer passes in cache. The same
  size was fastest at one and at two intra-op threads (2**18 to 2**20 measured at two
  threads: larger chunks were slower), so the thread count does not enter the choice.
  The library owns no threads: PyTorch's intra-op threads, as the caller set them, do
  the work (two threads ran the chunks ~2x faster than one on a quiet 2-core machine).

The kernels are documented numeric kernels: long, flat sequences of in-place ops, each
line commented with the quantity it forms.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from focal_detect.losses._reference import compute_dtype, positive_terms

#: Elements per chunk on CPU. Each eager op costs a few microseconds of dispatch, so
#: chunks must amortise ~25 ops, yet the six float32 work buffers (1 MiB each at 2**18)
#: must stay in cache (L2/L3). 2**18 was fastest on the project's 2-core machine at one
#: and at two threads (2**16 to 2**21 measured).
CHUNK_ELEMENTS = 1 << 18

#: An elementwise kernel ``kernel(x, t, work, loss_out, grad_out) -> loss chunk``.
Kernel = Callable[[Tensor, Tensor, list[Tensor], "Tensor | None", "Tensor | None"], Tensor]


def pass_elements(device_type: str, numel: int) -> int:
    """Elements one pass of a fused kernel covers; ``numel`` means one whole-tensor pass.

    Args:
        device_type: ``tensor.device.type`` (``"cpu"``, ``"cuda"``, ``"meta"``, ...).
        numel: Elements of the logits.

    Returns:
        ``max(numel, 1)`` on accelerators (one pass, no chunk loop of small kernel
        launches); ``min(max(numel, 1), CHUNK_ELEMENTS)`` on CPU.

    Example:
        >>> pass_elements("cuda", 19_200_000)
        19200000
        >>> pass_elements("cpu", 19_200_000), pass_elements("cpu", 1000)
        (262144, 1000)
    """
    n = max(numel, 1)
    return n if device_type != "cpu" else min(n, CHUNK_ELEMENTS)


def _buffers(n: int, count: int, dtype: torch.dtype, device: torch.device) -> list[Tensor]:
    return [torch.empty(n, dtype=dtype, device=device) for _ in range(count)]


def _pow_(q: Tensor, gamma: float) -> Tensor:
    """``q ** gamma`` in place, with cheap special cases (``0 ** 0 == 1``)."""
    if gamma == 2.0:
        return q.mul_(q)
    if gamma == 1.0:
        return q
    if gamma == 0.0:
        return q.fill_(1.0)
    return q.pow_(gamma)


def _logistic_parts(x: Tensor, p: Tensor, omp: Tensor, e: Tensor, d: Tensor, L: Tensor) -> None:
    r"""Fill ``p = sigma(x)``, ``omp = sigma(-x) = 1 - p``, ``e = exp(-|x|)`` and
    ``L = log(1 + e)``; ``d`` is scratch.

    ``e = min(p, 1-p) / max(p, 1-p)`` (cheaper than ``exp``; both sigmoids are accurate
    to a few ulp in relative terms), and ``L`` gets the rounding error of
    ``d = fl(1 + e)`` removed: ``log(1 + e) = log d - ((d - 1) - e)`` up to
    ``|d - 1 - e| e / (1 + e)``, i.e. log1p accuracy (``d - 1`` and ``(d - 1) - e`` are
    exact in floating point).
    """
    torch.sigmoid(x, out=p)
    torch.neg(x, out=omp)
    omp.sigmoid_()
    torch.maximum(p, omp, out=d)
    torch.minimum(p, omp, out=e)
    e.div_(d)  # e = exp(-|x|)
    torch.add(e, 1.0, out=d)  # d = fl(1 + e)
    torch.log(d, out=L)
    d.sub_(1.0).sub_(e)  # the rounding error of d
    L.sub_(d)


def dense_kernel(
    x: Tensor,
    t: Tensor,
    alpha: float | None,
    gamma: float,
    w: list[Tensor],
    loss_out: Tensor | None,
    grad_out: Tensor | None,
) -> Tensor:
    """Focal loss (and its gradient) of one pass; returns the loss (``loss_out`` or a buffer).

    Six work buffers; 27 ops with a gradient (the derivation is in ``_reference``). The
    gradient is formed in a work buffer and written to ``grad_out`` once: its memory is
    usually fresh (page faults), so a second pass over it costs more than the extra buffer.
    """
    p, omp, e, d, c, u = w
    _logistic_parts(x, p, omp, e, d, c)
    # C = (max(x, 0) - t x) + L: the bracket is exactly 0 for t = 1, x > 0.
    torch.clamp(x, min=0.0, out=d)
    d.addcmul_(t, x, value=-1.0)
    c.add_(d)
    # q = p (1 - t) + (1 - p) t  (exactly 1 - p for t = 1 and p for t = 0)
    torch.lerp(p, omp, t, out=e)
    if grad_out is not None:
        # p - t = q - 2 (1 - p) t: exact for t in {0, 1}, no cancellation against 1
        torch.addcmul(e, omp, t, value=-2.0, out=u)
        e.clamp_min_(torch.finfo(e.dtype).tiny)
        # inner = g (1 - 2t) r C + (p - t),  r = p (1 - p) / q
        torch.mul(p, omp, out=d)
        d.div_(e).mul_(c)
        u.add_(d, alpha=gamma).addcmul_(d, t, value=-2.0 * gamma)
    else:
        e.clamp_min_(torch.finfo(e.dtype).tiny)
    q = _pow_(e, gamma)
    if alpha is not None:
        # a_t = (1 - alpha) + (2 alpha - 1) t
        torch.mul(t, 2.0 * alpha - 1.0, out=d)
        d.add_(1.0 - alpha)
        q.mul_(d)
    if grad_out is not None:
        torch.mul(q, u, out=grad_out)
    if loss_out is None:
        return c.mul_(q)
    return torch.mul(q, c, out=loss_out)


def negative_kernel(
    x: Tensor,
    gamma: float,
    row_factor: Tensor,
    w: list[Tensor],
    loss_out: Tensor,
    grad_out: Tensor | None,
) -> None:
    """Target-0 loss/gradient of an ``(R, K)`` pass times a per-row factor ``(R, 1)``.

    For ``t = 0``: loss ``= f p^g C0``, ``C0 = max(x, 0) + L = -log(1 - p)`` and
    gradient ``= f p^g (g (1 - p) C0 + p)``; ``f`` includes ``1 - alpha``. Six work
    buffers; 18 ops with a gradient; ``grad_out`` is written once (see :func:`dense_kernel`).
    """
    p, omp, e, d, c, u = w
    _logistic_parts(x, p, omp, e, d, c)
    torch.clamp(x, min=0.0, out=d)
    c.add_(d)  # C0 = -log(1 - p)
    if grad_out is not None:
        torch.addcmul(p, omp, c, value=gamma, out=u)
    if gamma == 0.0:
        q = e.fill_(1.0)
    elif gamma == 1.0:
        q = e.copy_(p)
    elif gamma == 2.0:
        q = torch.mul(p, p, out=e)
    else:
        q = torch.pow(p, gamma, out=e)
    q.mul_(row_factor)
    if grad_out is not None:
        torch.mul(q, u, out=grad_out)
    torch.mul(q, c, out=loss_out)


def star_kernel(
    x: Tensor,
    t: Tensor,
    gamma: float,
    beta: float,
    alpha: float | None,
    w: list[Tensor],
    loss_out: Tensor | None,
    grad_out: Tensor | None,
) -> Tensor:
    r"""FL* of one pass as the mixture ``a+ t FL*(y=+1) + a- (1 - t) FL*(y=-1)``.

    With ``z = gamma x + beta`` (y = +1) and ``z' = beta - gamma x`` (y = -1):
    ``FL*(+1) = softplus(-z) / gamma`` with ``d/dx = p*_+ - 1 = -sigma(-z)``, and
    ``FL*(-1) = softplus(-z') / gamma`` with ``d/dx = -(p*_- - 1) = sigma(-z')``.
    Seven work buffers.
    """
    p, s, e, d, L, z, acc = w
    a_pos = 1.0 if alpha is None else alpha
    a_neg = 1.0 if alpha is None else 1.0 - alpha
    for sign, weight in ((1.0, a_pos), (-1.0, a_neg)):
        torch.mul(x, sign * gamma, out=z).add_(beta)
        _logistic_parts(z, p, s, e, d, L)  # s = sigma(-z) = 1 - p*
        # -log p* = softplus(-z) = max(-z, 0) + L
        torch.clamp(z, max=0.0, out=d)
        d.neg_().add_(L)
        if sign > 0:
            torch.mul(d, t, out=acc).mul_(weight / gamma)
            if grad_out is not None:
                torch.mul(s, t, out=grad_out).mul_(-weight)
        else:
            torch.neg(t, out=L).add_(1.0)  # 1 - t
            acc.addcmul_(d, L, value=weight / gamma)
            if grad_out is not None:
                grad_out.addcmul_(s, L, value=weight)
    if loss_out is None:
        return acc
    return loss_out.copy_(acc)


# --------------------------------------------------------------------------- drivers


def run_elementwise(
    kernel: Kernel,
    inputs: Tensor,
    targets: Tensor,
    reduction: str,
    want_grad: bool,
    nbuf: int,
) -> tuple[Tensor, Tensor | None]:
    """Run ``kernel(x, t, work, loss_out, grad_out)`` over passes of :func:`pass_elements`.

    Returns the loss (``(*)`` for "none", else a scalar sum - the caller divides for
    "mean") in the compute dtype, and the gradient of the *summed* loss (flat,
    compute dtype).
    """
    cd = compute_dtype(inputs.dtype)
    dev = inputs.device
    x_all = inputs.detach().reshape(-1)
    t_all = targets.detach().reshape(-1)
    n = x_all.numel()
    chunk = pass_elements(dev.type, n)
    grad = torch.empty(n, dtype=cd, device=dev) if want_grad else None
    loss = torch.empty(n, dtype=cd, device=dev) if reduction == "none" else None
    work = _buffers(min(chunk, n), nbuf, cd, dev)
    xbuf = torch.empty(min(chunk, n), dtype=cd, device=dev) if x_all.dtype != cd else None
    tbuf = torch.empty(min(chunk, n), dtype=cd, device=dev) if t_all.dtype != cd else None
    partial = []
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        x = x_all[s : s + m] if xbuf is None else xbuf[:m].copy_(x_all[s : s + m])
        t = t_all[s : s + m] if tbuf is None else tbuf[:m].copy_(t_all[s : s + m])
        lo = loss[s : s + m] if loss is not None else None
        go = grad[s : s + m] if grad is not None else None
        out = kernel(x, t, [b[:m] for b in work], lo, go)
        if loss is None:
            partial.append(out.sum())
    if loss is not None:
        return loss.view(inputs.shape), grad
    total = torch.stack(partial).sum() if partial else torch.zeros((), dtype=cd, device=dev)
    return total, grad


def run_labels(
    inputs: Tensor,
    labels: Tensor,
    factor: Tensor,
    alpha: float | None,
    gamma: float,
    reduction: str,
    want_grad: bool,
) -> tuple[Tensor, Tensor | None]:
    """Focal loss of ``(..., K)`` logits against class indices, without a one-hot target.

    Every entry is first computed as a negative (target 0) by :func:`negative_kernel`
    over row passes; then the one foreground entry of each foreground row (label >= 0)
    is replaced by its target-1 value, once for the whole tensor (a gather and a
    scatter of one value per row, no per-pass small ops). ``factor`` ``(A,)`` is the
    per-row factor (0 for ignored rows, times the weights). Returns the loss
    (``(..., K)`` for "none", else the sum) and the flat gradient of the summed loss.
    """
    cd = compute_dtype(inputs.dtype)
    dev = inputs.device
    K = inputs.shape[-1]
    x_all = inputs.detach().reshape(-1, K)
    A = x_all.shape[0]
    grad = torch.empty(A, K, dtype=cd, device=dev) if want_grad else None
    loss = torch.empty(A, K, dtype=cd, device=dev) if reduction == "none" else None
    if A == 0:
        flat = grad.view(-1) if grad is not None else None
        return (loss.view(inputs.shape) if loss is not None else torch.zeros((), dtype=cd, device=dev)), flat
    lab = labels.reshape(-1)
    fg = (lab >= 0).unsqueeze(1)  # (A, 1)
    idx = lab.clamp(min=0).unsqueeze(1)  # (A, 1): the foreground column (0 elsewhere)
    neg_factor = factor if alpha is None else factor * (1.0 - alpha)
    neg_factor = neg_factor.unsqueeze(1)
    rows = max(1, pass_elements(dev.type, A * K) // K)
    rows = min(rows, A)
    work = [b.view(rows, K) for b in _buffers(rows * K, 6, cd, dev)]
    xbuf = torch.empty(rows, K, dtype=cd, device=dev) if x_all.dtype != cd else None
    lbuf = None if loss is not None else torch.empty(rows, K, dtype=cd, device=dev)
    partial = []
    for s in range(0, A, rows):
        m = min(rows, A - s)
        x = x_all[s : s + m] if xbuf is None else xbuf[:m].copy_(x_all[s : s + m])
        lo = loss[s : s + m] if loss is not None else lbuf[:m]  # type: ignore[index]
        go = grad[s : s + m] if grad is not None else None
        negative_kernel(x, gamma, neg_factor[s : s + m], [b[:m] for b in work], lo, go)
        if loss is None:
            # Leave the foreground entries out of this pass's sum (added below).
            i, f = idx[s : s + m], fg[s : s + m]
            lo.scatter_(1, i, lo.gather(1, i).masked_fill_(f, 0.0))
            partial.append(lo.sum())
    # Foreground entries: their target-1 value, computed once for all rows.
    pos_factor = (factor * fg.squeeze(1).to(cd)).unsqueeze(1)
    pl, pg = positive_terms(x_all.gather(1, idx).to(cd), alpha, gamma)
    if grad is not None:
        grad.scatter_(1, idx, torch.where(fg, pg * pos_factor, grad.gather(1, idx)))
    flat = grad.view(-1) if grad is not None else None
    if loss is not None:
        loss.scatter_(1, idx, torch.where(fg, pl * pos_factor, loss.gather(1, idx)))
        return loss.view(inputs.shape), flat
    return torch.stack(partial).sum() + (pl * pos_factor).sum(), flat
