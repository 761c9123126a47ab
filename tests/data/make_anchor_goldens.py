"""Write the anchor golden files ``tests/data/anchors_*.json`` from the peers themselves.

Run from the repository root with an environment that has the peer installed:

    ~/peer-venv/bin/python tests/data/make_anchor_goldens.py torchvision
    python tests/data/make_anchor_goldens.py detectron --detectron PATH/TO/Detectron
    python tests/data/make_anchor_goldens.py keras-retinanet --keras-retinanet PATH/TO/keras-retinanet
    python tests/data/make_anchor_goldens.py mmdetection --mmdetection PATH/TO/mmdetection-2.x

(the PATHs may be work trees or bare git directories).

* ``torchvision``: ``torchvision.models.detection.anchor_utils.AnchorGenerator`` configured
  as in ``retinanet_resnet50_fpn`` (``_default_anchorgen``), run on an ``ImageList`` whose
  padded size is a multiple of 128 (so its image // feature strides equal the nominal ones).
* ``detectron``: ``detectron/modeling/generate_anchors.py`` of a Detectron (Caffe2)
  checkout, loaded by path (it only needs NumPy), called the way Detectron's RetinaNet
  builds its cell anchors (one (size, ratio) per call, octave outer, ratio inner) and
  shifted over a small grid like ``get_field_of_anchors`` (x * stride, float64).
* ``keras-retinanet``: ``keras_retinanet/utils/anchors.py`` of a fizyr/keras-retinanet
  checkout (NumPy only; its TensorFlow import is stubbed), ``anchors_for_shape`` with the
  default ``AnchorParameters``.
* ``mmdetection``: ``mmdet/core/anchor/anchor_generator.py`` of an mmdetection 2.x
  checkout (its base-anchor and grid code is the same as 3.x's
  ``mmdet/models/task_modules/prior_generators/anchor_generator.py``), RetinaNet settings.

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


def _repo_name(path: Path, default: str) -> str:
    """``owner/name`` from a mirror path such as ``.../owner+name/repo``, else ``default``."""
    for part in reversed(path.resolve().parts):
        if "+" in part:
            return part.replace("+", "/", 1)
    return default


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
        cases.append(
            {
                "image_size": [height, width],
                "feature_sizes": [list(fs) for fs in feature_sizes],
                **_sample(anchors, starts[:-1]),
            }
        )
    return {
        "peer": f"torchvision {torchvision.__version__} (torch {torch.__version__})",
        "call": "torchvision.models.detection.anchor_utils.AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5)"
        "(ImageList(zeros(1, 3, H, W), [(H, W)]), [zeros(1, 1, h, w) per level])[0], float32",
        "sizes": [list(s) for s in sizes],
        "cell_anchors": [_rows(c) for c in gen.cell_anchors],
        "cases": cases,
    }


def detectron_goldens(detectron: Path) -> dict:
    """``detectron`` is a Detectron work tree or a bare git directory of one."""
    import subprocess
    import tempfile

    import numpy as np

    rel = "detectron/modeling/generate_anchors.py"
    commit = "unknown"
    if (detectron / rel).is_file():
        path = detectron / rel
        git = ["git", "-C", str(detectron)]
    else:  # bare repository: read the file at HEAD
        git = ["git", "--git-dir", str(detectron)]
        text = subprocess.run(
            git + ["show", f"HEAD:{rel}"], capture_output=True, text=True, check=True
        ).stdout
        path = Path(tempfile.mkdtemp()) / "generate_anchors.py"
        path.write_text(text)
    res = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True)
    if res.returncode == 0:
        commit = res.stdout.strip()
    spec = importlib.util.spec_from_file_location("detectron_generate_anchors", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    # Detectron's RetinaNet defaults (core/config.py): RETINANET.SCALES_PER_OCTAVE = 3,
    # ANCHOR_SCALE = 4, ASPECT_RATIOS = (0.5, 1.0, 2.0), FPN levels 3..7; cell anchors built
    # as in core/test_retinanet.py _create_cell_anchors (octave outer, aspect inner).
    cells = []
    for lvl in range(3, 8):
        stride = 2.0**lvl
        rows = []
        for octave in range(3):
            octave_scale = 2 ** (octave / float(3))
            for aspect in (0.5, 1.0, 2.0):
                rows.append(
                    mod.generate_anchors(
                        stride=stride, sizes=(stride * octave_scale * 4,), aspect_ratios=(aspect,)
                    )[0]
                )
        cells.append(np.array(rows))
    # Shifted like roi_data/data_utils.get_field_of_anchors (x * stride, location-major),
    # float64, before its final astype(np.float32).
    grids = []
    for lvl, (h, w) in zip(range(3, 8), [(3, 4), (2, 2), (1, 1), (1, 1), (1, 1)]):
        stride = 2.0**lvl
        sx, sy = np.meshgrid(np.arange(w) * stride, np.arange(h) * stride)
        shifts = np.vstack((sx.ravel(), sy.ravel(), sx.ravel(), sy.ravel())).T
        grid = (cells[lvl - 3][None, :, :] + shifts[:, None, :]).reshape(-1, 4)
        grids.append(
            {
                "feature_size": [h, w],
                "anchors": _rows(grid),
                "anchors_float32": _rows(grid.astype(np.float32)),
            }
        )
    # generate_anchors' header example: stride 16, sizes (128, 256, 512), ratio-major.
    doc = mod.generate_anchors(stride=16, sizes=(128, 256, 512), aspect_ratios=(0.5, 1, 2))
    return {
        "peer": f"{_repo_name(detectron, 'facebookresearch/Detectron')} {commit}",
        "call": "detectron/modeling/generate_anchors.py: generate_anchors(stride, (stride * 2**(o/3) * 4,), (r,))"
        " for o in 0..2 for r in (0.5, 1, 2) (core/test_retinanet.py _create_cell_anchors); grid"
        " x * stride as roi_data/data_utils.get_field_of_anchors, float64 (and its float32 cast)",
        "cell_anchors": [_rows(c) for c in cells],
        "grids": grids,
        "stride16_sizes_128_256_512": _rows(doc),
    }


def keras_retinanet_goldens(repo: Path) -> dict:
    """``repo`` is a keras-retinanet work tree or a bare git directory of one.

    ``keras_retinanet/utils/anchors.py`` imports TensorFlow only for
    ``keras.backend.floatx()`` and a Cython IoU helper; both are stubbed (floatx is
    "float32", TensorFlow's default) so the module's NumPy code runs as it is.
    """
    import subprocess
    import sys
    import tempfile
    import types

    rel = "keras_retinanet/utils/anchors.py"
    if (repo / rel).is_file():
        text, git = (repo / rel).read_text(), ["git", "-C", str(repo)]
    else:
        git = ["git", "--git-dir", str(repo)]
        text = subprocess.run(
            git + ["show", f"HEAD:{rel}"], capture_output=True, text=True, check=True
        ).stdout
    res = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True)
    commit = res.stdout.strip() if res.returncode == 0 else "unknown"

    tf = types.ModuleType("tensorflow")
    tf.keras = types.SimpleNamespace(backend=types.SimpleNamespace(floatx=lambda: "float32"))
    pkg = types.ModuleType("keras_retinanet")
    pkg.__path__ = []
    utils = types.ModuleType("keras_retinanet.utils")
    utils.__path__ = []
    overlap = types.ModuleType("keras_retinanet.utils.compute_overlap")
    overlap.compute_overlap = None
    sys.modules.update(
        {
            "tensorflow": tf,
            "keras_retinanet": pkg,
            "keras_retinanet.utils": utils,
            "keras_retinanet.utils.compute_overlap": overlap,
        }
    )
    path = Path(tempfile.mkdtemp()) / "anchors.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("keras_retinanet.utils.anchors", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)

    params = mod.AnchorParameters.default
    cells = [
        mod.generate_anchors(base_size=s, ratios=params.ratios, scales=params.scales) for s in params.sizes
    ]
    cases = []
    for height, width in [(200, 330), (64, 96)]:
        anchors = mod.anchors_for_shape((height, width, 3))  # float64, guess_shapes = ceil
        shapes = mod.guess_shapes((height, width), [3, 4, 5, 6, 7])
        starts = [0]
        for h, w in shapes:
            starts.append(starts[-1] + int(h) * int(w) * 9)
        cases.append(
            {
                "image_size": [height, width],
                "feature_sizes": [[int(h), int(w)] for h, w in shapes],
                **_sample(anchors, starts[:-1]),
            }
        )
    return {
        "peer": f"{_repo_name(repo, 'fizyr/keras-retinanet')} {commit}",
        "call": "keras_retinanet/utils/anchors.py anchors_for_shape((H, W, 3)) with AnchorParameters.default"
        " (floatx float32), float64 result; cell anchors generate_anchors(size, ratios, scales)",
        "cell_anchors": [_rows(c) for c in cells],
        "cases": cases,
    }


def mmdetection_goldens(repo: Path) -> dict:
    """``repo`` is an mmdetection 2.x work tree or bare git directory.

    Loads ``mmdet/core/anchor/anchor_generator.py`` (its ``mmcv`` import and registry are
    stubbed; the anchor code needs only torch and NumPy) and runs ``AnchorGenerator``
    configured as mmdetection's RetinaNet (``octave_base_scale=4, scales_per_octave=3,
    ratios=[0.5, 1.0, 2.0], strides=[8, 16, 32, 64, 128]``), float32.
    """
    import subprocess
    import sys
    import tempfile
    import types

    import torch

    rel = "mmdet/core/anchor/anchor_generator.py"
    if (repo / rel).is_file():
        text, git = (repo / rel).read_text(), ["git", "-C", str(repo)]
    else:
        git = ["git", "--git-dir", str(repo)]
        text = subprocess.run(
            git + ["show", f"HEAD:{rel}"], capture_output=True, text=True, check=True
        ).stdout
    res = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True)
    commit = res.stdout.strip() if res.returncode == 0 else "unknown"

    class _Registry:
        def register_module(self, *args, **kwargs):
            return lambda cls: cls

    pkg = types.ModuleType("_mmdet_anchor")
    pkg.__path__ = []
    builder = types.ModuleType("_mmdet_anchor.builder")
    builder.ANCHOR_GENERATORS = _Registry()
    mmcv = types.ModuleType("mmcv")
    sys.modules.update({"_mmdet_anchor": pkg, "_mmdet_anchor.builder": builder})
    sys.modules.setdefault("mmcv", mmcv)
    path = Path(tempfile.mkdtemp()) / "anchor_generator.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("_mmdet_anchor.anchor_generator", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)

    gen = mod.AnchorGenerator(
        strides=[8, 16, 32, 64, 128], ratios=[0.5, 1.0, 2.0], octave_base_scale=4, scales_per_octave=3
    )
    cases = []
    for feature_sizes in (
        [(25, 42), (13, 21), (7, 11), (4, 6), (2, 3)],
        [(8, 12), (4, 6), (2, 3), (1, 2), (1, 1)],
    ):
        parts = gen.grid_anchors(feature_sizes, device="cpu")
        anchors = torch.cat(parts)
        starts = [0]
        for p in parts[:-1]:
            starts.append(starts[-1] + p.shape[0])
        cases.append({"feature_sizes": [list(f) for f in feature_sizes], **_sample(anchors, starts)})
    return {
        "peer": f"{_repo_name(repo, 'mmdetection')} {commit} ({rel}, mmdetection 2.x)",
        "call": "AnchorGenerator(strides=[8, 16, 32, 64, 128], ratios=[0.5, 1.0, 2.0], octave_base_scale=4,"
        " scales_per_octave=3).grid_anchors(feature_sizes, device='cpu'), float32",
        "cell_anchors": [_rows(c) for c in gen.base_anchors],
        "cases": cases,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("peer", choices=["torchvision", "detectron", "keras-retinanet", "mmdetection"])
    parser.add_argument("--detectron", type=Path, help="Detectron work tree or bare git directory")
    parser.add_argument(
        "--keras-retinanet", type=Path, help="keras-retinanet work tree or bare git directory"
    )
    parser.add_argument("--mmdetection", type=Path, help="mmdetection 2.x work tree or bare git directory")
    args = parser.parse_args()
    if args.peer == "torchvision":
        data, out = torchvision_goldens(), HERE / "anchors_torchvision.json"
    elif args.peer == "mmdetection":
        if args.mmdetection is None:
            parser.error("--mmdetection PATH is required for the mmdetection goldens")
        data, out = mmdetection_goldens(args.mmdetection), HERE / "anchors_mmdetection.json"
    elif args.peer == "keras-retinanet":
        if args.keras_retinanet is None:
            parser.error("--keras-retinanet PATH is required for the keras-retinanet goldens")
        data, out = keras_retinanet_goldens(args.keras_retinanet), HERE / "anchors_keras_retinanet.json"
    else:
        if args.detectron is None:
            parser.error("--detectron PATH is required for the detectron goldens")
        data, out = detectron_goldens(args.detectron), HERE / "anchors_detectron.json"
    out.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
