r"""A second, independent synthetic detection set ("clutter"), written in COCO format.

It is meant to check a training recipe on data that the demo set
(:class:`focal_detect.data.SyntheticShapes`) never showed it, so it differs from the demo
in every visual respect:

=================  ==========================================  ==============================
aspect             demo (``SyntheticShapes``)                  this set
=================  ==========================================  ==============================
object kinds       rectangle, ellipse, triangle, cross, ring   star, arrow, crescent, bolt,
                                                               glyph ("E"-shaped comb)
pose               axis-aligned                                any rotation, aspect stretch
fill               one colour with soft shading                solid, stripes, checks,
                                                               gradient or noise; outlines
colours            uniform in the RGB cube                     saturated HSV objects on
                                                               desaturated backgrounds
background         smooth two-colour gradient, blotches        multi-octave value noise,
                                                               stripe/grid textures, vignette
clutter            a few 1-px lines and dots                   thick scribbles and textured
                                                               blobs as large as objects
occlusion          objects only                                objects and strokes drawn over
                                                               objects
sizes              8 px .. 0.8 of the image                    10 .. 180 px (longer box side)
classes            34/25/18/14/9 %                             40/25/15/12/8 %
noise              Gaussian, sigma 0.03                        Gaussian 0.02..0.06 and speckle
=================  ==========================================  ==============================

Every image is a pure function of ``(seed, split, index)``. Boxes are the exact extent of
the object's polygon (before any occlusion), inside the image.

Usage::

    python benchmarks/clutter_set.py --out DIR --train 400 --val 200 --size 320 --seed 0

writes ``DIR/train/images/*.png``, ``DIR/train/annotations.json`` and the same under
``DIR/val``, readable by :class:`focal_detect.data.CocoDetection` (class names in the
categories). Needs numpy and Pillow.
"""

from __future__ import annotations

import argparse
import colorsys
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Class names in label order (category id = label + 1).
CLASSES: tuple[str, ...] = ("star", "arrow", "crescent", "bolt", "glyph")
#: Sampling probability of each class (imbalanced: 5 to 1 from first to last).
FREQUENCIES: tuple[float, ...] = (0.40, 0.25, 0.15, 0.12, 0.08)
#: Range of an object's longer box side, in pixels.
MIN_SIZE, MAX_SIZE = 10.0, 180.0
SPLITS = {"train": 1, "val": 2}

# Supersampling factor of the anti-aliased object masks.
_SS = 4
# A new object may hide at most this share of an earlier object's box.
_MAX_HIDDEN = 0.5
# Minimum luma difference between an object's colour and the background under it.
_MIN_LUMA_CONTRAST = 0.18


# --------------------------------------------------------------------------- shapes


def _star(rng: np.random.Generator) -> np.ndarray:
    n = int(rng.integers(5, 8))
    inner = rng.uniform(0.38, 0.55)
    a = np.arange(2 * n) * math.pi / n
    r = np.where(np.arange(2 * n) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


def _arrow(rng: np.random.Generator) -> np.ndarray:
    w, hw, hl = rng.uniform(0.22, 0.4), rng.uniform(0.7, 1.0), rng.uniform(0.35, 0.55)
    x = 1 - 2 * hl
    return np.array([[-1, -w / 2], [x, -w / 2], [x, -hw], [1, 0], [x, hw], [x, w / 2], [-1, w / 2]])


def _crescent(rng: np.random.Generator) -> np.ndarray:
    # Outer arc: the left half of the unit circle; inner arc: a circle through (0, +-1)
    # centred at (c, 0), so the horn tips meet and the middle is 1 - (R - c) thick.
    c = rng.uniform(0.25, 0.9)
    big = math.hypot(1.0, c)
    t = np.linspace(math.pi / 2, 3 * math.pi / 2, 28)
    outer = np.stack([np.cos(t), np.sin(t)], 1)
    a0, a1 = math.atan2(-1.0, -c) + 2 * math.pi, math.atan2(1.0, -c)
    s = np.linspace(a0, a1, 20)
    inner = np.stack([c + big * np.cos(s), big * np.sin(s)], 1)
    return np.concatenate([outer, inner[1:-1]])


def _bolt(rng: np.random.Generator) -> np.ndarray:
    p = np.array([[-0.1, -1], [0.6, -1], [0.15, -0.15], [0.55, -0.15], [-0.4, 1], [-0.05, 0.1], [-0.5, 0.1]])
    return p + rng.uniform(-0.06, 0.06, p.shape)


def _glyph(rng: np.random.Generator) -> np.ndarray:
    # An "E": a spine of width s and three teeth of thickness t, the middle one shorter.
    s, t, m = rng.uniform(0.3, 0.45), rng.uniform(0.26, 0.36), rng.uniform(0.2, 0.8)
    return np.array(
        [
            [-1, -1], [1, -1], [1, -1 + t], [-1 + s, -1 + t], [-1 + s, -t / 2], [m, -t / 2],
            [m, t / 2], [-1 + s, t / 2], [-1 + s, 1 - t], [1, 1 - t], [1, 1], [-1, 1],
        ]
    )  # fmt: skip


_SHAPES = (_star, _arrow, _crescent, _bolt, _glyph)


def _posed_polygon(rng: np.random.Generator, label: int, side: float) -> np.ndarray:
    """The class polygon, stretched, rotated and scaled so its longer box side is ``side``."""
    p = _SHAPES[label](rng).astype(np.float64)
    p[:, 0] *= rng.uniform(0.7, 1.4)
    a = rng.uniform(0, 2 * math.pi)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    p = p @ rot.T
    p -= p.min(0)
    return p * (side / float(p.max()))


# ------------------------------------------------------------------------- textures


def _value_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Bilinear value noise in ``[0, 1]``, ``(h, w)`` float32 (a random grid, upsampled)."""
    from PIL import Image

    grid = rng.random((cells + 1, cells + 1), dtype=np.float32)
    return np.asarray(Image.fromarray(grid).resize((w, h), Image.Resampling.BILINEAR))


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32)


def _pattern(rng: np.random.Generator, h: int, w: int, c0: np.ndarray, c1: np.ndarray) -> np.ndarray:
    """A ``(h, w, 3)`` fill: solid, stripes, checks, gradient or noise between two colours."""
    kind = int(rng.integers(0, 5))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = rng.uniform(0, math.pi)
    u = xx * math.cos(a) + yy * math.sin(a)
    if kind == 0:
        t = 0.15 * _value_noise(rng, h, w, 2)
    elif kind == 1:
        t = (np.floor(u / rng.uniform(1.5, 5.0)) % 2).astype(np.float32)
    elif kind == 2:
        cell = rng.uniform(2.0, 7.0)
        t = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2).astype(np.float32)
    elif kind == 3:
        t = (u - u.min()) / max(float(np.ptp(u)), 1.0)
    else:
        t = _value_noise(rng, h, w, int(rng.integers(2, 6)))
    return c0 + t[..., None] * (c1 - c0)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Desaturated multi-octave noise with a colour cast, textures and a vignette."""
    hue = rng.random()
    base = _hsv(hue, rng.uniform(0.0, 0.3), rng.uniform(0.25, 0.8))
    cast = _hsv(hue + rng.uniform(-0.15, 0.15), rng.uniform(0.1, 0.4), 1.0) - 0.5
    field = np.zeros((size, size), np.float32)
    for cells, amp in ((4, 0.5), (12, 0.3), (40, 0.2)):  # three octaves
        field += _value_noise(rng, size, size, cells) * np.float32(amp)
    img = base + (field[..., None] - 0.5) * (rng.uniform(0.15, 0.45) + 0.3 * cast)
    if rng.random() < 0.5:  # stripe or grid texture over the whole image
        tex = _pattern(rng, size, size, np.zeros(3, np.float32), np.ones(3, np.float32)) - 0.5
        img += tex * rng.uniform(0.04, 0.12)
    yy, xx = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size - 0.5
    img *= (1 - rng.uniform(0.0, 0.6) * (xx**2 + yy**2))[..., None]
    return img.astype(np.float32)


# -------------------------------------------------------------------------- drawing


def _mask(
    poly: np.ndarray,
    x0: int,
    y0: int,
    h: int,
    w: int,
    outline: float = 0.0,
    closed: bool = True,
    ss: int = _SS,
) -> np.ndarray:
    """Anti-aliased coverage ``(h, w)`` of a polygon, or of a line ``outline`` px wide along
    it (closed or open), in the window of size ``(h, w)`` at ``(x0, y0)``; ``ss``-fold
    supersampled."""
    from PIL import Image, ImageDraw

    im = Image.new("L", (w * ss, h * ss), 0)
    pts = [((x - x0) * ss, (y - y0) * ss) for x, y in poly]
    draw = ImageDraw.Draw(im)
    if outline > 0:
        draw.line(
            pts + pts[:1] if closed else pts, fill=255, width=max(1, round(outline * ss)), joint="curve"
        )
    else:
        draw.polygon(pts, fill=255)
    return np.asarray(im.reduce(ss), dtype=np.float32) * np.float32(1 / 255)


def _stroke(rng: np.random.Generator, img: np.ndarray, max_width: float) -> None:
    """A random scribble (polyline) in a random colour, drawn in place."""
    size = img.shape[0]
    n = int(rng.integers(2, 6))
    start = rng.uniform(0, size, 2)
    steps = rng.normal(0, size * 0.12, (n, 2))
    pts = np.concatenate([start[None], start + np.cumsum(steps, 0)])
    x0, y0 = (int(v) for v in np.clip(pts.min(0) - max_width - 2, 0, size))
    x1, y1 = (int(math.ceil(v)) for v in np.clip(pts.max(0) + max_width + 2, 0, size))
    if x1 - x0 < 1 or y1 - y0 < 1:
        return
    cover = _mask(pts, x0, y0, y1 - y0, x1 - x0, outline=rng.uniform(1.0, max_width), closed=False, ss=2)
    color = _hsv(rng.random(), rng.uniform(0, 1), rng.uniform(0.1, 1))
    win = img[y0:y1, x0:x1]
    win += (color - win) * cover[..., None]


def _blob(rng: np.random.Generator, img: np.ndarray) -> None:
    """A textured irregular blob (smooth random radius), a distractor as large as objects."""
    size = img.shape[0]
    r = rng.uniform(5, 40)
    k = 14
    a = np.sort(rng.uniform(0, 2 * math.pi, k))
    radius = r * (0.75 + 0.25 * np.convolve(np.tile(rng.random(k), 3), np.ones(3) / 3, "same")[k : 2 * k])
    c = rng.uniform(0, size, 2)
    poly = np.stack([c[0] + radius * np.cos(a), c[1] + radius * np.sin(a)], 1)
    x0, y0 = (int(v) for v in np.clip(poly.min(0) - 1, 0, size))
    x1, y1 = (int(math.ceil(v)) for v in np.clip(poly.max(0) + 1, 0, size))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    cover = _mask(poly, x0, y0, y1 - y0, x1 - x0)
    fill = _pattern(
        rng,
        y1 - y0,
        x1 - x0,
        _hsv(rng.random(), rng.random(), rng.random()),
        _hsv(rng.random(), rng.random(), rng.random()),
    )
    win = img[y0:y1, x0:x1]
    win += (fill - win) * cover[..., None]


def _luma(c: np.ndarray) -> float:
    return float(0.299 * c[..., 0].mean() + 0.587 * c[..., 1].mean() + 0.114 * c[..., 2].mean())


def _hidden(old: np.ndarray, new: np.ndarray) -> float:
    iw = max(0.0, min(old[2], new[2]) - max(old[0], new[0]))
    ih = max(0.0, min(old[3], new[3]) - max(old[1], new[1]))
    return iw * ih / max((old[2] - old[0]) * (old[3] - old[1]), 1e-9)


def _draw_object(rng: np.random.Generator, img: np.ndarray, poly: np.ndarray) -> None:
    size = img.shape[0]
    x0, y0 = (max(int(v) - 1, 0) for v in poly.min(0))
    x1, y1 = (min(int(math.ceil(v)) + 1, size) for v in poly.max(0))
    h, w = y1 - y0, x1 - x0
    cover = _mask(poly, x0, y0, h, w)
    under = _luma(img[y0:y1, x0:x1])
    for _ in range(8):  # a colour that stands out from the local background
        c0 = _hsv(rng.random(), rng.uniform(0.55, 1.0), rng.uniform(0.35, 1.0))
        if abs(_luma(c0) - under) >= _MIN_LUMA_CONTRAST:
            break
    c1 = np.clip(c0 * rng.uniform(0.5, 1.3) + rng.uniform(-0.15, 0.15, 3), 0, 1).astype(np.float32)
    fill = _pattern(rng, h, w, c0, c1)
    win = img[y0:y1, x0:x1]
    win += (fill - win) * cover[..., None]
    if rng.random() < 0.35:  # an outline in a contrasting shade
        side = float(max(poly.max(0) - poly.min(0)))
        ring = _mask(poly, x0, y0, h, w, outline=max(1.0, side * rng.uniform(0.03, 0.07)))
        shade = np.float32(0.05 if _luma(c0) > 0.5 else 0.95)
        win += (shade - win) * (ring * cover)[..., None]


def render_clutter(
    seed: int, index: int, size: int = 320, split: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Render one image: ``(uint8 (size, size, 3), boxes (M, 4) float32, labels (M,) int64)``.

    Boxes are ``(x1, y1, x2, y2)`` pixels, the polygon's exact extent; the longer side
    lies in ``[MIN_SIZE, min(MAX_SIZE, 0.6 size)]``.

    Example:
        >>> img, boxes, labels = render_clutter(0, 0, size=96)
        >>> img.shape, img.dtype.name, boxes.shape[1], bool((boxes[:, 2:] <= 96).all())
        ((96, 96, 3), 'uint8', 4, True)
    """
    if size < 32:
        raise ValueError(f"render_clutter: size must be >= 32, got {size!r}")
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(split), int(index), 0xC1077E2])
    img = _background(rng, size)
    for _ in range(int(rng.integers(6, 20))):
        _stroke(rng, img, max_width=5.0)
    for _ in range(int(rng.integers(2, 9))):
        _blob(rng, img)
    hi = min(MAX_SIZE, 0.6 * size)
    boxes: list[np.ndarray] = []
    labels: list[int] = []
    for _ in range(int(rng.integers(1, 9))):
        label = int(rng.choice(len(CLASSES), p=np.asarray(FREQUENCIES)))
        side = math.exp(rng.uniform(math.log(MIN_SIZE), math.log(hi)))
        poly = _posed_polygon(rng, label, side)
        ext = poly.max(0)
        for _try in range(20):
            off = rng.uniform(0, 1, 2) * (size - ext)
            box = np.concatenate([off, off + ext])
            if all(_hidden(b, box) <= _MAX_HIDDEN for b in boxes):
                break
        else:
            continue
        _draw_object(rng, img, poly + off)
        boxes.append(box)
        labels.append(label)
    for _ in range(int(rng.integers(0, 5))):  # occluders drawn over the objects
        _stroke(rng, img, max_width=3.0)
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(0.02, 0.06))
    speckle = rng.random(img.shape[:2]) < 0.002
    img[speckle] = rng.random((int(speckle.sum()), 1)).astype(np.float32)
    out = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    return out, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64)


def write_split(out_dir: str, num_images: int, size: int = 320, seed: int = 0, split: str = "train") -> str:
    """Render ``num_images`` images into ``out_dir/images`` and write ``out_dir/annotations.json``.

    Returns the annotation path. Example: see :func:`main`.
    """
    from PIL import Image

    if split not in SPLITS:
        raise ValueError(f"write_split: split must be one of {sorted(SPLITS)}, got {split!r}")
    img_dir = os.path.join(out_dir, "images")
    os.makedirs(img_dir, exist_ok=True)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for i in range(num_images):
        img, boxes, labels = render_clutter(seed, i, size=size, split=SPLITS[split])
        name = f"{i:06d}.png"
        Image.fromarray(img).save(os.path.join(img_dir, name), compress_level=1)
        images.append({"id": i, "file_name": name, "width": size, "height": size})
        for (x1, y1, x2, y2), lab in zip(boxes.tolist(), labels.tolist()):
            w, h = x2 - x1, y2 - y1
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": lab + 1,
                    "bbox": [x1, y1, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": k + 1, "name": n, "supercategory": "clutter"} for k, n in enumerate(CLASSES)]
    path = os.path.join(out_dir, "annotations.json")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    os.replace(tmp, path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: write the train and val splits; print the counts and the time taken."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--out", required=True, help="output folder (train/ and val/ are made in it)")
    p.add_argument("--train", type=int, default=400, help="training images (default 400)")
    p.add_argument("--val", type=int, default=200, help="validation images (default 200)")
    p.add_argument("--size", type=int, default=320, help="image side in pixels (default 320)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    args = p.parse_args(argv)
    if args.train < 0 or args.val < 0:
        p.error(f"--train and --val must be >= 0, got {args.train} and {args.val}")
    if args.size < 32:
        p.error(f"--size must be >= 32, got {args.size}")
    t0 = time.perf_counter()
    for split, n in (("train", args.train), ("val", args.val)):
        path = write_split(os.path.join(args.out, split), n, size=args.size, seed=args.seed, split=split)
        with open(path, encoding="utf-8") as f:
            count = len(json.load(f)["annotations"])
        print(f"{split}: {n} images, {count} objects -> {path}")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
