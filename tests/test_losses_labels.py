"""sigmoid_focal_loss_from_labels: exactly the dense one-hot loss, ignored anchors excluded."""

from __future__ import annotations

import pytest
import torch

from focal_detect.constants import BACKGROUND, IGNORE
from focal_detect.losses import sigmoid_focal_loss, sigmoid_focal_loss_from_labels


def dense_equivalent(x, labels, weights, alpha, gamma):
    """Dense path on a one-hot target, times weight and (labels != IGNORE)."""
    K = x.shape[-1]
    t = (labels.unsqueeze(-1) == torch.arange(K)).to(x.dtype)
    f = (labels != IGNORE).to(x.dtype)
    if weights is not None:
        f = f * weights
    return sigmoid_focal_loss(x, t, alpha, gamma) * f.unsqueeze(-1)


def make(B=2, N=37, K=5, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(B, N, K, generator=g) * 4).to(dtype)
    labels = torch.randint(-2, K, (B, N), generator=g)
    w = torch.rand(B, N, generator=g).to(dtype)
    return x, labels, w


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (None, 0.0), (0.6, 1.5)])
def test_loss_and_grad_equal_dense_one_hot_path(alpha, gamma) -> None:
    x, labels, w = make()
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    ours = sigmoid_focal_loss_from_labels(a, labels, w, alpha, gamma)
    ref = dense_equivalent(b, labels, w, alpha, gamma)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-12)
    upstream = torch.rand_like(ours)
    (ours * upstream).sum().backward()
    (ref * upstream).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-12)


def test_reduction_none_has_zero_rows_for_ignored_anchors() -> None:
    x = torch.randn(6, 4) * 3
    labels = torch.tensor([0, IGNORE, 3, BACKGROUND, IGNORE, 1])
    out = sigmoid_focal_loss_from_labels(x, labels)
    assert out.shape == (6, 4)
    assert (out[labels == IGNORE] == 0).all()
    assert (out[labels != IGNORE] > 0).all()


def test_mean_divides_by_non_ignored_elements() -> None:
    x, labels, w = make(B=1, N=20, K=3)
    total = sigmoid_focal_loss_from_labels(x, labels, w, reduction="sum")
    n_kept = int((labels != IGNORE).sum()) * 3
    mean = sigmoid_focal_loss_from_labels(x, labels, w, reduction="mean")
    torch.testing.assert_close(mean, total / n_kept, rtol=1e-6, atol=0)
    none = sigmoid_focal_loss_from_labels(x, labels, w)
    torch.testing.assert_close(total, none.sum(), rtol=1e-6, atol=0)
    # every anchor ignored: mean is 0 (no NaN)
    allign = torch.full((1, 20), IGNORE)
    assert sigmoid_focal_loss_from_labels(x, allign, reduction="mean").item() == 0.0


def test_weights_none_equals_ones() -> None:
    x, labels, _ = make()
    torch.testing.assert_close(
        sigmoid_focal_loss_from_labels(x, labels, reduction="sum"),
        sigmoid_focal_loss_from_labels(x, labels, torch.ones(labels.shape), reduction="sum"),
    )


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_gradcheck_float64_with_weights_and_ignores(reduction: str) -> None:
    x, labels, w = make(B=2, N=6, K=3, dtype=torch.float64)
    x.requires_grad_(True)
    assert (labels == IGNORE).any() and (labels >= 0).any()
    assert torch.autograd.gradcheck(
        lambda z: sigmoid_focal_loss_from_labels(z, labels, w, reduction=reduction), (x,)
    )


def test_weights_requiring_grad_get_a_gradient() -> None:
    x, labels, w = make(B=1, N=5, K=3, dtype=torch.float64)
    x.requires_grad_(True)
    w.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b: sigmoid_focal_loss_from_labels(a, labels, b, reduction="sum"), (x, w)
    )


def test_chunked_rows_match_single_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    from focal_detect.losses import _fused

    x, labels, w = make(B=3, N=50, K=7)
    a = x.clone().requires_grad_(True)
    ref = sigmoid_focal_loss_from_labels(a, labels, w, reduction="sum")
    ref.backward()
    monkeypatch.setattr(_fused, "pass_elements", lambda device_type, numel: 20)  # 2 rows per pass
    b = x.clone().requires_grad_(True)
    out = sigmoid_focal_loss_from_labels(b, labels, w, reduction="sum")
    out.backward()
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=0)
    torch.testing.assert_close(b.grad, a.grad, rtol=1e-6, atol=0)


def test_extreme_logits_are_finite_and_match_dense() -> None:
    x = torch.tensor([[-1e4, 1e4, 80.0], [-80.0, 0.0, 1e4], [20.0, -20.0, -1e4]])
    labels = torch.tensor([1, 0, BACKGROUND])
    a = x.clone().requires_grad_(True)
    out = sigmoid_focal_loss_from_labels(a, labels)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(a.grad).all()
    b = x.clone().requires_grad_(True)
    ref = dense_equivalent(b, labels, None, 0.25, 2.0)
    ref.sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=0)
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs(dtype: torch.dtype) -> None:
    x, labels, w = make(dtype=dtype)
    a = x.clone().requires_grad_(True)
    out = sigmoid_focal_loss_from_labels(a, labels, w, reduction="sum")
    assert out.dtype == dtype
    out.backward()
    assert a.grad.dtype == dtype
    b = x.float().requires_grad_(True)
    ref = sigmoid_focal_loss_from_labels(b, labels, w.float(), reduction="sum")
    ref.backward()
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-5)
    torch.testing.assert_close(a.grad.float(), b.grad, rtol=1e-2, atol=1e-5)


def test_bad_arguments_raise_with_argument_name() -> None:
    x = torch.zeros(4, 3)
    ok = torch.tensor([0, 1, BACKGROUND, IGNORE])
    with pytest.raises(ValueError, match="labels"):
        sigmoid_focal_loss_from_labels(x, torch.tensor([0, 3, 0, 0]))  # >= K
    with pytest.raises(ValueError, match="labels"):
        sigmoid_focal_loss_from_labels(x, torch.tensor([0, -3, 0, 0]))  # < IGNORE
    with pytest.raises(ValueError, match="labels"):
        sigmoid_focal_loss_from_labels(x, torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="labels"):
        sigmoid_focal_loss_from_labels(x, ok.float())
    with pytest.raises(ValueError, match="weights"):
        sigmoid_focal_loss_from_labels(x, ok, torch.ones(3))
    with pytest.raises(TypeError, match="weights"):
        sigmoid_focal_loss_from_labels(x, ok, [1.0] * 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reduction"):
        sigmoid_focal_loss_from_labels(x, ok, reduction="median")
    with pytest.raises(ValueError, match="alpha"):
        sigmoid_focal_loss_from_labels(x, ok, alpha=2.0)
    with pytest.raises(ValueError, match="gamma"):
        sigmoid_focal_loss_from_labels(x, ok, gamma=-1.0)
    with pytest.raises(TypeError, match="inputs"):
        sigmoid_focal_loss_from_labels("x", ok)  # type: ignore[arg-type]


def test_empty_batch() -> None:
    x = torch.zeros(0, 5, requires_grad=True)
    labels = torch.zeros(0, dtype=torch.long)
    out = sigmoid_focal_loss_from_labels(x, labels, reduction="sum")
    assert out.item() == 0.0
    out.backward()
    assert x.grad.shape == (0, 5)
    assert sigmoid_focal_loss_from_labels(x, labels).shape == (0, 5)


@pytest.mark.slow
def test_torch_compile_matches_eager() -> None:
    torch._dynamo.reset()
    x, labels, w = make(B=1, N=16, K=4)

    def f(z):
        return sigmoid_focal_loss_from_labels(z, labels, w, reduction="sum")

    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    out_c = torch.compile(f)(a)
    out_e = f(b)
    torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-6)
    out_c.backward()
    out_e.backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)
