"""Reproduce the focal loss paper's experiments in miniature, on a CPU.

Run from the repository root:

    python benchmarks/reproduce_paper.py                  # the study (tens of minutes)
    python benchmarks/reproduce_paper.py --smoke          # seconds; numbers mean nothing
    python benchmarks/reproduce_paper.py --jobs 2 --threads 1 --steps 300 --seeds 0 1

Every run trains the small CPU configuration of ``focal-detect demo`` (ResNet-18 of
width 16, 64-channel FPN and heads with GroupNorm, 128 px synthetic shapes, AdamW) from
the same initial weights and the same data order (per seed), changing only the
classification loss or the initialisation, and reports the COCO box AP on held-out
images. The experiments:

* ``sec51``  Sec. 5.1: cross entropy with and without the prior-probability bias
  initialisation (with the demo's optimiser, and a short run with the paper's SGD
  lr 0.01 without clipping): the loss in the first iterations, divergence (NaN), AP.
* ``table1a`` alpha-balanced CE (gamma = 0) for alpha in {.25, .5, .75, .9, .99}.
* ``table1b`` FL for (gamma, alpha) in {(0, .75), (.5, .5), (1, .25), (2, .25), (5, .25)}.
* ``table1d`` OHEM (CE on each image's 128 highest-loss anchors, at most 1:3 fg:bg,
  NMS 0.5 on the anchors with the loss as the score) vs FL (2, .25).
* ``appendixA`` FL* at (gamma, beta) = (2, 1) and (4, 0) vs FL.
* ``figure4`` cumulative distribution of the normalised loss of the FL (2, .25) model
  on held-out images, for gamma in {0, .5, 1, 2} (:func:`focal_detect.analysis.focal_loss_cdf`).

Identical settings are trained once and shared between tables (CE with alpha = .75 is
also Table 1b's gamma = 0 row; FL (2, .25) is the reference of 1d, A and Figure 4).
Results are printed beside the paper's numbers and written as JSON (``--out``); the
Figure 4 plot goes to ``--plot``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch

# ----------------------------------------------------------------------------- settings

#: The paper's numbers (COCO, ResNet-50-FPN-600 unless said; /work/shared/PAPER.md).
PAPER = {
    "table1a": {0.25: 10.8, 0.5: 30.2, 0.75: 31.1, 0.9: 30.8, 0.99: 28.7},
    "table1b": {(0.0, 0.75): 31.1, (0.5, 0.5): 32.9, (1.0, 0.25): 33.7, (2.0, 0.25): 34.0, (5.0, 0.25): 32.2},
    # ResNet-101-FPN: best OHEM (1:3 or not, batch 128, NMS .5) vs FL.
    "table1d": {"ohem": 32.8, "fl": 36.0},
}


@dataclasses.dataclass(frozen=True)
class Spec:
    """One training run: a name, RetinaNetConfig changes (``"group.field"`` keys) and optimiser choice."""

    name: str
    model: tuple[tuple[str, Any], ...]
    optimizer: str = "demo"  # "demo" (AdamW, clipping, cosine) or "paper_sgd"
    steps_factor: float = 1.0  # fraction of --steps
    cdf: bool = False  # compute Figure 4 on this run's model


def _spec(
    name: str, optimizer: str = "demo", steps_factor: float = 1.0, cdf: bool = False, **model: Any
) -> Spec:
    return Spec(name, tuple(sorted(model.items())), optimizer, steps_factor, cdf)


CE = {"loss.gamma": 0.0, "loss.alpha": None}
NO_PRIOR = {"head.prior": 0.5}  # bias 0: p = 0.5 for every anchor at the start


def _fl(gamma: float, alpha: float | None, **kw: Any) -> Spec:
    return _spec(f"fl_g{gamma:g}_a{alpha}", **{"loss.gamma": gamma, "loss.alpha": alpha}, **kw)


def _nested(pairs: Any) -> dict[str, dict[str, Any]]:
    """``{"loss.gamma": 0.0}`` -> ``{"loss": {"gamma": 0.0}}`` (RetinaNetConfig.replace's form)."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in pairs:
        group, name = key.split(".")
        out.setdefault(group, {})[name] = value
    return out


SPECS: dict[str, Spec] = {
    s.name: s
    for s in [
        _spec("ce_prior", **CE),
        _spec("ce_no_prior", **CE, **NO_PRIOR),
        _spec("sgd_ce_prior", optimizer="paper_sgd", steps_factor=0.25, **CE),
        _spec("sgd_ce_no_prior", optimizer="paper_sgd", steps_factor=0.25, **CE, **NO_PRIOR),
        *[_fl(0.0, a) for a in (0.25, 0.5, 0.75, 0.9, 0.99)],
        _fl(0.5, 0.5),
        _fl(1.0, 0.25),
        _fl(2.0, 0.25, cdf=True),
        _fl(5.0, 0.25),
        _spec(
            "ohem_1to3_nms0.5",
            **{
                "loss.cls_loss": "ohem",
                "loss.ohem_batch_size_per_image": 128,
                "loss.ohem_positive_fraction": 0.25,
                "loss.ohem_nms_threshold": 0.5,
            },
            **CE,
        ),
        _spec(
            "flstar_g2_b1",
            **{
                "loss.cls_loss": "focal_star",
                "loss.star_gamma": 2.0,
                "loss.star_beta": 1.0,
                "loss.alpha": None,
            },
        ),
        _spec(
            "flstar_g4_b0",
            **{
                "loss.cls_loss": "focal_star",
                "loss.star_gamma": 4.0,
                "loss.star_beta": 0.0,
                "loss.alpha": None,
            },
        ),
    ]
}

EXPERIMENTS: dict[str, list[str]] = {
    "sec51": ["ce_no_prior", "ce_prior", "sgd_ce_no_prior", "sgd_ce_prior"],
    "table1a": [f"fl_g0_a{a}" for a in (0.25, 0.5, 0.75, 0.9, 0.99)],
    "table1b": ["fl_g0_a0.75", "fl_g0.5_a0.5", "fl_g1_a0.25", "fl_g2_a0.25", "fl_g5_a0.25"],
    "table1d": ["ohem_1to3_nms0.5", "fl_g2_a0.25"],
    "appendixA": ["flstar_g2_b1", "flstar_g4_b0", "fl_g2_a0.25"],
    "figure4": ["fl_g2_a0.25"],
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Data, model and optimiser settings shared by every run."""

    preset: str = "demo"
    model_overrides: tuple[tuple[str, Any], ...] = ()
    image_size: int = 128
    train_images: int = 600
    val_images: int = 150
    batch_size: int = 4
    steps: int = 400
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_iters: int = 50
    warmup_factor: float = 0.1
    clip_grad_norm: float = 10.0
    sgd_lr: float = 0.01  # the paper's
    threads: int = 1
    cdf_points: int = 201
    log_every: int = 100


SMOKE = dict(
    preset="tiny",
    model_overrides=(("transform.size_divisible", 32),),
    image_size=32,
    train_images=8,
    val_images=4,
    batch_size=2,
    steps=3,
    warmup_iters=1,
    cdf_points=11,
    log_every=0,
)

# ----------------------------------------------------------------------------- data


def _render(
    num: int, size: int, seed: int, cache_dir: str | None = None
) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """The training images as one uint8 tensor plus targets (rendering is ~15-100 ms per
    image on a busy CPU, so the result is cached in ``cache_dir`` when given)."""
    from focal_detect.data import SyntheticShapes

    path = (
        None
        if cache_dir is None
        else os.path.join(cache_dir, f"focal_detect_shapes_{num}x{size}_seed{seed}.pt")
    )
    if path is not None and os.path.isfile(path):
        data = torch.load(path, weights_only=True)
        return data["images"], data["targets"]
    ds = SyntheticShapes(num_images=num, image_size=size, seed=seed)
    images = torch.empty((num, 3, size, size), dtype=torch.uint8)
    targets = []
    for i in range(num):
        img, t = ds[i]
        images[i] = (img * 255).round().to(torch.uint8)
        targets.append({"boxes": t["boxes"], "labels": t["labels"]})
    if path is not None:
        torch.save({"images": images, "targets": targets}, path + ".tmp")
        os.replace(path + ".tmp", path)
    return images, targets


_DATA: dict[str, Any] = {}  # filled in the parent before forking workers


def _val_dataset(settings: Settings):  # type: ignore[no-untyped-def]
    from focal_detect.data import SyntheticShapes

    if "val" not in _DATA:
        _DATA["val"] = SyntheticShapes(
            num_images=settings.val_images, image_size=settings.image_size, seed=1_000_003, cache=True
        )
        for i in range(len(_DATA["val"])):
            _DATA["val"][i]  # render into the cache
    return _DATA["val"]


# ----------------------------------------------------------------------------- one run


def _build(spec: Spec, settings: Settings, num_classes: int) -> torch.nn.Module:
    from focal_detect.models import build_model

    changes = _nested([*settings.model_overrides, *spec.model])
    return build_model(num_classes, settings.preset, **changes)


def _schedule(step: int, steps: int, settings: Settings) -> float:
    """Linear warm-up from ``warmup_factor``, then cosine decay to 0 (the demo's)."""
    w = min(settings.warmup_iters, max(1, steps // 4))
    if step < w:
        return settings.warmup_factor + (1 - settings.warmup_factor) * step / w
    return 0.5 * (1 + math.cos(math.pi * (step - w) / max(1, steps - w)))


@torch.no_grad()
def _figure4(model: torch.nn.Module, settings: Settings) -> dict[str, Any]:
    """Logits and assigned labels of the held-out images -> focal_loss_cdf."""
    from focal_detect.analysis import focal_loss_cdf
    from focal_detect.matching import assign_anchors

    ds = _val_dataset(settings)
    model.eval()
    cfg = model.config
    logits_all, labels_all = [], []
    for start in range(0, len(ds), 16):
        items = [ds[i] for i in range(start, min(len(ds), start + 16))]
        images = torch.stack([im for im, _ in items])
        batch, _, _, _ = model.preprocess(images)
        cls_levels, _ = model.dense(batch)
        feature_sizes = model.anchor_generator.feature_sizes_for((batch.shape[-2], batch.shape[-1]))
        anchors = model.anchor_generator(feature_sizes, dtype=torch.float32)
        assignment = assign_anchors(
            anchors,
            [t["boxes"] for _, t in items],
            [t["labels"] for _, t in items],
            high_threshold=cfg.matcher.high_threshold,
            low_threshold=cfg.matcher.low_threshold,
            allow_low_quality_matches=cfg.matcher.allow_low_quality_matches,
            box_coder=model.box_coder,
        )
        logits_all.append(torch.cat(cls_levels, dim=1).reshape(-1, cfg.num_classes))
        labels_all.append(assignment.labels.reshape(-1))
    res = focal_loss_cdf(torch.cat(logits_all), torch.cat(labels_all), num_points=settings.cdf_points)
    out: dict[str, Any] = {"fraction": res["fraction"].tolist()}
    for group in ("positive", "negative"):
        out[group] = {str(g): [round(v, 6) for v in c.tolist()] for g, c in res[group].items()}
        out[f"num_{group}"] = res[f"num_{group}"]
    return out


def run_one(spec: Spec, settings: Settings, seed: int) -> dict[str, Any]:
    """Train one configuration from ``seed`` and evaluate it; returns a JSON-able record."""
    from focal_detect.evaluation import evaluate_coco

    torch.set_num_threads(settings.threads)
    t0 = time.perf_counter()
    images, targets = _DATA["train"]
    num_classes = 5
    torch.manual_seed(seed)
    model = _build(spec, settings, num_classes).train()
    steps = max(1, int(round(settings.steps * spec.steps_factor)))
    if spec.optimizer == "paper_sgd":
        opt = torch.optim.SGD(model.parameters(), lr=settings.sgd_lr, momentum=0.9, weight_decay=1e-4)
        base_lr, clip = settings.sgd_lr, None
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        base_lr, clip = settings.lr, settings.clip_grad_norm
    gen = torch.Generator().manual_seed(seed)
    order = torch.cat(
        [
            torch.randperm(len(targets), generator=gen)
            for _ in range(1 + steps * settings.batch_size // len(targets))
        ]
    )
    history: list[list[float]] = []  # per step: [classification, box]
    nan_step = None
    for step in range(steps):
        lr = base_lr * (_schedule(step, steps, settings) if spec.optimizer == "demo" else 1.0)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = order[step * settings.batch_size : (step + 1) * settings.batch_size]
        batch = images[idx].float() / 255
        losses = model(batch, [targets[i] for i in idx.tolist()])
        cls, box = float(losses["classification"].detach()), float(losses["bbox_regression"].detach())
        history.append([cls, box])
        loss = losses["classification"] + losses["bbox_regression"]
        if not math.isfinite(cls + box):
            nan_step = step
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        if settings.log_every and (step + 1) % settings.log_every == 0:
            print(
                f"    {spec.name} seed {seed}: step {step + 1}/{steps}, cls {cls:.3f}, box {box:.3f}, "
                f"{time.perf_counter() - t0:.0f} s",
                flush=True,
            )
    t_train = time.perf_counter() - t0
    params_finite = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    record: dict[str, Any] = {
        "name": spec.name,
        "seed": seed,
        "model": {k: v for k, v in spec.model},
        "optimizer": spec.optimizer,
        "steps": steps,
        "steps_done": len(history),
        "nan_step": nan_step,
        "first_losses": [[round(c, 4), round(b, 4)] for c, b in history[:10]],
        "loss_curve": [
            [i, round(history[i][0], 4), round(history[i][1], 4)]
            for i in range(0, len(history), max(1, len(history) // 30))
        ],
        "final_cls_loss": round(sum(h[0] for h in history[-20:]) / max(1, len(history[-20:])), 4),
        "train_seconds": round(t_train, 1),
    }
    if nan_step is None and params_finite and spec.optimizer == "demo":
        metrics = evaluate_coco(model, _val_dataset(settings), batch_size=16)
        record["AP"] = round(100 * metrics["AP"], 2)
        record["AP50"] = round(100 * metrics["AP50"], 2)
    else:
        record["AP"] = None if spec.optimizer == "paper_sgd" else 0.0
        record["AP50"] = record["AP"]
    if spec.cdf and nan_step is None:
        record["figure4"] = _figure4(model, settings)
    record["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return record


def _run_packed(args: tuple[Spec, Settings, int]) -> dict[str, Any]:
    spec, settings, seed = args
    rec = run_one(spec, settings, seed)
    print(f"  done {spec.name:<20} seed {seed}: AP {rec['AP']}, {rec['wall_seconds']} s", flush=True)
    return rec


# ----------------------------------------------------------------------------- tables


def _stats(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return mean, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    return mean, sd


def _fmt(mean: float | None, sd: float | None) -> str:
    if mean is None:
        return "—"
    return f"{mean:.1f}" + (f" ± {sd:.1f}" if sd is not None else "")


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and spread of AP per run name, the tables and the ordering checks."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by.setdefault(r["name"], []).append(r)

    def ap(name: str) -> tuple[float | None, float | None]:
        return _stats([r["AP"] for r in by.get(name, [])])

    def ap50(name: str) -> tuple[float | None, float | None]:
        return _stats([r["AP50"] for r in by.get(name, [])])

    tables: dict[str, Any] = {}
    checks: dict[str, Any] = {}

    if "ce_prior" in by or "ce_no_prior" in by:
        rows = []
        for name in EXPERIMENTS["sec51"]:
            rs = by.get(name, [])
            if not rs:
                continue
            rows.append(
                {
                    "run": name,
                    "first_cls_losses": [[round(x[0], 2) for x in r["first_losses"][:5]] for r in rs],
                    "nan_step": [r["nan_step"] for r in rs],
                    "final_cls_loss": [r["final_cls_loss"] for r in rs],
                    "AP": ap(name),
                }
            )
        tables["sec51"] = rows
        if "ce_prior" in by and "ce_no_prior" in by:
            no = by["ce_no_prior"]
            checks["sec51_no_prior_diverges"] = any(r["nan_step"] is not None for r in no)
            checks["sec51_no_prior_first_loss_much_higher"] = min(
                r["first_losses"][0][0] for r in no
            ) > 10 * max(r["first_losses"][0][0] for r in by["ce_prior"])
            m_no, m_yes = ap("ce_no_prior")[0], ap("ce_prior")[0]
            checks["sec51_prior_gives_higher_AP"] = None if None in (m_no, m_yes) else m_yes > m_no

    def table(key: str, names: list[str], paper: list[float], labels: list[str]) -> None:
        rows = [
            {
                "setting": lab,
                "run": n,
                "paper_AP": p,
                "AP": ap(n),
                "AP50": ap50(n),
                "seeds": len(by.get(n, [])),
            }
            for n, p, lab in zip(names, paper, labels)
            if n in by
        ]
        if rows:
            tables[key] = rows

    alphas = (0.25, 0.5, 0.75, 0.9, 0.99)
    table(
        "table1a",
        EXPERIMENTS["table1a"],
        [PAPER["table1a"][a] for a in alphas],
        [f"alpha={a:g}" for a in alphas],
    )
    gas = list(PAPER["table1b"])
    table(
        "table1b",
        EXPERIMENTS["table1b"],
        [PAPER["table1b"][k] for k in gas],
        [f"gamma={g:g}, alpha={a:g}" for g, a in gas],
    )
    table(
        "table1d",
        EXPERIMENTS["table1d"],
        [PAPER["table1d"]["ohem"], PAPER["table1d"]["fl"]],
        ["OHEM 1:3, batch 128, NMS .5 (CE)", "FL gamma=2, alpha=.25"],
    )
    table(
        "appendixA",
        EXPERIMENTS["appendixA"],
        [None, None, 34.0],
        ["FL* gamma=2, beta=1", "FL* gamma=4, beta=0", "FL gamma=2, alpha=.25"],
    )

    def best(key: str) -> str | None:
        rows = [r for r in tables.get(key, []) if r["AP"][0] is not None]
        return max(rows, key=lambda r: r["AP"][0])["setting"] if rows else None

    def paper_best(key: str) -> str | None:
        rows = tables.get(key, [])
        return max(rows, key=lambda r: r["paper_AP"])["setting"] if rows else None

    def kendall(key: str) -> float | None:
        rows = [r for r in tables.get(key, []) if r["AP"][0] is not None and r["paper_AP"] is not None]
        n = len(rows)
        if n < 2:
            return None
        s = 0
        for i in range(n):
            for j in range(i + 1, n):
                a = rows[i]["AP"][0] - rows[j]["AP"][0]
                b = rows[i]["paper_AP"] - rows[j]["paper_AP"]
                s += (a > 0) - (a < 0) if b > 0 else -((a > 0) - (a < 0)) if b < 0 else 0
        return round(s / (n * (n - 1) / 2), 2)

    for key in ("table1a", "table1b"):
        if key in tables:
            checks[f"{key}_best_measured"] = best(key)
            checks[f"{key}_best_paper"] = paper_best(key)
            checks[f"{key}_kendall_tau_vs_paper"] = kendall(key)
    if "table1a" in tables:
        worst = min(
            (r for r in tables["table1a"] if r["AP"][0] is not None), key=lambda r: r["AP"][0], default=None
        )
        checks["table1a_alpha_0.25_worst"] = None if worst is None else worst["setting"] == "alpha=0.25"
    if "table1b" in tables and ap("fl_g2_a0.25")[0] is not None and ap("fl_g0_a0.75")[0] is not None:
        checks["table1b_FL_gamma2_beats_CE"] = ap("fl_g2_a0.25")[0] > ap("fl_g0_a0.75")[0]
    if "table1d" in tables and None not in (ap("fl_g2_a0.25")[0], ap("ohem_1to3_nms0.5")[0]):
        checks["table1d_FL_beats_OHEM"] = ap("fl_g2_a0.25")[0] > ap("ohem_1to3_nms0.5")[0]
    if "appendixA" in tables and ap("fl_g2_a0.25")[0] is not None:
        fl = ap("fl_g2_a0.25")[0]
        checks["appendixA_FLstar_minus_FL"] = {
            n: None if ap(n)[0] is None else round(ap(n)[0] - fl, 2) for n in ("flstar_g2_b1", "flstar_g4_b0")
        }
    return {"tables": tables, "checks": checks}


def print_tables(summary: dict[str, Any]) -> None:
    t = summary["tables"]
    if "sec51" in t:
        print(
            "\nSec. 5.1 - cross entropy with / without the prior bias init "
            "(paper: without it CE diverges in the first iterations; with it 30.2 AP)"
        )
        print(f"  {'run':<17} {'cls loss, steps 0-4 (per seed)':<44} {'NaN at':<8} {'final cls':<10} AP")
        for r in t["sec51"]:
            first = "; ".join(", ".join(f"{v:g}" for v in s) for s in r["first_cls_losses"])
            print(
                f"  {r['run']:<17} {first:<44} {str(r['nan_step']):<8} {str(r['final_cls_loss']):<10} {_fmt(*r['AP'])}"
            )
    titles = {
        "table1a": "Table 1a - alpha-balanced CE (gamma = 0)",
        "table1b": "Table 1b - focal loss (gamma, alpha)",
        "table1d": "Table 1d - OHEM vs FL (paper: ResNet-101-FPN)",
        "appendixA": "Appendix A - FL* vs FL",
    }
    for key, title in titles.items():
        if key not in t:
            continue
        print(f"\n{title}")
        print(f"  {'setting':<36} {'paper AP':>8}   {'AP (ours)':>12}   {'AP50 (ours)':>12}  seeds")
        for r in t[key]:
            paper = "—" if r["paper_AP"] is None else f"{r['paper_AP']:.1f}"
            print(
                f"  {r['setting']:<36} {paper:>8}   {_fmt(*r['AP']):>12}   {_fmt(*r['AP50']):>12}  {r['seeds']}"
            )
    print("\nOrdering checks (measured vs paper):")
    for k, v in summary["checks"].items():
        print(f"  {k}: {v}")


def plot_figure4(record: dict[str, Any], path: str) -> None:
    from focal_detect.analysis import plot_focal_loss_cdf

    f4 = record["figure4"]
    res = {
        "fraction": torch.tensor(f4["fraction"]),
        "positive": {float(g): torch.tensor(c) for g, c in f4["positive"].items()},
        "negative": {float(g): torch.tensor(c) for g, c in f4["negative"].items()},
        "num_positive": f4["num_positive"],
        "num_negative": f4["num_negative"],
    }
    plot_focal_loss_cdf(
        res, path, title=f"Figure 4 in miniature: FL (γ=2, α=.25) model, seed {record['seed']}"
    )


def figure4_summary(record: dict[str, Any]) -> dict[str, Any]:
    """Share of the loss carried by the hardest 1 % / 10 % / 20 % of each group."""
    f4 = record["figure4"]
    frac = f4["fraction"]
    out: dict[str, Any] = {}
    for group in ("positive", "negative"):
        out[group] = {}
        for g, curve in f4[group].items():
            row = {}
            for top in (0.01, 0.1, 0.2):
                i = min(range(len(frac)), key=lambda j: abs(frac[j] - (1 - top)))
                row[f"hardest_{int(top * 100)}pct"] = round(1 - curve[i], 3)
            out[group][g] = row
    return out


def rst_tables(result: dict[str, Any]) -> str:
    """The tables of a results JSON as reStructuredText list-tables (for the docs page)."""
    t = result["summary"]["tables"]
    lines: list[str] = []

    def table(title: str, header: list[str], rows: list[list[str]]) -> None:
        lines.extend([f".. list-table:: {title}", "   :header-rows: 1", ""])
        for row in [header, *rows]:
            lines.append("   * - " + row[0])
            lines.extend(f"     - {c}" for c in row[1:])
        lines.append("")

    if "sec51" in t:
        rows = []
        for r in t["sec51"]:
            first = "; ".join(", ".join(f"{v:g}" for v in s) for s in r["first_cls_losses"])
            nan = ", ".join("none" if v is None else str(v) for v in r["nan_step"])
            rows.append(
                [
                    f"``{r['run']}``",
                    first,
                    nan,
                    ", ".join(f"{v:g}" for v in r["final_cls_loss"]),
                    _fmt(*r["AP"]),
                ]
            )
        table(
            "Sec. 5.1: cross entropy with and without the prior init",
            ["run", "classification loss, steps 0-4", "NaN at step", "final cls. loss", "AP"],
            rows,
        )
    titles = {
        "table1a": "Table 1a: α-balanced CE (γ = 0)",
        "table1b": "Table 1b: focal loss",
        "table1d": "Table 1d: OHEM vs FL",
        "appendixA": "Appendix A: FL* vs FL",
    }
    for key, title in titles.items():
        if key in t:
            rows = [
                [
                    r["setting"],
                    "—" if r["paper_AP"] is None else f"{r['paper_AP']:.1f}",
                    _fmt(*r["AP"]),
                    _fmt(*r["AP50"]),
                    str(r["seeds"]),
                ]
                for r in t[key]
            ]
            table(title, ["setting", "paper AP (COCO)", "AP (ours)", "AP50 (ours)", "seeds"], rows)
    if "figure4" in result["summary"]:
        rows = []
        for group, by_gamma in result["summary"]["figure4"].items():
            for g, row in by_gamma.items():
                rows.append([group, g, *(f"{v:.3f}" for v in row.values())])
        table(
            "Figure 4: share of the loss carried by the hardest samples",
            ["samples", "γ", "hardest 1 %", "hardest 10 %", "hardest 20 %"],
            rows,
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def write_result(
    out: str,
    script: str,
    argv: Sequence[str] | None,
    settings: Any,
    jobs: int,
    t0: float,
    summary: dict[str, Any],
    records: list[dict[str, Any]],
    **extra: Any,
) -> None:
    """Write a study's JSON (command, settings, machine, wall time, summary, runs) to ``out``."""
    total = time.perf_counter() - t0
    result = {
        "command": f"python benchmarks/{script} " + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": dataclasses.asdict(settings),
        "jobs": jobs,
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()},
        "total_seconds": round(total, 1),
        **extra,
        "summary": summary,
        "runs": records,
    }
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1, default=str)
    print(f"\nwrote {os.path.relpath(out)}; total wall time {total:.0f} s")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--smoke", action="store_true", help="tiny model and data, a few steps: seconds, numbers meaningless"
    )
    p.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS), choices=list(EXPERIMENTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--extra-seeds-for", nargs="*", default=[], help="run names that get --extra-seeds too")
    p.add_argument("--extra-seeds", nargs="*", type=int, default=[])
    p.add_argument("--steps", type=int, default=None, help="training steps per run (default 400; smoke 3)")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run (default: cores // jobs)")
    p.add_argument(
        "--out",
        default=None,
        help="JSON results path (default benchmarks/results/reproduce_paper[_smoke].json)",
    )
    p.add_argument(
        "--data-cache",
        default=tempfile.gettempdir(),
        help="folder caching the rendered training images ('' = none)",
    )
    p.add_argument(
        "--plot",
        default=None,
        help="Figure 4 PNG path (default docs/_static/figure4_cdf.png; none in smoke mode)",
    )
    p.add_argument(
        "--runs", nargs="+", default=None, help="train only these run names (of the chosen experiments)"
    )
    p.add_argument(
        "--merge", nargs="*", default=[], help="results JSON files whose runs join this one's tables"
    )
    p.add_argument("--rst-from", default=None, help="print the tables of a results JSON as reST and exit")
    args = p.parse_args(argv)
    if args.rst_from:
        with open(args.rst_from, encoding="utf-8") as fh:
            print(rst_tables(json.load(fh)))
        return 0

    t0 = time.perf_counter()
    settings = Settings(**SMOKE) if args.smoke else Settings()
    jobs = max(1, args.jobs)
    threads = args.threads or max(1, (os.cpu_count() or 1) // jobs)
    settings = dataclasses.replace(settings, threads=threads, **({"steps": args.steps} if args.steps else {}))
    here = os.path.dirname(os.path.abspath(__file__))
    out = args.out or os.path.join(
        here, "results", "reproduce_paper_smoke.json" if args.smoke else "reproduce_paper.json"
    )
    plot = (
        args.plot
        if args.plot is not None
        else (None if args.smoke else os.path.join(here, "..", "docs", "_static", "figure4_cdf.png"))
    )

    names: list[str] = []
    for e in args.experiments:
        names += [n for n in EXPERIMENTS[e] if n not in names]
    if args.runs:
        unknown = sorted(set(args.runs) - set(names))
        if unknown:
            p.error(f"--runs: {unknown} not among the runs of {args.experiments}: {names}")
        names = [n for n in names if n in args.runs]
    merged: list[dict[str, Any]] = []
    merged_from = []
    for path in args.merge:
        with open(path, encoding="utf-8") as fh:
            old = json.load(fh)
        merged += old["runs"]
        merged_from.append(
            {
                "file": os.path.relpath(path),
                "command": old.get("command"),
                "total_seconds": old.get("total_seconds"),
            }
        )
    tasks = [(SPECS[n], settings, s) for n in names for s in args.seeds]
    tasks += [
        (SPECS[n], settings, s)
        for n in args.extra_seeds_for
        if n in names
        for s in args.extra_seeds
        if s not in args.seeds
    ]
    print(
        f"reproduce_paper: {len(tasks)} runs ({', '.join(args.experiments)}), {settings.steps} steps of batch "
        f"{settings.batch_size}, {settings.image_size} px, preset {settings.preset!r}, {jobs} job(s) x {threads} thread(s)",
        flush=True,
    )

    torch.set_num_threads(threads)
    _DATA["train"] = _render(
        settings.train_images,
        settings.image_size,
        seed=0,
        cache_dir=None if args.smoke else (args.data_cache or None),
    )
    _val_dataset(settings)
    print(
        f"  rendered {settings.train_images} training and {settings.val_images} held-out images "
        f"in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )

    if jobs == 1:
        records = [_run_packed(t) for t in tasks]
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("fork")) as pool:
            records = list(pool.map(_run_packed, tasks))

    records = merged + records
    summary = summarise(records)
    print_tables(summary)
    f4 = [r for r in records if "figure4" in r]
    if f4:
        summary["figure4"] = figure4_summary(f4[0])
        print("\nFigure 4 - share of the total loss carried by the hardest samples (FL gamma=2 model):")
        for group, rows in summary["figure4"].items():
            for g, row in rows.items():
                print(f"  {group:<9} gamma={g:<4} " + ", ".join(f"{k}: {v:.3f}" for k, v in row.items()))
        if plot:
            os.makedirs(os.path.dirname(os.path.abspath(plot)), exist_ok=True)
            plot_figure4(f4[0], plot)
            print(f"  plot: {os.path.relpath(plot)}")
    write_result(
        out, "reproduce_paper.py", argv, settings, jobs, t0, summary, records, merged_from=merged_from
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
