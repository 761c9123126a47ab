"""The reproducing page's dense-pilot table is the committed results files, row for row.

The page shows pilot runs of ``benchmarks/reproduce_dense.py`` (Sec. 5.1 with three
seeds, the ``lrcheck`` at lr 0.0025); this test rebuilds every row from the JSON files
under ``benchmarks/results/`` and fails if the page shows a number they do not hold,
or a run is missing, or the page's prose contradicts what is measured."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(ROOT, "docs", "explanations", "reproducing.rst")
RESULTS = [
    os.path.join(ROOT, "benchmarks", "results", f)
    for f in ("reproduce_dense_sec51.json", "reproduce_dense_lr0.0025.json")
]


def _row(lr: float, run: dict[str, Any]) -> str:
    curve = " -> ".join(f"{ap:.2f}" for _, ap, *_ in run["ap_curve"]) or "-"
    if run["nan_step"] is not None:
        status = f"NaN at step {run['nan_step']}"
    else:
        status = "exploded" if run["diverged"] else "no"
    first = " ".join(f"{c:.4g}" for c, _ in run["first_losses"][:5])
    return (
        f"   {lr}, {run['name']}, {run['seed']}, {run['steps']}, {first}, {status}, {run['AP']:.2f}, {curve}"
    )


def _runs() -> list[tuple[float, dict[str, Any]]]:
    out = []
    for path in RESULTS:
        with open(path) as f:
            data = json.load(f)
        out += [(data["settings"]["lr"], r) for r in data["runs"]]
    return out


def _table_rows() -> list[str]:
    with open(PAGE, encoding="utf-8") as f:
        lines = f.read().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(".. csv-table:: Pilot runs"))
    rows = []
    for line in lines[start + 1 :]:
        if line.startswith("   :"):
            continue
        if not line.strip():
            if rows:
                break
            continue
        rows.append(line)
    return rows


def test_page_rows_are_the_results_files() -> None:
    assert _table_rows() == [_row(lr, r) for lr, r in _runs()]


@pytest.mark.parametrize("lr", [0.01, 0.0025])
def test_ce_without_prior_gives_nan_at_both_rates(lr: float) -> None:
    runs = [r for rl, r in _runs() if rl == lr and r["name"] == "ce_no_prior"]
    assert runs and all(r["nan_step"] is not None and r["nan_step"] < 20 for r in runs)


def test_lrcheck_prose_matches_the_file() -> None:
    """The page says: at 0.0025 CE (alpha .75) beats FL (2, .25), and CE with the prior is stable."""
    at = {r["name"]: r for lr, r in _runs() if lr == 0.0025}
    assert at["fl_g0_a0.75"]["AP"] > at["fl_g2_a0.25"]["AP"]
    assert not at["ce_prior"]["diverged"]
    with open(PAGE, encoding="utf-8") as f:
        page = " ".join(f.read().split())
    assert f"AP {at['fl_g0_a0.75']['AP']:.1f} in 1800 steps" in page
    assert f"is at {at['fl_g2_a0.25']['AP']:.1f}" in page


def test_prior_prose_at_the_papers_rate_matches_the_file() -> None:
    """The page says: at 0.01, CE with the prior gave NaN at two seeds (steps named) and AP 0 on the third."""
    runs = [r for lr, r in _runs() if lr == 0.01 and r["name"] == "ce_prior"]
    nans = sorted(r["nan_step"] for r in runs if r["nan_step"] is not None)
    rest = [r["AP"] for r in runs if r["nan_step"] is None]
    assert len(nans) == 2 and rest == [0.0]
    with open(PAGE, encoding="utf-8") as f:
        page = " ".join(f.read().split())
    assert (
        f"NaN at steps {nans[0]} and {nans[1]} on two seeds, and AP 0.00 after 450 steps on the third" in page
    )


def test_page_shows_the_commands_that_wrote_the_files() -> None:
    with open(PAGE, encoding="utf-8") as f:
        page = " ".join(f.read().replace("\\\n", " ").split())
    for path in RESULTS:
        with open(path) as f:
            data = json.load(f)
        assert data["command"] in page
        assert f"{data['total_seconds']:.0f} s" in page
