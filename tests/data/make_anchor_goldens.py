"""Write the anchor golden files ``tests/data/anchors_*.json`` from the peers themselves.

Run from the repository root with an environment that has the peer installed:

    ~/peer-venv/bin/python tests/data/make_anchor_goldens.py torchvision
    python tests/data/make_anchor_goldens.py detectron --detectron PATH/TO/Detectron

* ``torchvision``: ``torchvision.models.detection.anchor_utils.AnchorGenerator`` configured
  as in ``retinanet_resnet50_fpn`` (``_default_anchorgen``), run on an ``ImageList`` whose
  padded size is a multiple of 128 (so its image // feature strides equal the nominal ones).
* ``detectron``: ``detectron/modeling/generate_anchors.py`` of a Detectron (Caffe2)
  checkout, loaded by path (it only needs NumPy), called the way Detectron's RetinaNet
  builds its cell anchors (one (size, ratio) per call, octave outer, ratio inner) and
  shifted over a small grid like ``get_field_of_anchors`` (x * stride, float64).

Nothing here is imported by the test suite; the tests read the JSON only. Values are
plain JSON floats (exact for float32/float64 values); large grids are stored as a sample
of rows plus order-sensitive checksums to keep the files small.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _rows(t) -> list[list[float]]:
    # float32/float64 values are exact as Python floats and JSON round-trips them.
    return [[float(v) for v in row] for row in t.tolist()]


def _sample(anchors, starts: list[int]) -> dict:
    """A deterministic sample of rows (every 29th, plus each level's first and last) and
    order-sensitive checksums of all rows, to keep the file small."""
    n = anchors.shape[0]
    idx = set(range(0, n, 29)) | set(starts) | {s - 1 for s in starts[1:]} | {n - 1}
    idx = sorted(i for i in idx if 0 <= i < n)
    flat = [float(v) for row in anchors.tolist() for v in row]
    return {
        "num_anchors": n,
        "rows": [[i] + [float(v) for v in anchors[i].tolist()] for i in idx],
        "sum": math.fsum(flat),
        "index_weighted_sum": math.fsum((k // 4 + 1) * v for k, v in enumerate(flat)),
    }


def torchvision_goldens() -> dict:
    import torch
    import torchvision
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.image_list import ImageList

    # Same construction as torchvision.models.detection.retinanet._default_anchorgen.
    sizes = tuple((x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3))) for x in [32, 64, 128, 256, 512])
    ratios = ((0.5, 1.0, 2.0),) * len(sizes)
    gen = AnchorGenerator(sizes, ratios)
    cases = []
    for height, width in [(128, 256), (384, 256)]:
        feature_sizes = [(math.ceil(height / s), math.ceil(width / s)) for s in (8, 16, 32, 64, 128)]
        feats = [torch.zeros(1, 1, h, w) for h, w in feature_sizes]
        images = ImageList(torch.zeros(1, 3, height, width), [(height, width)])
        anchors = gen(images, feats)[0]
        starts = [0]
        for h, w in feature_sizes:
            starts.append(starts[-1] + h * w * 9)
        cases.append({"image_size": [height, width], "feature_sizes": [list(fs) for fs in feature_sizes],
                      **_sample(anchors, starts[:-1])})
    return {
        "peer": f"torchvision {torchvision.__version__} (torch {torch.__version__})",
        "call": "torchvision.models.detection.anchor_utils.AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5)"
        "(ImageList(zeros(1, 3, H, W), [(H, W)]), [zeros(1, 1, h, w) per level])[0], float32",
        "sizes": [list(s) for s in sizes],
        "cell_anchors": [_rows(c) for c in gen.cell_anchors],
        "cases": cases,
    }


def detectron_goldens(detectron_root: Path) -> dict:
    import subprocess

    import numpy as np

    path = detectron_root / "detectron" / "modeling" / "generate_anchors.py"
    spec = importlib.util.spec_from_file_location("detectron_generate_anchors", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    try:
        commit = subprocess.run(
            ["git", "--git-dir", str(detectron_root), "rev-parse", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    except Exception:  # a plain checkout rather than a bare mirror
        commit = "unknown"

    # Detectron's RetinaNet defaults: RETINANET.SCALES_PER_OCTAVE = 3, ANCHOR_SCALE = 4,
    # ASPECT_RATIOS = (0.5, 1.0, 2.0), levels 3..7.
    cells = []
    for lvl in range(3, 8):
        stride = 2.0**lvl
        rows = []
        for octave in range(3):
            octave_scale = 2 ** (octave / float(3))
            for aspect in (0.5, 1.0, 2.0):
                rows.append(mod.generate_anchors(stride=stride, sizes=(stride * octave_scale * 4,),
                                                 aspect_ratios=(aspect,))[0])
        cells.append(np.array(rows))
    # Shift like data_utils.get_field_of_anchors (x * stride, location-major), float64.
    grids = []
    for lvl, (h, w) in zip(range(3, 8), [(3, 4), (2, 2), (1, 1), (1, 1), (1, 1)]):
        stride = 2.0**lvl
        sx, sy = np.meshgrid(np.arange(w) * stride, np.arange(h) * stride)
        shifts = np.vstack((sx.ravel(), sy.ravel(), sx.ravel(), sy.ravel())).T
        grid = (cells[lvl - 3][None, :, :] + shifts[:, None, :]).reshape(-1, 4)
        grids.append({"feature_size": [h, w], "anchors_hex": [[float(v).hex() for v in r] for r in grid]})
    # The docstring example: generate_anchors(stride=16, sizes=(128, 256, 512)), ratio-major.
    doc = mod.generate_anchors(stride=16, sizes=(128, 256, 512), aspect_ratios=(0.5, 1, 2))
    return {
        "peer": f"facebookresearch/Detectron {commit}",
        "call": "detectron/modeling/generate_anchors.py generate_anchors(stride, (stride * 2**(o/3) * 4,), (r,)) "
        "for o in 0..2 for r in (0.5, 1, 2); grid x * stride (get_field_of_anchors), float64",
        "cell_anchors_hex": [[[float(v).hex() for v in r] for r in c] for c in cells],
        "grids": grids,
        "stride16_sizes_128_256_512_hex": [[float(v).hex() for v in r] for r in doc],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("peer", choices=["torchvision", "detectron"])
    parser.add_argument("--detectron", type=Path, help="Detectron checkout (or bare git dir's work tree)")
    args = parser.parse_args()
    if args.peer == "torchvision":
        data, out = torchvision_goldens(), HERE / "anchors_torchvision.json"
    else:
        if args.detectron is None:
            parser.error("--detectron PATH is required for the detectron goldens")
        data, out = detectron_goldens(args.detectron), HERE / "anchors_detectron.json"
    out.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
