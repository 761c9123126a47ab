"""The dense evidence of :func:`~focal_detect.matching.assign_anchors`: the fallback for
anchors that are not a grid (a plain ``(N, 4)`` tensor), one image at a time.

For each image the IoU of its boxes with the anchors is written, chunk by chunk of
anchors, into one preallocated ``matching.pairs.Workspace`` (reused by
every chunk and image: no page faults after the first, no allocator fragmentation),
reduced to each anchor's best IoU and arg-max and each box's highest IoU, and the pairs
at a box's highest IoU are extracted; :func:`~focal_detect.matching.rules.decide_matches`
then decides the whole batch at once. The chunk size is planned in bytes
(:func:`plan_dense`): with the default budget an image's whole IoU matrix is one chunk up
to a few thousand boxes on an 800-px pyramid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from focal_detect.constants import BACKGROUND
from focal_detect.matching.pairs import Workspace, ioa_pairs, iou_grid_into, iou_pairs, pair_bytes
from focal_detect.matching.rules import MatchRules, claiming_boxes, decide_matches

__all__ = []

# Bytes per anchor of the batch-wide arrays alive while the images are evaluated and
# decided: best IoU and crowd IoA (floats), arg-max (int64), and decide_matches' codes,
# where-results and masks (three int64, four bool).
_INT64_PER_ANCHOR = 4
_BOOLS_PER_ANCHOR = 4
# Bytes per (box, anchor) pair of the exact arg-max over all boxes of an image (the
# gathered boxes and the IoU temporaries), as a multiple of the float item size.
_ARGMAX_FLOATS_PER_PAIR = 8


class Plan(NamedTuple):
    per: int  # anchors per chunk
    workspace_bytes: int  # the preallocated buffers
    total_bytes: int  # planned peak: workspace + everything else counted


def _fixed_bytes(k: int, itemsize: int) -> int:
    return k * (2 * itemsize + 8 * _INT64_PER_ANCHOR + _BOOLS_PER_ANCHOR)


def plan_dense(k: int, m: int, n: int, itemsize: int, budget: int) -> Plan:
    """Anchors per chunk so that the evaluation of ``m`` boxes against ``n`` anchors, with
    ``k`` batch-wide anchor slots, fits ``budget`` bytes.

    Counted: the workspace (``m * per`` pairs, ``matching.pairs.pair_bytes``
    each), the chunk's per-anchor maxima and indices, the per-chunk box maxima
    ``(chunks, m)`` and the batch-wide per-anchor arrays. Not counted: the inputs, the
    outputs and the extracted pairs at the boxes' highest IoU (a few per box). ``per >= 1``
    even if the fixed arrays alone exceed the budget.
    """
    m = max(m, 1)
    fixed = _fixed_bytes(k, itemsize)
    per_anchor = m * pair_bytes(itemsize) + itemsize + 8

    def total(per: int) -> int:
        return fixed + per * per_anchor + math.ceil(n / per) * m * (itemsize + 1)

    per = max(1, min(n, (budget - fixed) // per_anchor))
    while per > 1 and total(per) > budget:
        per -= per // 64 + 1
    per = max(1, per)
    return Plan(per, m * per * pair_bytes(itemsize), total(per))


class Batch:
    """The concatenated ground truth of a batch (boxes of image ``b`` are consecutive)."""

    def __init__(
        self,
        anc: Tensor,
        gt: Tensor,
        counts: list[int],
        crowd: Tensor | None,
        crowd_counts: list[int],
        budget: int,
    ) -> None:
        dev = anc.device
        self.anc, self.gt, self.crowd, self.budget = anc, gt, crowd, budget
        self.counts, self.crowd_counts = counts, crowd_counts
        self.b, self.n, self.g = len(counts), anc.shape[0], gt.shape[0]
        self.device = dev
        self.first = [sum(counts[:i]) for i in range(len(counts))]
        self.crowd_first = [sum(crowd_counts[:i]) for i in range(len(crowd_counts))]
        counts_t = torch.tensor(counts, dtype=torch.int64, device=dev)
        self.offsets = torch.cumsum(counts_t, 0) - counts_t  # first global box index per image
        self.img_of_gt = torch.repeat_interleave(
            torch.arange(self.b, device=dev), counts_t, output_size=self.g
        )
        self._cols: tuple[Tensor, Tensor] | None = None

    def anchor_columns(self) -> tuple[Tensor, Tensor]:
        """``(4, N)`` contiguous anchor coordinates and ``(N,)`` areas, built once."""
        if self._cols is None:
            a = self.anc
            self._cols = (a.T.contiguous(), (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))
        return self._cols

    def dense_argmax(self, keys: Tensor, reserved: int = 0) -> Tensor:
        """Global index of the best box (lowest on ties) of flat anchors ``b * N + n``,
        over all boxes of the anchor's image; ``reserved`` bytes are held by the caller."""
        out = torch.empty_like(keys)
        m = max(self.counts, default=0)
        if keys.numel() == 0 or m == 0:
            return out.fill_(0)
        boxes, valid = _pad(self.gt, self.counts, m)
        per_key = m * _ARGMAX_FLOATS_PER_PAIR * self.anc.element_size()
        per = max(1, (self.budget - reserved) // per_key)
        for s in range(0, keys.numel(), per):
            k = keys[s : s + per]
            img = torch.div(k, self.n, rounding_mode="floor")
            iou = iou_pairs(boxes[img], self.anc[k - img * self.n][:, None, :])  # (K, M)
            iou.masked_fill_(~valid[img], -1.0)
            out[s : s + per] = iou.max(dim=1).indices + self.offsets[img]
        return out


def _pad(cat: Tensor, counts: list[int], m: int) -> tuple[Tensor, Tensor]:
    """Concatenated per-image boxes to ``(B, m, 4)`` zeros-padded boxes and a mask."""
    b, dev = len(counts), cat.device
    counts_t = torch.tensor(counts, dtype=torch.int64, device=dev)
    img = torch.repeat_interleave(torch.arange(b, device=dev), counts_t, output_size=cat.shape[0])
    slot = torch.arange(cat.shape[0], device=dev) - (torch.cumsum(counts_t, 0) - counts_t)[img]
    boxes = cat.new_zeros((b, m, 4))
    valid = torch.zeros((b, m), dtype=torch.bool, device=dev)
    boxes[img, slot] = cat
    valid[img, slot] = True
    return boxes, valid


class _Pairs:
    """Candidate (box, anchor) pairs collected over the images."""

    def __init__(self) -> None:
        self.box: list[Tensor] = []
        self.anchor: list[Tensor] = []
        self.quality: list[Tensor] = []

    def add_at_highest(self, iou: Tensor, highest: Tensor, rows: Tensor, mask: Tensor, box0: int, key0: int):
        """The pairs of an ``(r, c)`` IoU chunk equal to their box's ``highest``;
        ``rows`` are the chunk rows' box indices (from ``box0``), ``key0`` the column 0 key."""
        torch.eq(iou, highest[:, None], out=mask)
        r, c = mask.nonzero(as_tuple=True)
        self.box.append(rows[r] + box0)
        self.anchor.append(c + key0)
        self.quality.append(highest[r])

    def cat(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if not self.box:
            empty = torch.zeros(0, dtype=torch.int64, device=like.device)
            return empty, empty, like.new_zeros(0)
        return torch.cat(self.box), torch.cat(self.anchor), torch.cat(self.quality)


def _image_evidence(
    ctx: Batch,
    rules: MatchRules,
    ws: Workspace,
    per: int,
    i: int,
    out: tuple[Tensor, Tensor, Tensor],
    pairs: _Pairs,
    key0: int,
) -> None:
    """Best IoU / arg-max of image ``i``'s anchors into ``out = (best, best_box,
    box_best)`` (views) and, with low-quality matching, its pairs at the boxes' highest."""
    best, best_box, box_best = out
    n, g0, m = ctx.n, ctx.first[i], ctx.counts[i]
    gt = ctx.gt[g0 : g0 + m]
    chunks = [(s, min(s + per, n)) for s in range(0, n, per)]
    cols, area = ctx.anchor_columns()
    maxima = []
    for s, e in chunks:
        iou = iou_grid_into(gt, cols[:, s:e], area[s:e], ws)
        v, a = iou.max(dim=0)
        best[s:e] = v
        best_box[s:e] = a
        if rules.low_quality:
            maxima.append(iou.amax(dim=1))
    best_box.add_(g0)
    if not rules.low_quality:
        return
    highest = maxima[0] if len(maxima) == 1 else torch.stack(maxima).amax(dim=0)
    box_best[g0 : g0 + m] = highest
    may = claiming_boxes(rules, highest)
    rows = torch.arange(m, device=ctx.device)
    if len(chunks) == 1:  # the IoU is still in the workspace
        mask = ws.views(iou.shape)[3]
        pairs.add_at_highest(iou, highest.masked_fill(~may, math.nan), rows, mask, g0, key0)
        return
    holds = (torch.stack(maxima) == highest) & may  # (chunks, m): revisit only these
    for c in holds.any(dim=1).nonzero().flatten().tolist():
        sub = holds[c].nonzero().flatten()
        s, e = chunks[c]
        iou = iou_grid_into(gt[sub], cols[:, s:e], area[s:e], ws)
        pairs.add_at_highest(iou, highest[sub], sub, ws.views(iou.shape)[3], g0, key0 + s)


def _crowd_evidence(ctx: Batch, i: int, out: Tensor, per: int) -> None:
    """Largest IoA of each anchor with image ``i``'s crowd boxes, into ``out`` ``(N,)``."""
    c0, c = ctx.crowd_first[i], ctx.crowd_counts[i]
    assert ctx.crowd is not None
    crowd = ctx.crowd[c0 : c0 + c]
    for s in range(0, ctx.n, per):
        out[s : s + per] = ioa_pairs(ctx.anc[None, s : s + per, :], crowd[:, None, :]).amax(dim=0)


def dense_codes(
    ctx: Batch, images: Sequence[int], rules: MatchRules, crowd_thr: float | None
) -> tuple[Tensor, Tensor]:
    """Flat keys ``b * N + n`` and global codes of the non-``BACKGROUND`` anchors of
    ``images``, from the dense IoU of each image (bit for bit
    ``match_anchors(box_iou(gt_boxes[b], anchors))`` plus the crowd rule)."""
    n, dev, itemsize = ctx.n, ctx.device, ctx.anc.element_size()
    imgs = list(images)
    k = len(imgs) * n
    m_max = max((ctx.counts[i] for i in imgs), default=0)
    plan = plan_dense(k, m_max, n, itemsize, ctx.budget)
    ws = Workspace(plan.workspace_bytes // pair_bytes(itemsize), ctx.anc.dtype, dev)
    best = ctx.anc.new_full((k,), -math.inf)  # no box: below every threshold
    best_box = torch.zeros(k, dtype=torch.int64, device=dev)
    box_best = ctx.anc.new_zeros(ctx.g)
    use_crowd = crowd_thr is not None and ctx.crowd is not None
    crowd_ioa = ctx.anc.new_zeros(k) if use_crowd else None
    pairs = _Pairs()
    for j, i in enumerate(imgs):
        sl = slice(j * n, (j + 1) * n)
        if ctx.counts[i]:
            _image_evidence(ctx, rules, ws, plan.per, i, (best[sl], best_box[sl], box_best), pairs, j * n)
    del ws
    for j, i in enumerate(imgs):
        if crowd_ioa is not None and ctx.crowd_counts[i]:
            sl = slice(j * n, (j + 1) * n)
            per = plan_dense(k, ctx.crowd_counts[i], n, itemsize, ctx.budget).per
            _crowd_evidence(ctx, i, crowd_ioa[sl], per)
    codes = decide_matches(
        rules, best, best_box, box_best, *pairs.cat(best), crowd_ioa=crowd_ioa, crowd_ioa_threshold=crowd_thr
    )
    local = (codes != BACKGROUND).nonzero().flatten()
    slot = torch.div(local, n, rounding_mode="floor")
    img = torch.tensor(imgs, dtype=torch.int64, device=dev)[slot]
    return img * n + (local - slot * n), codes[local]
