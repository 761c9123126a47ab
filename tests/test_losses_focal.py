"""sigmoid_focal_loss: closed forms, Appendix B gradients, torchvision parity, numerics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from focal_detect.losses import SigmoidFocalLoss, _fused, compiled_sigmoid_focal_loss, sigmoid_focal_loss

GOLDENS = json.loads((Path(__file__).parent / "data" / "focal_goldens.json").read_text())

EXTREMES = [-1e4, -80.0, -20.0, -4.595, -1.0, 0.0, 1.0, 4.595, 20.0, 80.0, 1e4]


def reference_focal64(x: torch.Tensor, t: torch.Tensor, alpha: float | None, gamma: float) -> torch.Tensor:
    """torchvision's formula, in float64 with log-sigmoid (independent of the library)."""
    x, t = x.double(), t.double()
    ce = -(t * F.logsigmoid(x) + (1 - t) * F.logsigmoid(-x))
    p = torch.sigmoid(x)
    q = p * (1 - t) + (1 - p) * t
    loss = ce * q**gamma
    if alpha is not None and alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss


def eq10_grad(x: torch.Tensor, y: torch.Tensor, gamma: float) -> torch.Tensor:
    """Paper eq. (10), float64: dFL/dx = y (1 - p_t)^g (g p_t log p_t + p_t - 1)."""
    x, y = x.double(), y.double()
    log_pt = F.logsigmoid(y * x)
    pt = torch.sigmoid(y * x)
    one_m_pt = torch.sigmoid(-y * x)
    # p_t - 1 is written -(1 - p_t) = -sigma(-y x) so float64 keeps it at the extremes.
    return y * one_m_pt**gamma * (gamma * pt * log_pt - one_m_pt)


def analytic_grad(x: torch.Tensor, t: torch.Tensor, **kw) -> torch.Tensor:
    xx = x.clone().requires_grad_(True)
    loss = sigmoid_focal_loss(xx, t, reduction="sum", **kw)
    # The gradient must come from our autograd.Function, not from a formula's graph.
    # One autograd node between the loss and the logits: the saved analytic gradient,
    # not the graph of a formula.
    leaves = [getattr(f, "variable", None) for f, _ in loss.grad_fn.next_functions if f is not None]
    assert len(leaves) == 1 and leaves[0] is xx
    loss.backward()
    return xx.grad


# ----------------------------------------------------------------- closed forms


def test_logit_zero_target_one_closed_form() -> None:
    loss = sigmoid_focal_loss(torch.zeros(1), torch.ones(1))
    assert loss.item() == pytest.approx(0.25 * 0.5**2 * math.log(2), rel=1e-6)


def test_logit_zero_target_zero_closed_form() -> None:
    loss = sigmoid_focal_loss(torch.zeros(1), torch.zeros(1))
    assert loss.item() == pytest.approx(0.75 * 0.5**2 * math.log(2), rel=1e-6)


def test_gamma_zero_alpha_off_is_bce_with_logits() -> None:
    x = torch.randn(50, 7) * 5
    t = torch.rand(50, 7)
    for alpha in (None, -1):
        ours = sigmoid_focal_loss(x, t, alpha=alpha, gamma=0.0)
        torch.testing.assert_close(
            ours, F.binary_cross_entropy_with_logits(x, t, reduction="none"), rtol=2e-5, atol=1e-6
        )


def test_paper_down_weighting_factors() -> None:
    # gamma = 2: p_t = 0.9 -> 100x lower than CE; alpha off.
    x = torch.tensor([math.log(9.0)])
    ratio = sigmoid_focal_loss(x, torch.ones(1), alpha=None) / F.binary_cross_entropy_with_logits(
        x, torch.ones(1)
    )
    assert ratio.item() == pytest.approx(0.01, rel=1e-5)


def test_reductions_mean_and_sum() -> None:
    x = torch.randn(3, 40) * 3
    t = (torch.rand(3, 40) < 0.2).float()
    none = sigmoid_focal_loss(x, t)
    torch.testing.assert_close(sigmoid_focal_loss(x, t, reduction="sum"), none.sum(), rtol=1e-6, atol=0)
    torch.testing.assert_close(sigmoid_focal_loss(x, t, reduction="mean"), none.mean(), rtol=1e-6, atol=0)


def test_module_wrapper_stores_hyper_parameters() -> None:
    x = torch.randn(10) * 2
    t = (torch.rand(10) < 0.5).float()
    mod = SigmoidFocalLoss(alpha=0.5, gamma=1.0, reduction="sum")
    assert "gamma=1.0" in repr(mod)
    torch.testing.assert_close(mod(x, t), sigmoid_focal_loss(x, t, 0.5, 1.0, "sum"))
    assert not torch.allclose(mod(x, t), sigmoid_focal_loss(x, t, reduction="sum"))


def test_module_takes_class_indices_as_the_labels_function() -> None:
    from focal_detect.constants import BACKGROUND, IGNORE
    from focal_detect.losses import sigmoid_focal_loss_from_labels

    x = torch.randn(2, 6, 4) * 3
    labels = torch.tensor([[0, 3, BACKGROUND, IGNORE, 1, 2], [BACKGROUND] * 5 + [3]])
    w = torch.rand(2, 6)
    for red in ("none", "sum", "mean"):
        mod = SigmoidFocalLoss(alpha=0.4, gamma=1.5, reduction=red)
        a = x.clone().requires_grad_(True)
        b = x.clone().requires_grad_(True)
        got = mod(a, labels, w)
        want = sigmoid_focal_loss_from_labels(b, labels, w, 0.4, 1.5, red)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        got.sum().backward()
        want.sum().backward()
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)
    # The same anchors as dense one-hot targets (ignored rows dropped) give the same sum.
    onehot = torch.nn.functional.one_hot(labels.clamp(min=0), 4).float() * (labels >= 0).unsqueeze(-1)
    keep = labels != IGNORE
    mod = SigmoidFocalLoss(reduction="sum")
    torch.testing.assert_close(mod(x[keep], onehot[keep]), mod(x, labels), rtol=1e-6, atol=0)
    for dtype in (torch.int32, torch.uint8):
        small = labels.clamp(min=0).to(dtype)
        torch.testing.assert_close(mod(x, small), mod(x, small.long()))


def test_module_rejects_targets_of_neither_form_naming_them() -> None:
    mod = SigmoidFocalLoss()
    x = torch.zeros(3, 4)
    with pytest.raises(TypeError, match="SigmoidFocalLoss: targets of shape inputs.shape.*integer tensor"):
        mod(x, torch.zeros(3))  # float class indices
    with pytest.raises(TypeError, match="SigmoidFocalLoss: targets of shape"):
        mod(x, torch.zeros(3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"SigmoidFocalLoss: targets must have the shape of inputs \(3, 4\)"):
        mod(x, torch.zeros(4, 3))
    with pytest.raises(ValueError, match="got \\(4,\\)"):
        mod(x, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="SigmoidFocalLoss: weights must be None for dense targets"):
        mod(x, torch.zeros(3, 4), torch.ones(3))
    with pytest.raises(TypeError, match="SigmoidFocalLoss: targets must be a torch.Tensor"):
        mod(x, [0, 1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="labels must be in"):
        mod(x, torch.tensor([0, 4, 1]))  # the class-index checks still apply
    with pytest.raises(ValueError, match="SigmoidFocalLoss: gamma must be"):
        SigmoidFocalLoss(gamma=-1.0)


# ----------------------------------------------------------------- Appendix B


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("alpha", [0.25, None])
def test_analytic_gradient_matches_eq10_times_alpha_t(gamma: float, alpha: float | None) -> None:
    x = torch.tensor(EXTREMES * 2)
    t = torch.tensor([1.0] * len(EXTREMES) + [0.0] * len(EXTREMES))
    y = 2 * t - 1
    a_t = 1.0 if alpha is None else alpha * t + (1 - alpha) * (1 - t)
    expected = a_t * eq10_grad(x, y, gamma)
    got = analytic_grad(x, t, alpha=alpha, gamma=gamma)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), expected.double(), rtol=2e-5, atol=1e-37)


def test_gamma_zero_gradient_is_eq9() -> None:
    x = torch.tensor(EXTREMES * 2)
    t = torch.tensor([1.0] * len(EXTREMES) + [0.0] * len(EXTREMES))
    y = 2 * t - 1
    one_m_pt = torch.sigmoid(-y.double() * x.double())  # eq. (9): y (p_t - 1)
    got = analytic_grad(x, t, alpha=None, gamma=0.0)
    torch.testing.assert_close(got.double(), -y.double() * one_m_pt, rtol=1e-6, atol=1e-37)


def test_gradient_for_soft_targets_matches_float64_autograd() -> None:
    x = torch.tensor(EXTREMES * 3)
    t = torch.tensor([0.1] * len(EXTREMES) + [0.5] * len(EXTREMES) + [0.93] * len(EXTREMES))
    x64 = x.double().requires_grad_(True)
    reference_focal64(x64, t, 0.25, 2.0).sum().backward()
    got = analytic_grad(x, t)
    torch.testing.assert_close(got.double(), x64.grad, rtol=2e-5, atol=1e-30)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_gradcheck_float64_hard_and_soft(reduction: str) -> None:
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(6, 5, generator=g, dtype=torch.float64) * 4).requires_grad_(True)
    hard = (torch.rand(6, 5, generator=g) < 0.3).double()
    soft = torch.rand(6, 5, generator=g, dtype=torch.float64)
    for t, alpha, gamma in ((hard, 0.25, 2.0), (soft, 0.25, 2.0), (soft, None, 0.7), (hard, 0.6, 0.0)):
        assert torch.autograd.gradcheck(lambda z: sigmoid_focal_loss(z, t, alpha, gamma, reduction), (x,))


def test_second_derivative_needs_targets_alive_and_says_so() -> None:
    # Only weak references are kept (no extra memory on the first-order path): a
    # target dropped before backward(create_graph=True) gives a clear message.
    x = torch.randn(4, dtype=torch.float64, requires_grad=True)
    loss = sigmoid_focal_loss(x, torch.ones(4, dtype=torch.float64), reduction="sum")
    with pytest.raises(RuntimeError, match="create_graph=True needs the logits and targets"):
        torch.autograd.grad(loss, x, create_graph=True)
    t = torch.ones(4, dtype=torch.float64)
    (gx,) = torch.autograd.grad(sigmoid_focal_loss(x, t, reduction="sum"), x, create_graph=True)
    assert gx.requires_grad and (gx < 0).all()  # targets 1: the loss falls as x grows


def test_retain_graph_backward_twice_gives_same_gradient() -> None:
    x = (torch.randn(30) * 3).requires_grad_(True)
    t = (torch.rand(30) < 0.3).float()
    loss = sigmoid_focal_loss(x, t, reduction="mean")
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    loss.backward()
    torch.testing.assert_close(x.grad, 2 * first)


def test_none_reduction_uses_upstream_gradient_elementwise() -> None:
    x = (torch.randn(5, 3) * 2).requires_grad_(True)
    t = (torch.rand(5, 3) < 0.3).float()
    w = torch.rand(5, 3)
    (sigmoid_focal_loss(x, t) * w).sum().backward()
    x64 = x.detach().double().requires_grad_(True)
    (reference_focal64(x64, t, 0.25, 2.0) * w.double()).sum().backward()
    torch.testing.assert_close(x.grad.double(), x64.grad, rtol=1e-5, atol=1e-9)


def test_no_grad_inputs_give_no_graph() -> None:
    loss = sigmoid_focal_loss(torch.randn(8), torch.ones(8), reduction="sum")
    assert loss.grad_fn is None and not loss.requires_grad


def test_targets_requiring_grad_get_a_gradient() -> None:
    x = torch.randn(6, dtype=torch.float64, requires_grad=True)
    t = torch.rand(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: sigmoid_focal_loss(a, b, reduction="sum"), (x, t))


def test_chunk_boundaries_do_not_change_results(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(1000) * 4
    t = (torch.rand(1000) < 0.1).float()
    ref = sigmoid_focal_loss(x, t)
    xr = x.clone().requires_grad_(True)
    sigmoid_focal_loss(xr, t, reduction="sum").backward()
    monkeypatch.setattr(_fused, "pass_elements", lambda device_type, numel: 97)
    xs = x.clone().requires_grad_(True)
    out = sigmoid_focal_loss(xs, t)
    out.sum().backward()
    # Vectorised and scalar tails of sigmoid/log may differ in the last ulp.
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=0)
    torch.testing.assert_close(xs.grad, xr.grad, rtol=1e-6, atol=0)
    torch.testing.assert_close(sigmoid_focal_loss(x, t, reduction="sum"), ref.sum(), rtol=1e-6, atol=0)


# ----------------------------------------------------------------- numerics


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (None, 0.0), (0.5, 0.5)])
def test_float32_precision_at_extremes(alpha: float | None, gamma: float) -> None:
    x = torch.tensor(EXTREMES * 3)
    t = torch.tensor([1.0] * len(EXTREMES) + [0.0] * len(EXTREMES) + [0.3] * len(EXTREMES))
    loss = sigmoid_focal_loss(x, t, alpha=alpha, gamma=gamma)
    assert torch.isfinite(loss).all()
    torch.testing.assert_close(loss.double(), reference_focal64(x, t, alpha, gamma), rtol=2e-6, atol=1e-37)


def test_ce_of_easy_examples_is_accurate_where_naive_log_fails() -> None:
    # t = 1, x = 17: CE = log(1 + e^-17) ~ 4.1e-8, lost by log(sigmoid(x)) in float32.
    x = torch.tensor([17.0, 30.0, -17.0])
    t = torch.tensor([1.0, 1.0, 0.0])
    got = sigmoid_focal_loss(x, t, alpha=None, gamma=0.0)
    torch.testing.assert_close(got.double(), reference_focal64(x, t, None, 0.0), rtol=1e-6, atol=0)
    assert got[0] > 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_computed_in_float32_returned_in_input_dtype(dtype: torch.dtype) -> None:
    x = (torch.randn(200) * 6).to(dtype)
    x[:4] = torch.tensor([-60000.0, 60000.0, -300.0, 300.0]).to(dtype)
    t = (torch.rand(200) < 0.3).float()
    xh = x.clone().requires_grad_(True)
    loss = sigmoid_focal_loss(xh, t)
    assert loss.dtype == dtype
    loss.sum().backward()
    assert xh.grad.dtype == dtype
    x32 = x.float().requires_grad_(True)
    ref = sigmoid_focal_loss(x32, t)
    ref.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(xh.grad).all()
    tol = dict(rtol=1e-2, atol=1e-6) if dtype == torch.bfloat16 else dict(rtol=2e-3, atol=1e-7)
    torch.testing.assert_close(loss.float(), ref, **tol)
    torch.testing.assert_close(xh.grad.float(), x32.grad, **tol)


def test_autocast_bfloat16_runs_in_float32() -> None:
    conv = torch.nn.Linear(8, 5)
    feats = torch.randn(30, 8)
    t = (torch.rand(30, 5) < 0.2).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = conv(feats)
        assert logits.dtype == torch.bfloat16
        loss = sigmoid_focal_loss(logits, t, reduction="sum")
    assert loss.dtype == torch.float32
    ref = sigmoid_focal_loss(logits.detach().float(), t, reduction="sum")
    torch.testing.assert_close(loss.detach(), ref, rtol=1e-6, atol=0)
    loss.backward()
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()
    assert conv.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------- goldens (torchvision)


def _golden_cases():
    return GOLDENS["focal"]


@pytest.mark.parametrize(
    "case", _golden_cases(), ids=lambda c: f"a{c['alpha']}-g{c['gamma']}-{c['reduction']}"
)
def test_matches_torchvision_goldens(case: dict) -> None:
    # Peer: torchvision 0.29.1 / torch 2.14.1, torchvision.ops.sigmoid_focal_loss(inputs,
    # targets, alpha, gamma, reduction); grad of loss.sum(). See tests/data/make_focal_goldens.py.
    x = torch.tensor(case["inputs"], dtype=torch.float32).reshape(case["shape"]).requires_grad_(True)
    t = torch.tensor(case["targets"], dtype=torch.float32).reshape(case["shape"])
    out = sigmoid_focal_loss(x, t, case["alpha"], case["gamma"], case["reduction"])
    out.sum().backward()
    loss64 = torch.tensor(case["loss_f64"], dtype=torch.float64)
    grad64 = torch.tensor(case["grad_f64"], dtype=torch.float64)
    # Against torchvision's float64 run (the precise reference): 1e-6 relative.
    torch.testing.assert_close(out.detach().reshape(-1).double(), loss64, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(x.grad.reshape(-1).double(), grad64, rtol=1e-5, atol=1e-12)
    # Against its float32 run: equal up to torchvision's own float32 rounding.
    loss32 = torch.tensor(case["loss_f32"], dtype=torch.float32)
    torch.testing.assert_close(out.detach().reshape(-1), loss32, rtol=1e-5, atol=1e-6)


def test_live_parity_with_torchvision() -> None:
    tv = pytest.importorskip("torchvision")
    x = torch.randn(64, 9) * 5
    for t in ((torch.rand(64, 9) < 0.1).float(), torch.rand(64, 9)):
        for alpha, gamma, red in ((0.25, 2.0, "none"), (-1, 1.5, "sum"), (0.9, 0.0, "mean")):
            a = x.clone().requires_grad_(True)
            b = x.clone().requires_grad_(True)
            ours = sigmoid_focal_loss(a, t, alpha, gamma, red)
            theirs = tv.ops.sigmoid_focal_loss(b, t, alpha, gamma, red)
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
            ours.sum().backward()
            theirs.sum().backward()
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------- bad input


def test_bad_arguments_raise_with_argument_name() -> None:
    x, t = torch.zeros(3), torch.ones(3)
    with pytest.raises(ValueError, match="reduction"):
        sigmoid_focal_loss(x, t, reduction="avg")
    with pytest.raises(ValueError, match="alpha"):
        sigmoid_focal_loss(x, t, alpha=1.5)
    with pytest.raises(ValueError, match="alpha"):
        sigmoid_focal_loss(x, t, alpha=float("nan"))
    with pytest.raises(ValueError, match="gamma"):
        sigmoid_focal_loss(x, t, gamma=-0.5)
    with pytest.raises(ValueError, match="targets"):
        sigmoid_focal_loss(x, torch.ones(4))
    with pytest.raises(TypeError, match="inputs"):
        sigmoid_focal_loss([0.0, 1.0], t)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="targets"):
        sigmoid_focal_loss(x, [1.0, 1.0, 1.0])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="inputs"):
        sigmoid_focal_loss(torch.zeros(3, dtype=torch.long), t)
    with pytest.raises(ValueError, match="reduction"):
        SigmoidFocalLoss(reduction="max")


def test_negative_alpha_disables_like_torchvision_minus_one() -> None:
    x = torch.randn(20) * 3
    t = (torch.rand(20) < 0.5).float()
    off = sigmoid_focal_loss(x, t, alpha=None)
    torch.testing.assert_close(sigmoid_focal_loss(x, t, alpha=-1), off, rtol=0, atol=0)
    torch.testing.assert_close(sigmoid_focal_loss(x, t, alpha=-0.3), off, rtol=0, atol=0)
    assert not torch.allclose(sigmoid_focal_loss(x, t, alpha=0.25), off)


# ----------------------------------------------------------------- torch.compile


@pytest.mark.slow
def test_torch_compile_matches_eager() -> None:
    # compiled_sigmoid_focal_loss is torch.compile(sigmoid_focal_loss): this is the test
    # that the function runs under torch.compile, and of the opt-in API.
    torch._dynamo.reset()
    x = torch.randn(40, 6) * 3
    x[0, :4] = torch.tensor([-1e4, 1e4, -80.0, 80.0])
    t = (torch.rand(40, 6) < 0.2).float()
    t[1] = torch.rand(6)  # soft targets too
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    out_c = compiled_sigmoid_focal_loss(a, t, reduction="sum")
    out_e = sigmoid_focal_loss(b, t, reduction="sum")
    torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-6)
    out_c.backward()
    out_e.backward()
    assert torch.isfinite(a.grad).all()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------- passes and threads


def test_pass_plan_whole_tensor_on_accelerators_chunks_on_cpu() -> None:
    n = 240_000 * 80
    # Accelerators: one whole-tensor pass (no chunk loop of small kernel launches).
    for device_type in ("cuda", "xpu", "mps", "meta"):
        assert _fused.pass_elements(device_type, n) == n
    # CPU: cache-sized chunks.
    assert _fused.pass_elements("cpu", n) == _fused.CHUNK_ELEMENTS < n
    # Small tensors: one pass whatever the device; an empty one still gets a size.
    assert _fused.pass_elements("cpu", 1000) == 1000
    assert _fused.pass_elements("cpu", 0) == 1
    assert _fused.pass_elements("cuda", 0) == 1


def test_whole_tensor_pass_matches_cpu_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    # The accelerator path (one pass over everything) run on CPU against small chunks.
    from focal_detect.losses import sigmoid_focal_loss_from_labels, sigmoid_focal_loss_star

    g = torch.Generator().manual_seed(5)
    x = torch.randn(300, 7, generator=g) * 4
    x[0, :4] = torch.tensor([-1e4, 1e4, -80.0, 80.0])
    t = (torch.rand(300, 7, generator=g) < 0.1).float()
    t[1] = torch.rand(7, generator=g)
    labels = torch.randint(-2, 7, (300,), generator=g)
    weights = torch.rand(300, generator=g)
    calls = []

    def run(plan):
        monkeypatch.setattr(
            _fused, "pass_elements", lambda device_type, numel: calls.append(numel) or plan(numel)
        )
        out = []
        for red in ("none", "sum", "mean"):
            a = x.clone().requires_grad_(True)
            loss = sigmoid_focal_loss(a, t.half(), reduction=red)
            loss.sum().backward()
            b = x.clone().requires_grad_(True)
            lab = sigmoid_focal_loss_from_labels(b, labels, weights, reduction=red)
            lab.sum().backward()
            c = x.clone().requires_grad_(True)
            star = sigmoid_focal_loss_star(c, t, reduction=red)
            star.sum().backward()
            out += [loss.detach(), a.grad, lab.detach(), b.grad, star.detach(), c.grad]
        with torch.inference_mode():
            out.append(sigmoid_focal_loss(x, t, reduction="sum"))
        return out

    whole = run(lambda numel: numel)
    chunked = run(lambda numel: 64)
    assert calls and set(calls) == {x.numel()}
    for w, c in zip(whole, chunked):
        assert torch.isfinite(w).all()
        torch.testing.assert_close(c, w, rtol=1e-6, atol=1e-30)


def test_losses_own_no_threads_and_keep_the_thread_setting() -> None:
    import threading

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        workers = threading.active_count()
        x = (torch.randn(2000, 300) - 4).requires_grad_(True)
        t = (torch.rand(2000, 300) < 0.01).float()
        sigmoid_focal_loss(x, t, reduction="sum").backward()
        from focal_detect.losses import sigmoid_focal_loss_from_labels

        sigmoid_focal_loss_from_labels(x, torch.randint(-2, 300, (2000,)), reduction="sum").backward()
        assert threading.active_count() == workers  # 0.1.0 started a pool of worker threads
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_device_agnostic_meta_tensors_give_shapes() -> None:
    # No hard-coded device: the meta device (shapes only) runs the same code path.
    x = torch.empty(7, 5, device="meta", requires_grad=True)
    t = torch.empty(7, 5, device="meta")
    out = sigmoid_focal_loss(x, t)
    assert out.shape == (7, 5) and out.device.type == "meta"
    total = sigmoid_focal_loss(x, t, reduction="mean")
    total.backward()
    assert total.shape == () and x.grad.shape == (7, 5) and x.grad.device.type == "meta"
