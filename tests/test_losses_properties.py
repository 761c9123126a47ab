"""Hypothesis properties of the focal losses over shapes, dtypes and values."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from focal_detect.constants import IGNORE
from focal_detect.losses import (
    sigmoid_focal_loss,
    sigmoid_focal_loss_from_labels,
    sigmoid_focal_loss_star,
)

shapes = st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=3).map(tuple)
scales = st.sampled_from([0.1, 1.0, 5.0, 30.0, 1e4])
alphas = st.sampled_from([0.25, 0.0, 1.0, 0.5, None, -1.0])
gammas = st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.7])
seeds = st.integers(min_value=0, max_value=2**16)


def draw_xt(shape, scale, seed, soft):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * scale
    t = torch.rand(shape, generator=g)
    if not soft:
        t = (t < 0.3).float()
    return x, t


@given(shape=shapes, scale=scales, seed=seeds, soft=st.booleans(), alpha=alphas, gamma=gammas)
def test_focal_bounded_by_alpha_t_ce_and_non_negative(shape, scale, seed, soft, alpha, gamma) -> None:
    x, t = draw_xt(shape, scale, seed, soft)
    xx = x.clone().requires_grad_(True)
    fl = sigmoid_focal_loss(xx, t, alpha, gamma)
    fl.sum().backward()
    ce = F.binary_cross_entropy_with_logits(x.double(), t.double(), reduction="none")
    a_t = 1.0 if alpha is None or alpha < 0 else alpha * t + (1 - alpha) * (1 - t)
    assert (fl >= 0).all()
    assert (fl.double() <= a_t * ce * (1 + 1e-5) + 1e-12).all()
    assert torch.isfinite(fl).all() and torch.isfinite(xx.grad).all()


@given(shape=shapes, scale=scales, seed=seeds, soft=st.booleans(), alpha=alphas, gamma=gammas)
def test_reductions_consistent(shape, scale, seed, soft, alpha, gamma) -> None:
    x, t = draw_xt(shape, scale, seed, soft)
    none = sigmoid_focal_loss(x, t, alpha, gamma)
    s = sigmoid_focal_loss(x, t, alpha, gamma, "sum")
    m = sigmoid_focal_loss(x, t, alpha, gamma, "mean")
    torch.testing.assert_close(s, none.sum(), rtol=1e-5, atol=1e-6)
    if none.numel():
        torch.testing.assert_close(m, none.mean(), rtol=1e-5, atol=1e-6)


@given(
    b=st.integers(1, 3),
    n=st.integers(0, 40),
    k=st.integers(1, 9),
    scale=scales,
    seed=seeds,
    alpha=alphas,
    gamma=gammas,
    weighted=st.booleans(),
    reduction=st.sampled_from(["none", "sum", "mean"]),
)
def test_labels_path_equals_dense_path(b, n, k, scale, seed, alpha, gamma, weighted, reduction) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, k, generator=g) * scale
    labels = torch.randint(-2, k, (b, n), generator=g)
    w = torch.rand(b, n, generator=g) if weighted else None
    keep = (labels != IGNORE).float() * (w if w is not None else 1.0)
    t = (labels.unsqueeze(-1) == torch.arange(k)).float()
    a = x.clone().requires_grad_(True)
    c = x.clone().requires_grad_(True)
    ours = sigmoid_focal_loss_from_labels(a, labels, w, alpha, gamma, reduction)
    dense = sigmoid_focal_loss(c, t, alpha, gamma) * keep.unsqueeze(-1)
    if reduction == "sum":
        dense = dense.sum()
    elif reduction == "mean":
        dense = dense.sum() / max(int((labels != IGNORE).sum()) * k, 1)
    torch.testing.assert_close(ours, dense, rtol=1e-5, atol=1e-6)
    ours.sum().backward()
    dense.sum().backward()
    torch.testing.assert_close(a.grad, c.grad, rtol=1e-5, atol=1e-7)


@settings(max_examples=30)
@given(
    shape=shapes,
    scale=scales,
    seed=seeds,
    soft=st.booleans(),
    dtype=st.sampled_from([torch.float16, torch.bfloat16]),
    gamma=gammas,
)
def test_half_precision_close_to_float32(shape, scale, seed, soft, dtype, gamma) -> None:
    x, t = draw_xt(shape, min(scale, 1e3), seed, soft)
    xh = x.to(dtype).requires_grad_(True)
    out = sigmoid_focal_loss(xh, t, 0.25, gamma)
    out.sum().backward()
    x32 = xh.detach().float().requires_grad_(True)
    ref = sigmoid_focal_loss(x32, t, 0.25, gamma)
    ref.sum().backward()
    assert out.dtype == dtype and xh.grad.dtype == dtype
    assert torch.isfinite(out).all() and torch.isfinite(xh.grad).all()
    rtol = 1e-2 if dtype == torch.bfloat16 else 2e-3
    torch.testing.assert_close(out.float(), ref, rtol=rtol, atol=1e-5)
    torch.testing.assert_close(xh.grad.float(), x32.grad, rtol=rtol, atol=1e-5)


@given(
    shape=shapes, seed=seeds, gamma=st.sampled_from([0.5, 2.0, 4.0]), beta=st.sampled_from([-1.0, 0.0, 1.0])
)
def test_focal_star_finite_and_non_negative_at_extremes(shape, seed, gamma, beta) -> None:
    x, t = draw_xt(shape, 1e4, seed, soft=False)
    xx = x.clone().requires_grad_(True)
    out = sigmoid_focal_loss_star(xx, t, gamma=gamma, beta=beta)
    out.sum().backward()
    assert torch.isfinite(out).all() and (out >= 0).all()
    assert torch.isfinite(xx.grad).all()
    assert (xx.grad.abs() <= 1 + 1e-6).all()  # |y (p* - 1)| <= 1
