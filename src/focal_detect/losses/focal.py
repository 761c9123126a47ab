r"""The focal-loss family of RetinaNet (Lin et al. 2017, arXiv:1708.02002): public API.

* :func:`sigmoid_focal_loss` - dense targets shaped like the logits, a drop-in for
  ``torchvision.ops.sigmoid_focal_loss``;
* :func:`sigmoid_focal_loss_from_labels` - class-index labels (with ``BACKGROUND`` and
  ``IGNORE`` codes), what a detector has after anchor assignment, no one-hot target;
* :func:`sigmoid_focal_loss_star` - FL*, the variant of the paper's Appendix A;
* :class:`SigmoidFocalLoss` - the module form, taking either target form;
* :func:`compiled_sigmoid_focal_loss` - the dense loss under :func:`torch.compile`.

The eager functions have an analytic backward: the gradient is computed during the
forward pass by the fused kernels of ``focal_detect.losses._fused``, from the closed
forms written down (with their numerics) in ``focal_detect.losses._reference``. Half
precision inputs are computed in float32 and returned in the input dtype (float32 under
:func:`torch.autocast`, like PyTorch's own losses); loss and gradient are finite for
any finite logit (tested up to :math:`|x| = 10^4`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from focal_detect._checks import (
    check_choice,
    check_float_tensor,
    check_number,
    check_same_device,
    check_same_shape,
    check_tensor,
)
from focal_detect.constants import BACKGROUND, IGNORE
from focal_detect.losses import _fused
from focal_detect.losses._autograd import attach_saved_grad, wants_grad, weak_recompute
from focal_detect.losses._reference import (
    REDUCTIONS,
    FocalRecomputeFn,
    compute_dtype,
    focal_formula,
    no_autocast,
    reduce,
    result_dtype,
    star_formula,
)

__all__ = [
    "sigmoid_focal_loss",
    "compiled_sigmoid_focal_loss",
    "sigmoid_focal_loss_from_labels",
    "sigmoid_focal_loss_star",
    "SigmoidFocalLoss",
]

#: Largest usable exponent: the kernels compute in float32 (half and float32 inputs),
#: where a larger gamma (or gamma * x in FL*) is infinite.
MAX_GAMMA = float(torch.finfo(torch.float32).max)


# --------------------------------------------------------------------------- checks


def _check_alpha(fn: str, alpha: object) -> float | None:
    """``None`` or any negative number disables alpha (torchvision uses -1)."""
    if alpha is None:
        return None
    a = check_number(fn, "alpha", alpha, high=1.0)
    return None if a < 0 else a


def _check_gamma(fn: str, gamma: object, low_open: bool = False) -> float:
    g = check_number(fn, "gamma", gamma, low=0.0, low_open=low_open)
    if math.isinf(g) or g > MAX_GAMMA:
        raise ValueError(f"{fn}: gamma must be finite and <= {MAX_GAMMA:.4g} (float32 max), got {gamma!r}")
    return g


def _check_dense_args(fn: str, inputs: Tensor, targets: Tensor, reduction: str) -> None:
    check_float_tensor(fn, "inputs", inputs)
    check_tensor(fn, "targets", targets)
    check_same_shape(fn, "inputs", inputs, "targets", targets)
    check_same_device(fn, inputs=inputs, targets=targets)
    check_choice(fn, "reduction", reduction, REDUCTIONS)


def _check_targets_range(fn: str, targets: Tensor) -> None:
    """Raise ``ValueError`` unless every target lies in ``[0, 1]`` (NaN fails too).

    One min/max reduction over ``targets`` (no full-size temporary) and one host
    synchronisation to read the two numbers back.
    """
    if targets.numel() == 0 or targets.dtype == torch.bool or targets.is_complex() or targets.is_meta:
        return  # a meta tensor has no values to check
    lo, hi = torch.stack(torch.aminmax(targets.detach().reshape(-1))).tolist()
    if not (lo >= 0 and hi <= 1):  # also catches NaN
        bad = lo if not lo >= 0 else hi
        hint = " (for the paper's y in {-1, +1} pass (y + 1) / 2)" if lo < 0 else ""
        raise ValueError(f"{fn}: targets must be in [0, 1]{hint}, got {bad!r}")


def _check_labels(fn: str, inputs: Tensor, labels: Tensor, weights: Tensor | None) -> Tensor:
    """Check the class-index form's labels and weights; return the labels."""
    lab = check_tensor(fn, "labels", labels)
    if lab.is_floating_point() or lab.is_complex() or lab.dtype == torch.bool:
        raise TypeError(f"{fn}: labels must be an integer tensor, got dtype {lab.dtype}")
    if inputs.ndim < 1:
        raise ValueError(f"{fn}: inputs must have shape (..., K), got {tuple(inputs.shape)}")
    if lab.shape != inputs.shape[:-1]:
        raise ValueError(
            f"{fn}: labels must have shape inputs.shape[:-1] = {tuple(inputs.shape[:-1])}, "
            f"got {tuple(lab.shape)}"
        )
    if weights is not None:
        check_float_tensor(fn, "weights", weights)
        if weights.shape != lab.shape:
            raise ValueError(
                f"{fn}: weights must have the shape of labels {tuple(lab.shape)}, got {tuple(weights.shape)}"
            )
    named = {"inputs": inputs, "labels": lab} | ({} if weights is None else {"weights": weights})
    check_same_device(fn, **named)
    K = inputs.shape[-1]
    if lab.numel():
        lo, hi = torch.aminmax(lab)
        lo_v, hi_v = int(lo), int(hi)  # one synchronisation
        if lo_v < IGNORE or hi_v >= K:
            bad = lo_v if lo_v < IGNORE else hi_v
            raise ValueError(
                f"{fn}: labels must be in [0, {K - 1}] or BACKGROUND ({BACKGROUND}) or "
                f"IGNORE ({IGNORE}), got {bad}"
            )
    return lab


# --------------------------------------------------------------------------- dense


def sigmoid_focal_loss(
    inputs: Tensor,
    targets: Tensor,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
    *,
    check_targets: bool = True,
) -> Tensor:
    r"""Sigmoid focal loss (Lin et al. 2017, eq. 5), drop-in for torchvision's.

    .. math::
        \mathrm{FL} = \alpha_t\,(1 - p_t)^\gamma\,\mathrm{CE}, \quad
        \mathrm{CE} = -t \log p - (1 - t)\log(1 - p),

    with :math:`p = \sigma(x)`, :math:`p_t = p\,t + (1 - p)(1 - t)` and
    :math:`\alpha_t = \alpha t + (1 - \alpha)(1 - t)`, exactly
    ``torchvision.ops.sigmoid_focal_loss`` (same signature, defaults and values, soft
    targets included). For :math:`t \in \{0, 1\}` it is the paper's eq. (5).

    The backward pass is analytic (see the derivation in the module source):

    .. math::
        \frac{\partial \mathrm{FL}}{\partial x} = \alpha_t (1 - p_t)^\gamma
        \Bigl[\gamma (1 - 2t)\,\frac{p(1 - p)}{1 - p_t}\,\mathrm{CE} + p - t\Bigr],

    which for :math:`t = 1` is :math:`\alpha (1-p)^\gamma(\gamma p \log p + p - 1)`,
    the paper's eq. (10) times :math:`\alpha_t`. It is evaluated during the forward
    pass (in cache-sized chunks on CPU, in one whole-tensor pass on accelerators); only
    the gradient is kept (one tensor the size of
    ``inputs``; the backward pass scales it in place unless the graph is retained).
    A second derivative works: backward with ``create_graph=True`` recomputes the
    gradient through the plain autograd formula of the same loss (it needs ``inputs``
    and ``targets`` still referenced at backward time; only weak references are kept,
    so the first-order path holds no extra memory). No gradient flows to
    ``targets`` unless they require one (then a plain autograd formula is used).

    Shape:
        inputs: ``(*)``, any shape.
        targets: ``(*)``, as ``inputs``.
        output: ``(*)`` for ``reduction="none"``, else ``()``.

    Args:
        inputs: Logits :math:`x`, any shape ``(*)``, floating point.
        targets: Same shape; 1 positive, 0 negative, or soft targets in ``[0, 1]``.
        alpha: Weight of positives in ``[0, 1]``; ``None`` or any negative number (as
            torchvision's ``-1``) disables the weighting (:math:`\alpha_t = 1`).
        gamma: Focusing exponent :math:`\gamma \ge 0`; ``0`` gives (weighted) BCE.
        reduction: ``"none"``, ``"mean"`` (over all elements) or ``"sum"``.
        check_targets: Check that every target lies in ``[0, 1]`` (default). The
            check is one min/max reduction over ``targets`` (no temporary of their
            size) and, on an accelerator, one host synchronisation per call; pass
            ``False`` when the targets are in range by construction (a one-hot
            encoding) to skip it. Out-of-range targets give a meaningless (possibly
            negative) loss.

    Returns:
        Shape ``(*)`` for ``"none"``, else a scalar; dtype of ``inputs`` (float32 for
        half inputs under :func:`torch.autocast`).

    Raises:
        TypeError: ``inputs``/``targets`` not tensors, or ``inputs`` not floating point.
        ValueError: Shape mismatch, ``alpha > 1``, ``gamma < 0``, unknown ``reduction``,
            or (with ``check_targets``) a target outside ``[0, 1]`` or NaN, e.g. the
            paper's :math:`y \in \{-1, +1\}` (pass ``(y + 1) / 2``).

    Example:
        >>> sigmoid_focal_loss(torch.zeros(2), torch.tensor([1.0, 0.0]))
        tensor([0.0433, 0.1300])
        >>> x = torch.tensor([0.0, 3.0], requires_grad=True)
        >>> sigmoid_focal_loss(x, torch.tensor([1.0, 0.0]), reduction="sum").backward()
        >>> x.grad  # eq. (10) x alpha_t
        tensor([-0.0746,  0.8451])
    """
    fn = "sigmoid_focal_loss"
    _check_dense_args(fn, inputs, targets, reduction)
    a = _check_alpha(fn, alpha)
    g = _check_gamma(fn, gamma)
    if check_targets and not torch.compiler.is_compiling():
        _check_targets_range(fn, targets)
    cd = compute_dtype(inputs.dtype)
    rd = result_dtype(inputs)
    if torch.compiler.is_compiling() or (targets.requires_grad and torch.is_grad_enabled()):
        x, t = inputs.to(cd), targets.to(cd)
        if targets.requires_grad:
            loss = focal_formula(x, t, a, g)
        else:
            loss = FocalRecomputeFn.apply(x, t, a, g)
        return reduce(loss, reduction).to(rd)

    def formula(x: Tensor, t: Tensor) -> Tensor:
        return reduce(focal_formula(x.to(cd), t.to(cd), a, g), reduction).to(rd)

    def kernel(x: Tensor, t: Tensor, w: list[Tensor], lo: Tensor | None, go: Tensor | None) -> Tensor:
        return _fused.dense_kernel(x, t, a, g, w, lo, go)

    with no_autocast(inputs.device):
        loss, grad = _fused.run_elementwise(kernel, inputs, targets, reduction, wants_grad(inputs), nbuf=6)
        recompute = weak_recompute(formula, targets)
        return attach_saved_grad(inputs, loss, grad, reduction, inputs.numel(), rd, recompute)


_COMPILED: dict[str, Callable[..., Tensor]] = {}


def compiled_sigmoid_focal_loss(
    inputs: Tensor,
    targets: Tensor,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
    *,
    check_targets: bool = True,
) -> Tensor:
    r"""The fast route: :func:`torch.compile` of :func:`sigmoid_focal_loss` (opt-in).

    Same arguments, values and gradient; use it for repeated calls of one shape (a
    training loop) when the compile time (10-60 s on CPU) pays off. Under :func:`torch.compile` the loss is the
    plain closed-form expression and the backward recomputes the closed-form gradient
    from the saved logits and targets (no extra memory), so inductor fuses each pass
    into one kernel: on the project's 2-core CPU machine it needed about half the CPU
    time of the eager chunked path (which needs ~7-10x less than torchvision with
    glibc's default allocator settings). The first call compiles (10-60 s on CPU);
    each new ``alpha``/``gamma``/``reduction``, dtype or shape recompiles. Use the
    eager function for one-off calls.

    Shape:
        inputs: ``(*)``, any shape.
        targets: ``(*)``, as ``inputs``.
        output: ``(*)`` for ``reduction="none"``, else ``()``.

    Args:
        inputs: Logits ``(*)``.
        targets: Same shape, in ``[0, 1]``.
        alpha: As in :func:`sigmoid_focal_loss`.
        gamma: As in :func:`sigmoid_focal_loss`.
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.
        check_targets: As in :func:`sigmoid_focal_loss` (checked eagerly, before the
            compiled call, so it causes no graph break).

    Returns:
        As :func:`sigmoid_focal_loss`.

    Raises:
        TypeError: As :func:`sigmoid_focal_loss`.
        ValueError: As :func:`sigmoid_focal_loss`.

    Example:
        >>> x = torch.zeros(2)
        >>> compiled_sigmoid_focal_loss(x, torch.tensor([1.0, 0.0]))  # doctest: +SKIP
        tensor([0.0433, 0.1300])
    """
    if check_targets and isinstance(targets, Tensor):
        _check_targets_range("compiled_sigmoid_focal_loss", targets)
    fn = _COMPILED.get("dense")
    if fn is None:
        fn = _COMPILED["dense"] = torch.compile(sigmoid_focal_loss, dynamic=False)
    return fn(inputs, targets, alpha, gamma, reduction, check_targets=False)


# --------------------------------------------------------------------------- class indices


def sigmoid_focal_loss_from_labels(
    inputs: Tensor,
    labels: Tensor,
    weights: Tensor | None = None,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
    reduction: str = "none",
) -> Tensor:
    r"""Focal loss from class-index labels, without a dense one-hot target.

    Equal (loss and gradient) to :func:`sigmoid_focal_loss` on the one-hot target
    ``t[..., k] = (labels == k)``, times a per-anchor factor
    :math:`w_a \cdot [\mathrm{labels}_a \ne \mathrm{IGNORE}]`:

    .. math::
        \ell_{a,k} = w_a\,[\ell_a \ne \mathrm{IGNORE}]\;\mathrm{FL}(x_{a,k}, [\ell_a = k]).

    Shape:
        inputs: ``(..., K)``, e.g. ``(B, N, K)``.
        labels: ``(...)``, e.g. ``(B, N)``.
        weights: ``(...)``, as ``labels``.
        output: ``(..., K)`` for ``reduction="none"``, else ``()``.

    Args:
        inputs: Logits ``(..., K)``, e.g. ``(B, N, K)``.
        labels: Integer ``(...)`` = ``inputs.shape[:-1]``: a class ``0 .. K-1`` for a
            foreground anchor, ``BACKGROUND`` (-1) for an anchor with all-zero target,
            ``IGNORE`` (-2) for an anchor left out of the loss.
        weights: Optional per-anchor float factors ``(...)``; default 1.
        alpha: As in :func:`sigmoid_focal_loss` (``None``/negative disables).
        gamma: Focusing exponent ``>= 0``.
        reduction: ``"none"``: ``(..., K)`` with zeros in the rows of ignored anchors;
            ``"sum"``: the sum (what a detector uses, then divides by the number of
            foreground anchors, see :class:`FocalLossNormalizer`); ``"mean"``: the sum
            divided by ``K`` times the number of non-ignored anchors (weights do not
            change the divisor; 0 if every anchor is ignored).

    Returns:
        ``(..., K)`` for ``"none"``, else a scalar.

    Raises:
        TypeError: Wrong types (``labels`` must be an integer tensor).
        ValueError: Shapes, ``alpha``/``gamma``/``reduction`` out of range, or labels
            ``>= K`` or ``< IGNORE``. The label range check reads one min/max from the
            device (one synchronisation per call).

    Example:
        >>> x = torch.zeros(2, 3)
        >>> sigmoid_focal_loss_from_labels(x, torch.tensor([1, IGNORE]))
        tensor([[0.1300, 0.0433, 0.1300],
                [0.0000, 0.0000, 0.0000]])
        >>> sigmoid_focal_loss_from_labels(x, torch.tensor([1, BACKGROUND]), reduction="sum")
        tensor(0.6931)
    """
    fn = "sigmoid_focal_loss_from_labels"
    check_float_tensor(fn, "inputs", inputs)
    labels = _check_labels(fn, inputs, labels, weights)
    a = _check_alpha(fn, alpha)
    g = _check_gamma(fn, gamma)
    check_choice(fn, "reduction", reduction, REDUCTIONS)
    cd = compute_dtype(inputs.dtype)
    rd = result_dtype(inputs)
    K = inputs.shape[-1]
    if K == 0:
        # No classes: every per-class term is absent; the loss is empty (or 0), with a
        # (zero) gradient path to inputs.
        z = inputs.to(cd) * 0.0
        return (z if reduction == "none" else z.sum()).to(rd)
    if labels.dtype != torch.int64:
        labels = labels.long()  # uint8/int8/int16/int32 labels (gather needs int64)
    if torch.compiler.is_compiling() or (
        weights is not None and weights.requires_grad and torch.is_grad_enabled()
    ):
        return _labels_formula(inputs, labels, weights, a, g, reduction, grad_to_weights=True).to(rd)

    def formula(x: Tensor, lab: Tensor, w: Tensor | None) -> Tensor:
        return _labels_formula(x, lab, w, a, g, reduction, grad_to_weights=False).to(rd)

    keep = labels != IGNORE
    factor = keep.reshape(-1).to(cd)
    if weights is not None:
        factor = factor * weights.detach().reshape(-1).to(cd)
    with no_autocast(inputs.device):
        loss, grad = _fused.run_labels(inputs, labels, factor, a, g, reduction, wants_grad(inputs))
        recompute = weak_recompute(formula, labels, weights)
        return attach_saved_grad(inputs, loss, grad, reduction, keep.sum() * K, rd, recompute)


def _labels_formula(
    inputs: Tensor,
    labels: Tensor,
    weights: Tensor | None,
    alpha: float | None,
    gamma: float,
    reduction: str,
    grad_to_weights: bool,
) -> Tensor:
    """The class-index loss by the reference formula on the one-hot target.

    ``grad_to_weights``: let the gradient flow to ``weights`` (and recompute the
    closed-form gradient in backward where the formula has no graph to keep).
    """
    cd = compute_dtype(inputs.dtype)
    K = inputs.shape[-1]
    keep = labels != IGNORE
    x = inputs.to(cd)
    t = (labels.unsqueeze(-1) == torch.arange(K, device=labels.device)).to(cd)
    f = keep.to(cd)
    if weights is not None:
        f = f * (weights.to(cd) if grad_to_weights else weights.detach().to(cd))
    if grad_to_weights and not (weights is not None and weights.requires_grad):
        per_class = FocalRecomputeFn.apply(x, t, alpha, gamma)
    else:
        per_class = focal_formula(x, t, alpha, gamma)
    loss = per_class * f.unsqueeze(-1)
    if reduction == "mean":
        return loss.sum() / (keep.sum() * K).clamp(min=1).to(cd)
    return reduce(loss, reduction)


# --------------------------------------------------------------------------- FL*


def sigmoid_focal_loss_star(
    inputs: Tensor,
    targets: Tensor,
    gamma: float = 4.0,
    beta: float = 0.0,
    alpha: float | None = None,
    reduction: str = "none",
    *,
    check_targets: bool = True,
) -> Tensor:
    r"""FL*, the focal-loss variant of the paper's Appendix A.

    With :math:`y = 2t - 1 \in \{-1, +1\}`, :math:`x_t = y\,x` and
    :math:`p^*_t = \sigma(\gamma x_t + \beta)`:

    .. math::
        \mathrm{FL}^* = -\frac{\log p^*_t}{\gamma}, \qquad
        \frac{\partial \mathrm{FL}^*}{\partial x} = y\,(p^*_t - 1) \quad \text{(eq. 11)}.

    (From :math:`-\tfrac{1}{\gamma}\,\tfrac{d}{dx}\log\sigma(\gamma y x + \beta)
    = -\tfrac{1}{\gamma}(1 - p^*_t)\,\gamma y`.) The gradient is analytic, computed in
    the forward pass like :func:`sigmoid_focal_loss`. Soft targets
    :math:`t \in [0, 1]` give the mixture
    :math:`t\,\mathrm{FL}^*(y{=}1) + (1 - t)\,\mathrm{FL}^*(y{=}{-1})`; an optional
    ``alpha`` weights the two terms by :math:`\alpha` and :math:`1 - \alpha`.

    Defaults :math:`\gamma = 4, \beta = 0`: one of the two settings the paper plots in
    Figure 5 and trains with in Appendix A (the other is :math:`\gamma = 2, \beta = 1`;
    both reach nearly FL's AP). With :math:`\beta = 0` the loss is unshifted, so
    :math:`p^*_t = 1/2` exactly where :math:`p_t = 1/2`, and it is a CE on logits
    scaled by :math:`\gamma`, divided by :math:`\gamma`.

    Shape:
        inputs: ``(*)``, any shape.
        targets: ``(*)``, as ``inputs``.
        output: ``(*)`` for ``reduction="none"``, else ``()``.

    Args:
        inputs: Logits ``(*)``.
        targets: Same shape; 1 positive, 0 negative (soft values allowed).
        gamma: Steepness :math:`\gamma > 0`.
        beta: Shift :math:`\beta` (any finite number).
        alpha: Optional weight of positives in ``[0, 1]``; ``None`` (default, as in
            the paper's FL*) or negative disables it.
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.
        check_targets: Check that every target lies in ``[0, 1]`` (default): one
            min/max reduction and, on an accelerator, one host synchronisation, as in
            :func:`sigmoid_focal_loss`; ``False`` skips it.

    Returns:
        Shape ``(*)`` for ``"none"``, else a scalar.

    Raises:
        TypeError: Non-tensor or non-float ``inputs``.
        ValueError: Shape mismatch, ``gamma <= 0``, non-finite ``beta``, ``alpha > 1``,
            unknown ``reduction``, or (with ``check_targets``) a target outside
            ``[0, 1]`` or NaN (for :math:`y \in \{-1, +1\}` pass ``(y + 1) / 2``).

    Example:
        >>> sigmoid_focal_loss_star(torch.zeros(2), torch.tensor([1.0, 0.0]))
        tensor([0.1733, 0.1733])
        >>> sigmoid_focal_loss_star(torch.zeros(1), torch.ones(1), gamma=2.0, beta=1.0)
        tensor([0.1566])
    """
    fn = "sigmoid_focal_loss_star"
    _check_dense_args(fn, inputs, targets, reduction)
    gm = _check_gamma(fn, gamma, low_open=True)
    b = check_number(fn, "beta", beta)
    if math.isinf(b):
        raise ValueError(f"{fn}: beta must be finite, got {beta!r}")
    a = _check_alpha(fn, alpha)
    if check_targets and not torch.compiler.is_compiling():
        _check_targets_range(fn, targets)
    cd = compute_dtype(inputs.dtype)
    rd = result_dtype(inputs)

    def formula(x: Tensor, t: Tensor) -> Tensor:
        return star_formula(x.to(cd), t.to(cd), gm, b, a, reduction).to(rd)

    if targets.requires_grad and torch.is_grad_enabled() or torch.compiler.is_compiling():
        return formula(inputs, targets)

    def kernel(x: Tensor, t: Tensor, w: list[Tensor], lo: Tensor | None, go: Tensor | None) -> Tensor:
        return _fused.star_kernel(x, t, gm, b, a, w, lo, go)

    with no_autocast(inputs.device):
        loss, grad = _fused.run_elementwise(kernel, inputs, targets, reduction, wants_grad(inputs), nbuf=7)
        recompute = weak_recompute(formula, targets)
        return attach_saved_grad(inputs, loss, grad, reduction, inputs.numel(), rd, recompute)


# --------------------------------------------------------------------------- module


class SigmoidFocalLoss(nn.Module):
    r"""Module form of the focal loss; takes either target form.

    Stores ``alpha``, ``gamma`` and ``reduction`` and dispatches on the shape of
    ``targets``:

    * ``targets.shape == inputs.shape``: dense targets in ``[0, 1]`` (float; bool or
      integer 0/1 are accepted too), computed by :func:`sigmoid_focal_loss`;
      ``"mean"`` averages over all elements;
    * ``targets.shape == inputs.shape[:-1]`` with an integer dtype: class indices
      ``0 .. K-1``, ``BACKGROUND`` (-1) or ``IGNORE`` (-2), computed by
      :func:`sigmoid_focal_loss_from_labels` (no one-hot target is built); ``"mean"``
      divides by ``K`` times the number of non-ignored anchors.

    Anything else raises an error naming ``targets``.

    Shape:
        inputs: ``(..., K)``, e.g. ``(B, N, K)``.
        targets: ``(..., K)`` (dense) or ``(...)`` (class indices).
        weights: ``(...)``, as class-index ``targets``.
        output: ``(..., K)`` for ``reduction="none"``, else ``()``.

    Args:
        alpha: Weight of positives in ``[0, 1]``; ``None`` or negative disables it.
        gamma: Focusing exponent ``>= 0``.
        reduction: ``"none"``, ``"mean"`` or ``"sum"``.

    Raises:
        TypeError: ``targets`` shaped like ``inputs.shape[:-1]`` but not an integer
            tensor, or arguments of the wrong type.
        ValueError: ``targets`` of any other shape; ``weights`` with dense targets;
            ``alpha``, ``gamma`` or ``reduction`` out of range.

    Example:
        >>> loss = SigmoidFocalLoss(reduction="sum")
        >>> loss(torch.zeros(2), torch.tensor([1.0, 0.0]))
        tensor(0.1733)
        >>> loss(torch.zeros(2, 3), torch.tensor([1, BACKGROUND]))  # class indices
        tensor(0.6931)
    """

    def __init__(self, alpha: float | None = 0.25, gamma: float = 2.0, reduction: str = "none"):
        super().__init__()
        fn = "SigmoidFocalLoss"
        _check_alpha(fn, alpha)
        _check_gamma(fn, gamma)
        check_choice(fn, "reduction", reduction, REDUCTIONS)
        self.alpha = alpha
        self.gamma = float(gamma)
        self.reduction = reduction

    def forward(self, inputs: Tensor, targets: Tensor, weights: Tensor | None = None) -> Tensor:
        """Focal loss of ``inputs`` against dense or class-index ``targets``.

        Shape:
            inputs: ``(..., K)``.
            targets: ``(..., K)`` or ``(...)``.
            weights: ``(...)``, class-index targets only (per-anchor factors).
            output: ``(..., K)`` for ``reduction="none"``, else ``()``.
        """
        fn = "SigmoidFocalLoss"
        check_float_tensor(fn, "inputs", inputs)
        check_tensor(fn, "targets", targets)
        if targets.shape == inputs.shape:
            if weights is not None:
                raise ValueError(f"{fn}: weights must be None for dense targets (class-index targets only)")
            return sigmoid_focal_loss(inputs, targets, self.alpha, self.gamma, self.reduction)
        if inputs.ndim >= 1 and targets.shape == inputs.shape[:-1]:
            if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
                raise TypeError(
                    f"{fn}: targets of shape inputs.shape[:-1] are class indices and must be an "
                    f"integer tensor, got dtype {targets.dtype}"
                )
            return sigmoid_focal_loss_from_labels(
                inputs, targets, weights, self.alpha, self.gamma, self.reduction
            )
        raise ValueError(
            f"{fn}: targets must have the shape of inputs {tuple(inputs.shape)} (dense targets) or "
            f"inputs.shape[:-1] = {tuple(inputs.shape[:-1])} (class indices), got {tuple(targets.shape)}"
        )

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}, reduction={self.reduction!r}"
