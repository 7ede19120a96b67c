"""The texture classes of the mini benchmark (brick, grass, gravel): crops of scikit-image's
512 x 512 textures, the shots and the test crops from disjoint regions of the source.

A 512 x 512 photo holds few independent 160-px crops, so the crops of a region are laid out on an
even grid (``spread_boxes``) rather than drawn at random: as far apart as their number allows.
``test_overlap`` measures what is left (the share of each test crop's pixels that another test
crop shows too), and the build records it in each class's ``meta.json``.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .defects import TEXTURE_DEFECTS, defect_plan, make_defect, save_defective
from .sources import TEXTURES, clean_crop, save_png

TEXTURE_CROP = 160       # source pixels per texture crop (of 512)


def grid_shape(n: int, height: int, width: int) -> tuple[int, int]:
    """Rows and columns of a grid of at least ``n`` points over a ``height`` x ``width`` range of
    top-left corners that makes the smaller of the two spacings as large as possible.

    >>> grid_shape(48, 96, 352), grid_shape(16, 96, 352), grid_shape(1, 0, 352)
    ((4, 12), (2, 8), (1, 1))
    """
    def spacing(rows: int) -> float:
        cols = math.ceil(n / rows)
        return min(height / (rows - 1) if rows > 1 else math.inf, width / (cols - 1) if cols > 1 else math.inf)

    rows = max(range(1, n + 1), key=lambda r: (spacing(r), -r * math.ceil(n / r)))
    return rows, math.ceil(n / rows)


def spread_boxes(n: int, top: int, left: int, height: int, width: int, rng,
                 crop: int = TEXTURE_CROP) -> list[tuple[int, int, int, int]]:
    """``n`` crop boxes ``(y0, x0, y1, x1)`` of ``crop`` px inside the region at (``top``,
    ``left``) of ``height`` x ``width`` px, on an even grid (``grid_shape``), in random order (the
    caller's ``rng``), so that normal and defective test crops are spread over the region alike;
    a grid with more points than ``n`` leaves out random ones."""
    span_y, span_x = height - crop, width - crop
    rows, cols = grid_shape(n, span_y, span_x)

    def axis(k: int, span: int) -> np.ndarray:
        """``k`` evenly spaced corners over [0, span], each moved by up to a quarter spacing (one
        corner: anywhere), so that another build seed gives other crops."""
        if k == 1:
            return np.array([int(rng.integers(0, span + 1))])
        step = span / (k - 1)
        jitter = rng.uniform(-step / 4, step / 4, size=k)
        return np.clip(np.linspace(0, span, k) + jitter, 0, span).round().astype(int)

    ys, xs = axis(rows, span_y), axis(cols, span_x)
    points = [(int(y), int(x)) for y in ys for x in xs]
    pick = sorted(rng.choice(len(points), size=n, replace=False)) if len(points) > n else range(n)
    chosen = [points[i] for i in pick]
    order = rng.permutation(n)
    return [(top + chosen[i][0], left + chosen[i][1], top + chosen[i][0] + crop, left + chosen[i][1] + crop)
            for i in order]


def test_overlap(boxes) -> dict:
    """How independent a class's test crops are: ``seen_in_another``, the mean over crops of the
    share of a crop's pixels that at least one other crop shows too, and ``largest_pairwise``, the
    mean over crops of the largest share it has with any one other crop (0 = disjoint crops).

    >>> test_overlap([(0, 0, 10, 10), (0, 5, 10, 15), (50, 50, 60, 60)])
    {'seen_in_another': 0.333, 'largest_pairwise': 0.333}
    """
    boxes = [tuple(int(v) for v in b) for b in boxes]
    if len(boxes) < 2:
        return {"seen_in_another": 0.0, "largest_pairwise": 0.0}
    y1 = max(b[2] for b in boxes)
    x1 = max(b[3] for b in boxes)
    count = np.zeros((y1, x1), np.int32)
    for b in boxes:
        count[b[0]:b[2], b[1]:b[3]] += 1
    seen, largest = [], []
    for i, a in enumerate(boxes):
        area = (a[2] - a[0]) * (a[3] - a[1])
        seen.append(float((count[a[0]:a[2], a[1]:a[3]] > 1).sum()) / area)
        inter = [max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
                 for j, b in enumerate(boxes) if j != i]
        largest.append(max(inter) / area)
    return {"seen_in_another": round(float(np.mean(seen)), 3),
            "largest_pairwise": round(float(np.mean(largest)), 3)}


def build_texture(cls, root: Path, size, seed, counts, rng, split="test", holdout=False):
    """Texture crops. The test build's shots come from rows 0-255 and its test crops from rows
    256-511. The validation build never reads rows 256-511: its crops all come from rows 0-255,
    where test crops may overlap the shots, or, with ``holdout``, its shots come from columns
    0-255 and its test crops from columns 256-511, disjoint regions as in the test build."""
    rows = []
    test_top = 0 if split == "val" else 256  # the validation build never reads the bottom half
    if holdout:  # split == "val": left and right quarters of the top half
        train_area, test_area = (0, 0, 256, 256), (0, 256, 256, 256)
        regions = {"train": "top left (rows 0-255, columns 0-255)",
                   "test": "top right (rows 0-255, columns 256-511)"}
    else:
        train_area, test_area = (0, 0, 256, 512), (test_top, 0, 256, 512)
        regions = {"train": "top half (rows 0-255)",
                   "test": "top half (rows 0-255)" if split == "val" else "bottom half (rows 256-511)"}
    n_test = counts["test_good"] + counts["test_bad"]
    train_boxes = spread_boxes(counts["train"], *train_area, rng)
    test_boxes = spread_boxes(n_test, *test_area, rng)

    def row(split, label, defect, file, b, mask_file="", area=0.0, detail=""):
        return dict(cls=cls, kind="texture", split=split, label=label, defect=defect, file=file,
                    mask_file=mask_file, source=f"skimage.data.{cls}()", source_item="",
                    region=regions[split], crop_box=",".join(map(str, b)), size=size, seed=seed,
                    defect_area=round(float(area), 5), detail=detail, probability="")

    for i, b in enumerate(train_boxes):
        f = f"{cls}/train/good/{i:03d}.png"
        save_png(root / f, clean_crop(cls, b, size))
        rows.append(row("train", 0, "good", f, b))
    for i, b in enumerate(test_boxes[:counts["test_good"]]):
        f = f"{cls}/test/good/{i:03d}.png"
        save_png(root / f, clean_crop(cls, b, size))
        rows.append(row("test", 0, "good", f, b))
    index: dict[str, int] = {}  # images written per defect type
    plan = defect_plan(rng, TEXTURE_DEFECTS, counts["test_bad"])
    for defect, b in zip(plan, test_boxes[counts["test_good"]:]):
        clean = clean_crop(cls, b, size)
        donor = None
        if defect == "foreign":
            others = [t for t in TEXTURES if t != cls]
            dname = others[int(rng.integers(len(others)))]
            y0, x0 = (int(v) for v in rng.integers(0, 512 - TEXTURE_CROP + 1, size=2))
            donor = (dname, clean_crop(dname, (y0, x0, y0 + TEXTURE_CROP, x0 + TEXTURE_CROP), size))
        out, mask, detail = make_defect(clean, defect, rng, donor=donor)
        f, mf = save_defective(root, cls, defect, index, out, mask)
        rows.append(row("test", 1, defect, f, b, mf, mask.mean(), detail))
    return rows
