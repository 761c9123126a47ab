r"""The windowed evidence of :func:`~focal_detect.matching.assign_anchors` on an anchor grid.

With the layout of :class:`~focal_detect.anchors.Anchors` the (box, anchor) pairs that can
decide a match are found analytically: for each box and cell anchor the grid window where
the IoU can reach :math:`t = \min(t_\mathrm{low}, \ell)` (:math:`\ell` the IoU of a probe
anchor, a lower bound of the box's highest IoU) follows from
:math:`\mathrm{IoU} \ge t \iff I \ge \tfrac{t}{1+t}(|a| + |g|)` with
:math:`I = I_x I_y`, :math:`I_x \le \min(w_a, w_g)`, :math:`I_y \le \min(h_a, h_g)`.
The candidates' IoUs are computed exactly (``matching.pairs.iou_pairs``),
the pairs below their box's :math:`t` dropped, and the rest handed to
:func:`~focal_detect.matching.rules.decide_matches`, with the exact arg-max over all boxes
for the anchors a low-quality claim needs it for. A wider window never changes the result.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from focal_detect.anchors import AnchorLevel
from focal_detect.constants import BACKGROUND
from focal_detect.matching.dense import Batch
from focal_detect.matching.pairs import ioa_pairs, iou_pairs
from focal_detect.matching.rules import MatchRules, decide_matches

__all__ = []

# Planned bytes per candidate (box, anchor) pair while the candidates of one group are
# evaluated: a dozen int64 / float temporaries per pair.
_SPARSE_BYTES_PER_PAIR = 256
# Bytes per kept pair (box, key, IoU and their inverse index) and per distinct anchor
# (best, arg-max, codes, masks), held while the claimed anchors' arg-max is computed.
_KEPT_BYTES_PER_PAIR = 40
_BYTES_PER_KEY = 64
# Safety margins of the analytic windows. Coordinates are rounded to the anchors'
# dtype (float32 error < 1e-3 px below 10^4 px), so a quarter of a stride and a
# relative 1e-4 on the IoU threshold are far more than needed; the exact IoU of every
# candidate is then computed and tested, so a wider window never changes the result.
_WINDOW_MARGIN = 0.25
_THRESHOLD_SLACK = 1e-4


class Grid:
    """The cells (level, cell anchor) of an anchor grid, as device tensors."""

    def __init__(self, anc: Tensor, levels: Sequence[AnchorLevel]) -> None:
        dev = anc.device
        starts, hs, ws, sys_, sxs, an = [], [], [], [], [], []
        for lv in levels:
            a = lv.num_anchors_per_location
            for j in range(a):
                starts.append(lv.start + j)
                hs.append(lv.height)
                ws.append(lv.width)
                sys_.append(float(lv.stride_h))
                sxs.append(float(lv.stride_w))
                an.append(a)
        self.start = torch.tensor(starts, dtype=torch.int64, device=dev)
        self.h = torch.tensor(hs, dtype=torch.int64, device=dev)
        self.w = torch.tensor(ws, dtype=torch.int64, device=dev)
        self.a = torch.tensor(an, dtype=torch.int64, device=dev)
        # per-axis strides (torchvision derives e.g. 61 x 64 at P6 for 800 x 1088)
        self.stride_y = torch.tensor(sys_, dtype=anc.dtype, device=dev)
        self.stride_x = torch.tensor(sxs, dtype=anc.dtype, device=dev)
        self.base = anc[self.start]  # anchor at (y, x) = (0, 0) of each cell

    def windows(self, boxes: Tensor, need: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Grid windows, per (box, cell), of anchors whose intersection with the box can
        reach ``need`` (``(K, P)`` required intersection area; 0 means "any overlap").

        Returns ``x_lo``, ``y_lo``, ``nx``, ``ny`` of shape ``(K, P)`` (``nx * ny`` = 0
        for an empty window).
        """
        base, sx, sy = self.base[None], self.stride_x[None], self.stride_y[None]
        bw = base[..., 2] - base[..., 0]
        bh = base[..., 3] - base[..., 1]
        gw = (boxes[:, 2] - boxes[:, 0])[:, None]
        gh = (boxes[:, 3] - boxes[:, 1])[:, None]
        mx = torch.minimum(bw, gw)
        my = torch.minimum(bh, gh)
        pos = need > 0
        # Minimum overlap along x (y) so that I_x * I_y >= need with I_y <= my (I_x <= mx).
        cx = torch.where(pos, need / my, torch.zeros_like(need))
        cy = torch.where(pos, need / mx, torch.zeros_like(need))
        slack = 1.0 + _THRESHOLD_SLACK
        feasible = (cx <= mx * slack + 1e-6) & (cy <= my * slack + 1e-6)
        gx1, gy1, gx2, gy2 = (boxes[:, k, None] for k in range(4))
        w_max = (self.w - 1).to(boxes.dtype)[None]
        h_max = (self.h - 1).to(boxes.dtype)[None]
        # anchor x-range at column x: [bx1 + x sx, bx2 + x sx]; need x-overlap >= cx.
        x_lo = ((gx1 + cx - base[..., 2]) / sx - _WINDOW_MARGIN).ceil().clamp(min=0).minimum(w_max + 1)
        x_hi = ((gx2 - cx - base[..., 0]) / sx + _WINDOW_MARGIN).floor().clamp(min=-1).minimum(w_max)
        y_lo = ((gy1 + cy - base[..., 3]) / sy - _WINDOW_MARGIN).ceil().clamp(min=0).minimum(h_max + 1)
        y_hi = ((gy2 - cy - base[..., 1]) / sy + _WINDOW_MARGIN).floor().clamp(min=-1).minimum(h_max)
        # NaN (0/0 from a zero-size box with need > 0) is infeasible: IoU is 0 there.
        feasible &= ~(cx.isnan() | cy.isnan())
        x_lo = torch.nan_to_num(x_lo).to(torch.int64)
        y_lo = torch.nan_to_num(y_lo).to(torch.int64)
        nx = (torch.nan_to_num(x_hi, nan=-1.0).to(torch.int64) - x_lo + 1).clamp_(min=0)
        ny = (torch.nan_to_num(y_hi, nan=-1.0).to(torch.int64) - y_lo + 1).clamp_(min=0)
        nx = nx.masked_fill_(~feasible, 0)
        return x_lo, y_lo, nx, ny

    def probe(self, boxes: Tensor) -> Tensor:
        """Flat index ``(K, P)`` of each cell's anchor whose centre is nearest the box's."""
        base = self.base[None]
        sx, sy = self.stride_x[None], self.stride_y[None]
        gcx = ((boxes[:, 0] + boxes[:, 2]) / 2)[:, None]
        gcy = ((boxes[:, 1] + boxes[:, 3]) / 2)[:, None]
        acx = (base[..., 0] + base[..., 2]) / 2
        acy = (base[..., 1] + base[..., 3]) / 2
        w_max = (self.w - 1).to(boxes.dtype)[None]
        h_max = (self.h - 1).to(boxes.dtype)[None]
        x = ((gcx - acx) / sx).round().clamp(min=0).minimum(w_max).to(torch.int64)
        y = ((gcy - acy) / sy).round().clamp(min=0).minimum(h_max).to(torch.int64)
        return self.start[None] + (y * self.w[None] + x) * self.a[None]

    def candidates(
        self, x_lo: Tensor, y_lo: Tensor, nx: Tensor, ny: Tensor, budget_pairs: int
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield ``(row, anchor)`` index pairs of every window, in bounded groups."""
        p = self.start.numel()
        count = (nx * ny).flatten()
        combo = count.nonzero().flatten()
        if combo.numel() == 0:
            return
        cnt = count[combo]
        ends = torch.cumsum(cnt, 0)
        total = int(ends[-1])
        # group boundaries so that each group evaluates <= budget_pairs candidates
        if total <= budget_pairs:
            bounds = [(0, combo.numel())]
        else:
            cuts = torch.searchsorted(
                ends, torch.arange(budget_pairs, total, budget_pairs, device=ends.device), right=True
            ).tolist()
            edges = sorted(set([0] + [c for c in cuts if 0 < c < combo.numel()] + [combo.numel()]))
            bounds = list(zip(edges[:-1], edges[1:]))
        # Per non-empty window: its box row, first anchor index, row stride (W * A),
        # column stride (A) and width; each candidate then costs a few gathers.
        row_c = torch.div(combo, p, rounding_mode="floor")
        cell = combo - row_c * p
        a_c = self.a[cell]
        wa_c = self.w[cell] * a_c
        nx_c = nx.flatten()[combo]
        base_c = self.start[cell] + y_lo.flatten()[combo] * wa_c + x_lo.flatten()[combo] * a_c
        for c0, c1 in bounds:
            cn = cnt[c0:c1]
            tg = int(ends[c1 - 1] - (ends[c0 - 1] if c0 else 0))
            local = torch.repeat_interleave(torch.arange(c0, c1, device=cn.device), cn, output_size=tg)
            first = (ends[c0:c1] - cn)[local - c0]
            off = torch.arange(tg, device=cn.device).add_(ends[c0 - 1] if c0 else 0).sub_(first)
            w = nx_c[local]
            q = torch.div(off, w, rounding_mode="floor")
            idx = base_c[local] + q * wa_c[local] + (off - q * w) * a_c[local]
            yield row_c[local], idx


def probe_iou(grid: Grid, anc: Tensor, gt: Tensor) -> Tensor:
    """``(G,)`` IoU of each box with its probe anchors (the cell anchor nearest its centre,
    per cell): a lower bound of the box's highest IoU."""
    if gt.shape[0] == 0:
        return gt.new_zeros(0)
    return iou_pairs(gt[:, None, :], anc[grid.probe(gt)]).amax(dim=1)


def _match_pairs(ctx: Batch, grid: Grid, rows: Tensor, thr: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Global box index, flat key ``b * N + n`` and IoU of every pair of the boxes
    ``rows`` with IoU > 0 and >= their ``thr``."""
    anc, gt = ctx.anc, ctx.gt[rows]
    area_g = ((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]))[:, None]
    base = grid.base
    area_a = ((base[:, 2] - base[:, 0]) * (base[:, 3] - base[:, 1]))[None]
    t = (thr * (1.0 - _THRESHOLD_SLACK))[:, None]
    x_lo, y_lo, nx, ny = grid.windows(gt, t / (1.0 + t) * (area_a + area_g))
    # Half the budget for the candidate groups, half for the arg-max of the claims:
    # memory the allocator keeps from the groups' temporaries cannot serve the other.
    budget_pairs = max(1, ctx.budget // 2 // _SPARSE_BYTES_PER_PAIR)
    out_rows, keys, vals = [], [], []
    for row, idx in grid.candidates(x_lo, y_lo, nx, ny, budget_pairs):
        iou = iou_pairs(gt[row], anc[idx])
        keep = (iou > 0) & (iou >= thr[row])
        row, idx = rows[row[keep]], idx[keep]
        out_rows.append(row)
        keys.append(ctx.img_of_gt[row] * ctx.n + idx)
        vals.append(iou[keep])
    if not keys:
        empty = torch.zeros(0, dtype=torch.int64, device=ctx.device)
        return empty, empty, gt.new_zeros(0)
    return torch.cat(out_rows), torch.cat(keys), torch.cat(vals)


def _crowd_pairs(ctx: Batch, grid: Grid, rows: Tensor, thr: float) -> tuple[Tensor, Tensor]:
    """Flat key and IoA of every candidate pair of the crowd boxes ``rows`` (windows
    where the IoA can reach ``thr``), IoA > 0."""
    assert ctx.crowd is not None
    crowd, anc, n = ctx.crowd[rows], ctx.anc, ctx.n
    counts = torch.tensor(ctx.crowd_counts, dtype=torch.int64, device=ctx.device)
    img_of_crowd = torch.repeat_interleave(torch.arange(ctx.b, device=ctx.device), counts)[rows]
    base = grid.base
    area_a = ((base[:, 2] - base[:, 0]) * (base[:, 3] - base[:, 1]))[None]
    need = (thr * (1.0 - _THRESHOLD_SLACK)) * area_a.expand(crowd.shape[0], -1)
    x_lo, y_lo, nx, ny = grid.windows(crowd, need)
    keys, vals = [torch.zeros(0, dtype=torch.int64, device=ctx.device)], [crowd.new_zeros(0)]
    for row, idx in grid.candidates(x_lo, y_lo, nx, ny, max(1, ctx.budget // _SPARSE_BYTES_PER_PAIR)):
        ioa = ioa_pairs(anc[idx], crowd[row])
        keep = ioa > 0
        keys.append(img_of_crowd[row[keep]] * n + idx[keep])
        vals.append(ioa[keep])
    return torch.cat(keys), torch.cat(vals)


def windowed_codes(
    ctx: Batch,
    grid: Grid,
    rules: MatchRules,
    rows: Tensor,
    lower_bound: Tensor | None,
    crowd_rows: Tensor | None,
    crowd_thr: float | None,
) -> tuple[Tensor, Tensor]:
    """Flat keys and global codes of the non-``BACKGROUND`` anchors of the images of the
    boxes ``rows`` (and crowd boxes ``crowd_rows``), exactly as the dense path.

    Requires ``low_threshold > 0`` and, with the guard off, boxes of positive highest
    IoU (``lower_bound > 0``): a box overlapping nothing claims its whole image, which
    only the dense path evaluates.
    """
    thr = torch.full((rows.numel(),), rules.low, dtype=ctx.gt.dtype, device=ctx.device)
    if lower_bound is not None:
        thr = torch.minimum(thr, lower_bound)
    row, key, iou = _match_pairs(ctx, grid, rows, thr)
    p = key.numel()
    use_crowd = crowd_rows is not None and crowd_thr is not None and crowd_rows.numel() > 0
    if use_crowd:
        assert crowd_rows is not None and crowd_thr is not None
        ckey, cioa = _crowd_pairs(ctx, grid, crowd_rows, crowd_thr)
        key = torch.cat((key, ckey))
    # The distinct anchors with any candidate; all others have best IoU < low: BACKGROUND.
    ukey, inv = torch.unique(key, return_inverse=True)
    inv_m = inv[:p]
    best = iou.new_zeros(ukey.numel()).scatter_reduce_(0, inv_m, iou, "amax")
    win = iou == best[inv_m]
    best_box = torch.full_like(ukey, ctx.g).scatter_reduce_(0, inv_m[win], row[win], "amin")
    box_best = iou.new_zeros(ctx.g).scatter_reduce_(0, row, iou, "amax")
    crowd_ioa = iou.new_zeros(ukey.numel()).scatter_reduce_(0, inv[p:], cioa, "amax") if use_crowd else None
    held = p * _KEPT_BYTES_PER_PAIR + ukey.numel() * _BYTES_PER_KEY + ctx.budget // 2

    def exact_argmax(anchors: Tensor) -> Tensor:
        return ctx.dense_argmax(ukey[anchors], reserved=held)

    codes = decide_matches(
        rules,
        best,
        best_box,
        box_best,
        row,
        inv_m,
        iou,
        crowd_ioa=crowd_ioa,
        crowd_ioa_threshold=crowd_thr,
        exact_argmax=exact_argmax,
    )
    keep = codes != BACKGROUND
    return ukey[keep], codes[keep]
