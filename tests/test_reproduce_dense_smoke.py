"""benchmarks/reproduce_dense.py --smoke: the dense study's plumbing runs end to end in
seconds. Only properties of the plumbing are asserted (keys, types, finiteness, the
matching counted); the numbers of a 4-step run mean nothing and none is copied here."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "reproduce_dense.py")
RECORD_KEYS = {
    # reproduce_paper.py's run schema ...
    "name",
    "seed",
    "AP",
    "AP50",
    "nan_step",
    "first_losses",
    "loss_curve",
    "steps",
    "steps_done",
    "final_cls_loss",
    "train_seconds",
    "wall_seconds",
    # ... plus the dense study's fields
    "fg_bg_ratio",
    "bg_per_fg",
    "anchors_per_image",
    "ap_curve",
    "diverged",
}


def _check_record(r: dict) -> None:  # type: ignore[type-arg]
    assert RECORD_KEYS <= set(r), RECORD_KEYS - set(r)
    assert r["nan_step"] is None or isinstance(r["nan_step"], int), r["name"]
    assert isinstance(r["diverged"], bool)
    assert r["steps_done"] >= 1 and all(math.isfinite(c) for c, _ in r["first_losses"]), r["name"]
    # The ratio comes from the model's own matching: counted, finite, a proper fraction.
    assert r["anchors_per_image"] > 0
    assert r["fg_bg_ratio"] is not None and math.isfinite(r["fg_bg_ratio"]) and 0 < r["fg_bg_ratio"] < 1
    assert r["bg_per_fg"] > 1
    ap = r["AP"]
    assert ap is not None and math.isfinite(ap) and 0.0 <= ap <= 100.0, r["name"]
    steps = [s for s, _, _ in r["ap_curve"]]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    if r["nan_step"] is None:
        assert steps and steps[-1] == r["steps"]
        assert all(0.0 <= a <= 100.0 and 0.0 <= a50 <= 100.0 for _, a, a50 in r["ap_curve"])


def test_dense_smoke_run_has_the_plumbing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "r.json"
    plot = tmp_path / "f4.png"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, SCRIPT, "--smoke", "--seeds", "0", "1", "--out", str(out), "--plot", str(plot)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "estimated wall time" in proc.stdout
    data = json.loads(out.read_text())
    tables = data["summary"]["tables"]
    assert set(tables) == {"sec51", "table1a", "table1b", "table1d"}
    assert len(tables["table1a"]) >= 4 and len(tables["table1b"]) == 5
    for key in ("table1a", "table1b", "table1d"):
        assert all(0.0 < r["paper_AP"] < 100.0 and r["seeds"] == 2 for r in tables[key]), key
    runs = data["runs"]
    assert {r["seed"] for r in runs} == {0, 1}
    for r in runs:
        _check_record(r)
    names = {r["name"] for r in runs}
    assert {"ce_prior", "ce_no_prior", "ohem_1to3_nms0.5", "fl_g2_a0.25"} <= names
    # Sec. 5.1's variable is the prior init: only the no-prior run sets head.prior 0.5.
    by = {r["name"]: r for r in runs}
    assert by["ce_no_prior"]["model"]["head.prior"] == 0.5 and "head.prior" not in by["ce_prior"]["model"]
    checks = data["summary"]["checks"]
    for key in ("all_ratios_1_to_500_or_sparser", "sec51_no_prior_diverged_any_seed", "best_AP_at_least_15"):
        assert isinstance(checks[key], bool), key
    f4 = next(r["figure4"] for r in runs if "figure4" in r)
    for group in ("positive", "negative"):
        for curve in f4[group].values():
            assert curve[0] == 0.0 and abs(curve[-1] - 1.0) < 1e-6
            assert all(b >= a for a, b in zip(curve, curve[1:]))
    assert plot.read_bytes()[:4] == b"\x89PNG"
