r"""Augmentation, seeded per-sample randomness and batching for detection data.

Training randomness is a pure function of ``(seed, epoch, index)`` (see
:class:`SeededAugment`), so a run resumed from a checkpoint, a run with several
data-loader workers and a run split over several processes all see exactly the same
augmented samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from focal_detect._checks import check_number, check_tensor

__all__ = [
    "hflip",
    "RandomHorizontalFlip",
    "SeededAugment",
    "collate_detection",
    "sample_seed",
]


def hflip(image: Tensor, target: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
    r"""Mirror an image and its boxes left-right.

    A box :math:`(x_1, y_1, x_2, y_2)` becomes :math:`(W - x_2, y_1, W - x_1, y_2)`.
    Only ``"boxes"`` changes; other keys are copied.

    Shape:
        image: ``(C, H, W)``.
        output: an image ``(C, H, W)``; boxes ``(M, 4)``.

    Args:
        image: ``(C, H, W)`` tensor.
        target: Dict with ``"boxes"`` ``(M, 4)``.

    Returns:
        The flipped image and a new target dict.

    Example:
        >>> img = torch.arange(4.0).reshape(1, 1, 4)
        >>> out, t = hflip(img, {"boxes": torch.tensor([[0.0, 0.0, 1.0, 1.0]])})
        >>> out.flatten().tolist(), t["boxes"].tolist()
        ([3.0, 2.0, 1.0, 0.0], [[3.0, 0.0, 4.0, 1.0]])
    """
    check_tensor("hflip", "image", image)
    if image.ndim != 3:
        raise ValueError(f"hflip: image must have shape (C, H, W), got {tuple(image.shape)}")
    width = image.shape[-1]
    out = dict(target)
    b = target["boxes"]
    out["boxes"] = torch.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], dim=1)
    return image.flip(-1), out


class RandomHorizontalFlip:
    r"""Flip with probability ``p`` (the paper's only augmentation).

    Call as ``transform(image, target, generator)``; ``generator`` (a
    :class:`torch.Generator`) makes the decision reproducible; without it the global
    torch RNG is used.

    Args:
        p: Flip probability in ``[0, 1]``.

    Example:
        >>> flip = RandomHorizontalFlip(p=1.0)
        >>> _, t = flip(torch.zeros(3, 2, 10), {"boxes": torch.tensor([[1.0, 0.0, 3.0, 2.0]])})
        >>> t["boxes"].tolist()
        [[7.0, 0.0, 9.0, 2.0]]
    """

    def __init__(self, p: float = 0.5) -> None:
        self.p = check_number("RandomHorizontalFlip", "p", p, low=0.0, high=1.0)

    def __call__(
        self, image: Tensor, target: dict[str, Any], generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Any]]:
        if float(torch.rand((), generator=generator)) < self.p:
            return hflip(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


def sample_seed(seed: int, epoch: int, index: int) -> int:
    r"""A 63-bit seed mixed from ``(seed, epoch, index)`` (SplitMix64 finaliser).

    Example:
        >>> sample_seed(0, 0, 1) != sample_seed(0, 1, 0), sample_seed(3, 2, 1) == sample_seed(3, 2, 1)
        (True, True)
    """
    x = 0
    for v in (seed, epoch, index):
        x = (x ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 30
        x = x * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 27
        x = x * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


class SeededAugment(Dataset):
    r"""Apply a random transform whose randomness depends only on ``(seed, epoch, index)``.

    The wrapped transform is called as ``transform(image, target, generator)`` with a
    fresh :class:`torch.Generator` seeded by :func:`sample_seed`. Call
    :meth:`set_epoch` at the start of each epoch (the trainer does).

    Args:
        dataset: Dataset returning ``(image, target)``.
        transform: Callable ``(image, target, generator) -> (image, target)``, e.g.
            :class:`RandomHorizontalFlip`.
        seed: Augmentation seed.

    Example:
        >>> base = [(torch.zeros(1, 1, 2), {"boxes": torch.tensor([[0.0, 0.0, 1.0, 1.0]])})]
        >>> aug = SeededAugment(base, RandomHorizontalFlip(0.5), seed=0)
        >>> a = aug[0][1]["boxes"]; b = aug[0][1]["boxes"]
        >>> torch.equal(a, b)
        True
    """

    def __init__(
        self,
        dataset: Dataset | Sequence[Any],
        transform: Callable[[Tensor, dict[str, Any], torch.Generator], tuple[Tensor, dict[str, Any]]],
        seed: int = 0,
    ) -> None:
        if not callable(transform):
            raise TypeError(f"SeededAugment: transform must be callable, got {type(transform).__name__}")
        self.dataset = dataset
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose randomness the next items use.

        Example:
            >>> aug = SeededAugment([], RandomHorizontalFlip(), seed=1); aug.set_epoch(3); aug.epoch
            3
        """
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        image, target = self.dataset[index]
        gen = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, int(index)))
        return self.transform(image, target, gen)

    def __getattr__(self, name: str) -> Any:
        # Expose the wrapped dataset's metadata (class_names, category_ids, to_coco, ...).
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


def collate_detection(
    batch: Sequence[tuple[Tensor, dict[str, Any]]],
) -> tuple[list[Tensor], list[dict[str, Any]]]:
    r"""Batch ``(image, target)`` pairs as the torchvision detection interface wants.

    Images may differ in size, so they are returned as a list (the model pads them).

    Shape:
        batch: ``B`` images ``(C, H_i, W_i)`` with their targets.
        output: lists of length ``B``.

    Args:
        batch: Sequence of ``B`` pairs ``(image (C, H_i, W_i), target dict)``.

    Returns:
        ``(images, targets)``: two lists of length ``B``.

    Example:
        >>> imgs, tgts = collate_detection([(torch.zeros(3, 4, 4), {"image_id": 0}),
        ...                                 (torch.zeros(3, 5, 6), {"image_id": 1})])
        >>> [tuple(i.shape) for i in imgs], [t["image_id"] for t in tgts]
        ([(3, 4, 4), (3, 5, 6)], [0, 1])
    """
    if len(batch) == 0:
        raise ValueError("collate_detection: batch must hold at least one sample, got 0")
    images, targets = [], []
    for i, item in enumerate(batch):
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise TypeError(
                f"collate_detection: batch[{i}] must be an (image, target) pair, got {type(item).__name__}"
            )
        images.append(item[0])
        targets.append(item[1])
    return images, targets
