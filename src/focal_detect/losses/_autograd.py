"""Autograd plumbing of the fused losses: a forward that returns a precomputed loss and
a backward that scales the gradient computed during the forward pass.

Only that gradient is kept (one tensor the size of the logits; no chain of autograd
intermediates). The logits and targets are held by weak references only, for a second
derivative (``create_graph=True``), which recomputes through the reference formula.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch import Tensor

#: ``x -> the same loss by a differentiable formula`` (``None`` if a tensor it needs
#: was freed).
Recompute = Callable[[Tensor], "Tensor | None"]


def wants_grad(inputs: Tensor) -> bool:
    return torch.is_grad_enabled() and inputs.requires_grad


def _keep_graph() -> bool:
    """Whether the running backward keeps the graph (then saved tensors must survive)."""
    try:
        return bool(torch._C._autograd._get_current_graph_task_keep_graph())
    except Exception:  # pragma: no cover - private API missing: be safe
        return True


class _SavedGradFn(torch.autograd.Function):
    """Forward returns a precomputed loss; backward scales the precomputed gradient.

    ``grad`` is the gradient of the *summed* loss (flat, compute dtype); ``scale`` is an
    extra factor for the "mean" reduction (Python number or 0-d tensor).
    """

    @staticmethod
    def forward(
        ctx,
        inputs: Tensor,
        loss: Tensor,
        grad: Tensor,
        scale: Tensor | float,
        none: bool,
        recompute: Recompute | None,
    ) -> Tensor:
        ctx.grad = grad
        ctx.scale = scale
        ctx.none = none
        ctx.in_shape = inputs.shape
        ctx.in_dtype = inputs.dtype
        # Weak references only: saving the logits (and targets) would keep tensors the
        # size of the logits alive until backward. A second derivative needs them.
        ctx.x_ref = weakref.ref(inputs)
        ctx.recompute = recompute
        return loss

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor, None, None, None, None, None]:
        if torch.is_grad_enabled():
            # create_graph=True: the gradient must itself be differentiable. Recompute
            # it through the plain autograd formula of the same loss.
            x = ctx.x_ref()
            again = None if x is None or ctx.recompute is None else ctx.recompute(x)
            if again is None:
                raise RuntimeError(
                    "focal_detect: backward with create_graph=True needs the logits and "
                    "targets of the focal loss alive at backward time; keep a reference "
                    "to them"
                )
            (gx,) = torch.autograd.grad(again, x, grad_output, create_graph=True)
            return gx, None, None, None, None, None
        g = ctx.grad
        if g is None:
            raise RuntimeError(
                "focal_detect: the saved gradient of this loss was already used by a "
                "backward pass that did not keep the graph"
            )
        keep = _keep_graph()
        if not keep:
            ctx.grad = None  # release it; the result reuses its memory
        factor: Tensor | float
        if ctx.none:
            factor = grad_output.reshape(-1)
        else:
            scaled = grad_output * ctx.scale
            # On CPU there is no device to wait for: a Python number multiplies faster.
            factor = float(scaled) if scaled.device.type == "cpu" else scaled
        if isinstance(factor, float) and factor == 1.0:
            g = g.clone() if keep else g
        elif keep:
            g = g * factor
        else:
            g = g.mul_(factor)
        return g.to(ctx.in_dtype).view(ctx.in_shape), None, None, None, None, None


def weak_recompute(formula: Callable[..., Tensor], *tensors: Tensor | None) -> Recompute:
    """``x -> formula(x, *tensors)`` holding only weak references to ``tensors``."""
    refs = [None if t is None else weakref.ref(t) for t in tensors]

    def recompute(x: Tensor) -> Tensor | None:
        args = []
        for r in refs:
            v = None if r is None else r()
            if r is not None and v is None:
                return None
            args.append(v)
        with torch.enable_grad():
            return formula(x, *args)

    return recompute


def attach_saved_grad(
    inputs: Tensor,
    loss: Tensor,
    grad: Tensor | None,
    reduction: str,
    count: Tensor | int,
    result_dtype: torch.dtype,
    recompute: Recompute | None = None,
) -> Tensor:
    """Apply "mean", cast, attach the saved gradient (``recompute(x)``: the same loss
    by a differentiable formula, for double backward)."""
    scale: Tensor | float = 1.0
    if reduction == "mean":
        if isinstance(count, Tensor):
            scale = 1.0 / count.clamp(min=1).to(loss.dtype)
        else:
            scale = 1.0 / max(count, 1)
        loss = loss * scale
    loss = loss.to(result_dtype)
    if grad is None:
        return loss
    out: Tensor = _SavedGradFn.apply(inputs, loss, grad, scale, reduction == "none", recompute)
    return out
