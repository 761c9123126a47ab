"""focal_loss_cdf / plot_focal_loss_cdf: the paper's Figure 4."""

from __future__ import annotations

import math

import pytest
import torch

from focal_detect.analysis import focal_loss_cdf, plot_focal_loss_cdf
from focal_detect.constants import BACKGROUND, IGNORE


def _case(seed: int = 0, n: int = 500, k: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g) * 3 - 2
    labels = torch.randint(-2, k, (n,), generator=g)
    return logits, labels


def test_hand_computed_case() -> None:
    # One anchor, K = 2, label 1: positive logit 1.0, negative logit -1.0 (x_t = 1 too);
    # a background anchor with logits 0 and 3 (x_t = 0 and -3); an ignored anchor.
    logits = torch.tensor([[-1.0, 1.0], [0.0, 3.0], [9.0, 9.0]])
    labels = torch.tensor([1, BACKGROUND, IGNORE])
    out = focal_loss_cdf(logits, labels, gammas=(0.0, 2.0), num_points=4)
    assert out["num_positive"] == 1 and out["num_negative"] == 3
    sp = lambda z: math.log1p(math.exp(z))  # softplus  # noqa: E731
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    # Negatives x_t sorted high to low: 1, 0, -3 -> CE ascending.
    for gamma in (0.0, 2.0):
        losses = [sig(-x) ** gamma * sp(-x) for x in (1.0, 0.0, -3.0)]
        total = sum(losses)
        want = [0.0, losses[0] / total, (losses[0] + losses[1]) / total, 1.0]
        torch.testing.assert_close(out["negative"][gamma], torch.tensor(want, dtype=torch.float64))
    # One positive: nothing before it, all of the loss at fraction 1 (round(f * 1)).
    assert out["positive"][0.0].tolist() == [0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("seed", [0, 1])
def test_curves_are_monotone_start_at_0_end_at_1_and_below_the_diagonal(seed: int) -> None:
    logits, labels = _case(seed)
    out = focal_loss_cdf(logits, labels, num_points=101)
    assert out["fraction"][0] == 0 and out["fraction"][-1] == 1
    for group in ("positive", "negative"):
        for curve in out[group].values():
            assert curve[0] == 0
            assert abs(float(curve[-1]) - 1) < 1e-12
            assert bool((curve.diff() >= 0).all())
            # Sorted ascending, the cumulative share never exceeds the share of samples.
            assert bool((curve <= out["fraction"] + 1e-12).all())


def test_larger_gamma_concentrates_negative_loss_on_hard_examples() -> None:
    logits, labels = _case(3, n=2000)
    out = focal_loss_cdf(logits, labels, gammas=(0.0, 0.5, 1.0, 2.0), num_points=101)
    at_90 = [float(out["negative"][g][90]) for g in (0.0, 0.5, 1.0, 2.0)]
    # The easiest 90 % carry less and less of the loss as gamma grows.
    assert at_90 == sorted(at_90, reverse=True)
    assert at_90[0] - at_90[-1] > 0.05


def test_counts_follow_labels_and_ignore() -> None:
    logits, labels = _case(4, n=300, k=5)
    out = focal_loss_cdf(logits, labels)
    kept = int((labels != IGNORE).sum())
    assert out["num_positive"] == int((labels >= 0).sum())
    assert out["num_positive"] + out["num_negative"] == kept * 5


def test_batched_shape_equals_flat() -> None:
    logits, labels = _case(5, n=120, k=3)
    a = focal_loss_cdf(logits.view(4, 30, 3), labels.view(4, 30), num_points=21)
    b = focal_loss_cdf(logits, labels, num_points=21)
    for g in (0.0, 2.0):
        torch.testing.assert_close(a["negative"][g], b["negative"][g])


def test_empty_group_gives_nan_and_zero_losses_give_the_diagonal() -> None:
    out = focal_loss_cdf(torch.zeros(3, 2), torch.full((3,), BACKGROUND), num_points=5)
    assert out["num_positive"] == 0
    assert all(math.isnan(v) for v in out["positive"][2.0].tolist())
    # Negatives with logit -800: every loss underflows to 0 (float64) -> the diagonal.
    out = focal_loss_cdf(
        torch.full((3, 2), -800.0), torch.full((3,), BACKGROUND), gammas=(2.0,), num_points=5
    )
    torch.testing.assert_close(out["negative"][2.0], out["fraction"])


def test_half_precision_input() -> None:
    logits, labels = _case(6, n=100)
    a = focal_loss_cdf(logits.to(torch.bfloat16), labels, num_points=11)
    b = focal_loss_cdf(logits.to(torch.bfloat16).float(), labels, num_points=11)
    torch.testing.assert_close(a["negative"][2.0], b["negative"][2.0])


def test_bad_inputs() -> None:
    logits, labels = _case()
    with pytest.raises(TypeError, match="focal_loss_cdf: labels must be an integer tensor"):
        focal_loss_cdf(logits, labels.float())
    with pytest.raises(TypeError, match="logits must be a floating-point tensor"):
        focal_loss_cdf(labels[:, None], labels)
    with pytest.raises(ValueError, match="labels must have shape"):
        focal_loss_cdf(logits, labels[:-1])
    with pytest.raises(ValueError, match="gammas must be in"):
        focal_loss_cdf(logits, labels, gammas=(-1.0,))
    with pytest.raises(ValueError, match="num_points must be an int >= 2"):
        focal_loss_cdf(logits, labels, num_points=1)
    with pytest.raises(ValueError, match="must have key"):
        plot_focal_loss_cdf({"fraction": []}, "x.png")


def test_plot_writes_a_png(tmp_path) -> None:  # type: ignore[no-untyped-def]
    logits, labels = _case()
    path = tmp_path / "f4.png"
    plot_focal_loss_cdf(focal_loss_cdf(logits, labels, num_points=11), path, title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
