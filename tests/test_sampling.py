"""ohem_sample: the paper's OHEM baseline (Table 1d) for a dense detector."""

from __future__ import annotations

import pytest
import torch

from focal_detect.constants import BACKGROUND, IGNORE
from focal_detect.sampling import ohem_sample


def _reference(losses: torch.Tensor, labels: torch.Tensor, size: int, frac: float | None) -> torch.Tensor:
    """Plain per-image loop: sort candidates by loss (ties: lower index first)."""
    out = torch.zeros(labels.shape, dtype=torch.bool)
    for b in range(labels.shape[0]):

        def top(idx: list[int], k: int) -> list[int]:
            return sorted(idx, key=lambda i: (-float(losses[b, i]), i))[:k]

        n = labels.shape[1]
        if frac is None:
            chosen = top([i for i in range(n) if labels[b, i] != IGNORE], size)
        else:
            fg = [i for i in range(n) if labels[b, i] >= 0]
            bg = [i for i in range(n) if labels[b, i] == BACKGROUND]
            cf = top(fg, min(len(fg), int(frac * size)))
            chosen = cf + top(bg, size - len(cf))
        out[b, chosen] = True
    return out


def _random_case(seed: int, b: int = 3, n: int = 200, k: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    losses = torch.rand(b, n, generator=g)
    labels = torch.full((b, n), BACKGROUND)
    u = torch.rand(b, n, generator=g)
    labels[u < 0.15] = torch.randint(0, k, (b, n), generator=g)[u < 0.15]
    labels[(u >= 0.15) & (u < 0.25)] = IGNORE
    return losses, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("size,frac", [(32, 0.25), (64, 0.5), (16, None), (500, 0.25)])
def test_matches_per_image_loop(seed: int, size: int, frac: float | None) -> None:
    losses, labels = _random_case(seed)
    got = ohem_sample(losses, labels, batch_size_per_image=size, positive_fraction=frac)
    assert torch.equal(got, _reference(losses, labels, size, frac))


def test_ratio_at_most_one_to_three_and_highest_losses_chosen() -> None:
    losses, labels = _random_case(5, b=4, n=400)
    mask = ohem_sample(losses, labels, batch_size_per_image=64, positive_fraction=0.25)
    for b in range(4):
        fg = mask[b] & (labels[b] >= 0)
        bg = mask[b] & (labels[b] == BACKGROUND)
        assert int(fg.sum()) == 16  # plenty of fg: exactly a quarter of 64
        assert int(bg.sum()) == 48  # 1:3
        assert 3 * int(fg.sum()) <= int(bg.sum())
        # Every chosen anchor of a kind has a loss >= every unchosen one of that kind.
        for kind in (labels[b] >= 0, labels[b] == BACKGROUND):
            chosen, rest = losses[b][mask[b] & kind], losses[b][~mask[b] & kind]
            assert chosen.min() >= rest.max()


def test_ignored_anchors_are_never_chosen_even_with_the_highest_loss() -> None:
    losses = torch.tensor([[100.0, 1.0, 2.0, 50.0]])
    labels = torch.tensor([[IGNORE, BACKGROUND, 0, IGNORE]])
    mask = ohem_sample(losses, labels, batch_size_per_image=4, positive_fraction=None)
    assert mask.tolist() == [[False, True, True, False]]


def test_image_without_foreground_gets_only_background() -> None:
    losses = torch.tensor([[0.5, 0.9, 0.1, 0.7], [0.3, 0.2, 0.8, 0.1]])
    labels = torch.tensor([[BACKGROUND] * 4, [0, BACKGROUND, BACKGROUND, BACKGROUND]])
    mask = ohem_sample(losses, labels, batch_size_per_image=2, positive_fraction=0.5)
    # Image 0: no fg, the 2 hardest bg; image 1: its fg (0.3) + the hardest bg (0.8).
    assert mask.tolist() == [[False, True, False, True], [True, False, True, False]]


def test_one_dimensional_input_and_small_images() -> None:
    losses = torch.tensor([0.1, 0.2, 0.3])
    labels = torch.tensor([0, BACKGROUND, 1])
    mask = ohem_sample(losses, labels, batch_size_per_image=128, positive_fraction=0.25)
    assert mask.shape == (3,)
    assert mask.tolist() == [True, True, True]  # fewer anchors than the batch: all
    # fraction 0.25 of 4 = 1 fg at most: the harder one (label 1, loss 0.3).
    mask = ohem_sample(losses, labels, batch_size_per_image=4, positive_fraction=0.25)
    assert mask.tolist() == [False, True, True]


def test_ties_prefer_lower_index() -> None:
    mask = ohem_sample(torch.ones(1, 5), torch.full((1, 5), BACKGROUND), batch_size_per_image=2)
    assert mask.tolist() == [[True, True, False, False, False]]


def test_nms_suppresses_overlapping_lower_loss_anchors() -> None:
    boxes = torch.tensor([[[0.0, 0, 10, 10], [0.0, 0, 10, 9.5], [20.0, 20, 30, 30], [40.0, 40, 50, 50]]])
    losses = torch.tensor([[3.0, 2.0, 1.0, 0.5]])
    labels = torch.full((1, 4), BACKGROUND)
    plain = ohem_sample(losses, labels, batch_size_per_image=2, positive_fraction=None)
    with_nms = ohem_sample(
        losses, labels, batch_size_per_image=2, positive_fraction=None, boxes=boxes, nms_threshold=0.5
    )
    assert plain.tolist() == [[True, True, False, False]]
    assert with_nms.tolist() == [[True, False, True, False]]  # anchor 1 overlaps anchor 0


def test_nms_is_per_image() -> None:
    box = torch.tensor([0.0, 0, 10, 10])
    boxes = box.expand(2, 2, 4).clone()
    losses = torch.tensor([[2.0, 1.0], [1.0, 3.0]])
    labels = torch.full((2, 2), BACKGROUND)
    mask = ohem_sample(
        losses, labels, batch_size_per_image=2, positive_fraction=None, boxes=boxes, nms_threshold=0.5
    )
    assert mask.tolist() == [[True, False], [False, True]]


def test_weights_with_focal_loss_from_labels_equal_the_masked_sum() -> None:
    from focal_detect.losses import sigmoid_focal_loss_from_labels

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 50, 3, generator=g)
    _, labels = _random_case(1, b=2, n=50, k=3)
    per_anchor = sigmoid_focal_loss_from_labels(logits, labels, alpha=None, gamma=0.0).sum(-1)
    mask = ohem_sample(per_anchor, labels, batch_size_per_image=8)
    total = sigmoid_focal_loss_from_labels(
        logits, labels, weights=mask.float(), alpha=None, gamma=0.0, reduction="sum"
    )
    torch.testing.assert_close(total, per_anchor[mask].sum())
    assert int(mask.sum()) == 16


def test_bad_inputs() -> None:
    losses, labels = torch.rand(2, 5), torch.full((2, 5), BACKGROUND)
    with pytest.raises(TypeError, match="ohem_sample: labels must be an integer tensor"):
        ohem_sample(losses, labels.float())
    with pytest.raises(TypeError, match="losses must be a floating-point tensor"):
        ohem_sample(labels, labels)
    with pytest.raises(ValueError, match="losses must have the shape of labels"):
        ohem_sample(losses[:, :4], labels)
    with pytest.raises(ValueError, match="labels must have shape"):
        ohem_sample(losses[None], labels[None])
    with pytest.raises(ValueError, match="batch_size_per_image must be a positive int"):
        ohem_sample(losses, labels, batch_size_per_image=0)
    with pytest.raises(ValueError, match="positive_fraction must be in"):
        ohem_sample(losses, labels, positive_fraction=1.5)
    with pytest.raises(ValueError, match="boxes must be given with nms_threshold"):
        ohem_sample(losses, labels, nms_threshold=0.5)
    with pytest.raises(ValueError, match="boxes must have shape"):
        ohem_sample(losses, labels, boxes=torch.zeros(2, 4, 4), nms_threshold=0.5)
