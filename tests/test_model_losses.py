"""RetinaNetConfig.cls_loss ("focal", "focal_star", "ohem") and the prior option:
the switches the paper's ablations (Sec. 5.1, Table 1, Appendix A) need."""

from __future__ import annotations

import math

import pytest
import torch

from focal_detect.constants import BACKGROUND, IGNORE
from focal_detect.init import prior_bias
from focal_detect.losses import sigmoid_focal_loss_from_labels, sigmoid_focal_loss_star
from focal_detect.models import LossConfig, RetinaNet, RetinaNetConfig
from focal_detect.models.retinanet import CLS_LOSSES
from focal_detect.sampling import ohem_sample


def _model(head: dict[str, object] | None = None, **loss: object) -> RetinaNet:
    """The tiny model with ``loss`` fields (``LossConfig``) and ``head`` fields changed."""
    torch.manual_seed(0)
    cfg = RetinaNetConfig.preset("tiny", 3, transform={"size_divisible": 32}, loss=loss, head=head or {})
    return RetinaNet(cfg).train()


def _logits_labels(seed: int = 0, b: int = 2, n: int = 60, k: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, n, k, generator=g) * 2 - 1
    labels = torch.full((b, n), BACKGROUND)
    labels[:, :5] = torch.randint(0, k, (b, 5), generator=g)
    labels[:, 5:9] = IGNORE
    return logits, labels


def _batch() -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 64, 64, generator=g)
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 40.0, 44.0]]), "labels": torch.tensor([1])},
        {
            "boxes": torch.tensor([[20.0, 10.0, 60.0, 30.0], [2.0, 30.0, 30.0, 62.0]]),
            "labels": torch.tensor([0, 2]),
        },
    ]
    return images, targets


def test_default_is_the_papers_focal_loss() -> None:
    cfg = RetinaNetConfig()
    assert cfg.loss.cls_loss == "focal" and CLS_LOSSES == ("focal", "focal_star", "ohem")
    model = _model()
    logits, labels = _logits_labels()
    anchors = torch.zeros(labels.shape[1], 4)
    want = sigmoid_focal_loss_from_labels(logits, labels, alpha=0.25, gamma=2.0, reduction="sum")
    torch.testing.assert_close(model.classification_loss(logits, labels, None, anchors), want)


def test_focal_star_equals_the_op_on_one_hot_targets_without_ignored_anchors() -> None:
    model = _model(cls_loss="focal_star", star_gamma=2.0, star_beta=1.0, alpha=None)
    logits, labels = _logits_labels(1)
    got = model.classification_loss(logits, labels, None, torch.zeros(labels.shape[1], 4))
    want = 0.0
    for b in range(labels.shape[0]):
        for i in range(labels.shape[1]):
            if labels[b, i] == IGNORE:
                continue
            t = torch.zeros(3)
            if labels[b, i] >= 0:
                t[labels[b, i]] = 1.0
            want += float(sigmoid_focal_loss_star(logits[b, i], t, gamma=2.0, beta=1.0, reduction="sum"))
    assert math.isclose(float(got), want, rel_tol=1e-5)
    # Per-anchor weights (per-image normalisation) multiply each anchor's term.
    w = torch.full(labels.shape, 0.5)
    torch.testing.assert_close(model.classification_loss(logits, labels, w, torch.zeros(60, 4)), got * 0.5)


def test_ohem_sums_the_loss_of_the_chosen_anchors_only() -> None:
    model = _model(cls_loss="ohem", gamma=0.0, alpha=None, ohem_batch_size_per_image=8)
    logits, labels = _logits_labels(2)
    got = model.classification_loss(logits, labels, None, torch.zeros(labels.shape[1], 4))
    per_anchor = sigmoid_focal_loss_from_labels(logits, labels, alpha=None, gamma=0.0).sum(-1)
    chosen = ohem_sample(per_anchor, labels, batch_size_per_image=8, positive_fraction=0.25)
    assert int(chosen.sum()) == 16
    torch.testing.assert_close(got, per_anchor[chosen].sum())
    # It is much less than the CE over every anchor, and more than the 16 easiest.
    full = per_anchor[labels != IGNORE].sum()
    assert float(got) < float(full)
    assert float(got) > float(per_anchor[labels != IGNORE].sort().values[:16].sum())


def test_ohem_with_a_batch_larger_than_the_image_is_plain_focal_loss() -> None:
    model = _model(cls_loss="ohem", ohem_batch_size_per_image=1000, ohem_positive_fraction=None)
    logits, labels = _logits_labels(3)
    got = model.classification_loss(logits, labels, None, torch.zeros(labels.shape[1], 4))
    torch.testing.assert_close(got, sigmoid_focal_loss_from_labels(logits, labels, reduction="sum"))


def test_ohem_nms_uses_the_anchors() -> None:
    model = _model(
        cls_loss="ohem",
        gamma=0.0,
        alpha=None,
        ohem_batch_size_per_image=2,
        ohem_positive_fraction=None,
        ohem_nms_threshold=0.5,
    )
    logits = torch.tensor([[[3.0], [2.0], [1.0]]])  # background: loss increases with the logit
    labels = torch.full((1, 3), BACKGROUND)
    anchors = torch.tensor([[0.0, 0, 10, 10], [0.0, 0, 10, 10], [50.0, 50, 60, 60]])
    got = model.classification_loss(logits, labels, None, anchors)
    per = sigmoid_focal_loss_from_labels(logits, labels, alpha=None, gamma=0.0).sum(-1)[0]
    torch.testing.assert_close(got, per[0] + per[2])  # anchor 1 is suppressed by anchor 0


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"cls_loss": "focal_star", "alpha": None},
        {"cls_loss": "ohem", "gamma": 0.0, "alpha": None, "ohem_batch_size_per_image": 32},
    ],
)
def test_training_steps_lower_the_loss(kw: dict[str, object]) -> None:
    model = _model(**kw)
    images, targets = _batch()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    first = None
    for _ in range(4):
        losses = model(images, targets)
        total = losses["classification"] + losses["bbox_regression"]
        assert torch.isfinite(total)
        first = float(total.detach()) if first is None else first
        opt.zero_grad()
        total.backward()
        opt.step()
    with torch.no_grad():
        last = float(sum(model(images, targets).values()))
    assert last < first


def test_prior_half_is_the_standard_zero_bias_and_makes_the_first_ce_loss_large() -> None:
    ce: dict[str, object] = {"gamma": 0.0, "alpha": None}
    no_prior, prior = _model(head={"prior": 0.5}, **ce), _model(**ce)
    assert float(no_prior.head.cls_logits.bias.detach().abs().max()) == 0.0
    assert float(prior.head.cls_logits.bias.detach()[0]) == pytest.approx(prior_bias(0.01))
    images, targets = _batch()
    with torch.no_grad():
        l_no = float(no_prior(images, targets)["classification"])
        l_yes = float(prior(images, targets)["classification"])
    # Nearly every one of the B·N·K entries costs log 2 without the prior, -log 0.99 with
    # it (the few positives cost -log 0.01 = 4.6 with it, hence not the full ratio of 69).
    assert l_no > 10 * l_yes


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"cls_loss": "ce"}, "RetinaNetConfig.loss: cls_loss must be one of"),
        ({"star_gamma": 0.0}, "RetinaNetConfig.loss: star_gamma must be a number"),
        ({"star_beta": math.inf}, "RetinaNetConfig.loss: star_beta must be a finite number"),
        (
            {"ohem_batch_size_per_image": 0},
            "RetinaNetConfig.loss: ohem_batch_size_per_image must be a positive int",
        ),
        ({"ohem_positive_fraction": 1.5}, "RetinaNetConfig.loss: ohem_positive_fraction must be a number"),
        ({"ohem_nms_threshold": -0.1}, "RetinaNetConfig.loss: ohem_nms_threshold must be a number"),
    ],
)
def test_config_rejects_bad_values(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LossConfig(**kw)  # type: ignore[arg-type]
