"""The embedded ``mini`` benchmark: small, real images in MVTec-AD layout, built offline in seconds.

MVTec-AD and VisA (the paper's benchmarks, Sec. 5.1) cannot be downloaded here, so the default data
of this project is built from images that ship inside pip packages:

=============  =======  ====================================================  ==================
class          kind     source                                                defects / masks
=============  =======  ====================================================  ==================
brick          texture  ``skimage.data.brick()`` (CC0Textures Bricks25, CC0)   synthetic, exact
grass          texture  ``skimage.data.grass()`` (DeviantArt Grass-01, CC0)    synthetic, exact
gravel         texture  ``skimage.data.gravel()`` (CC0Textures Gravel04, CC0)  synthetic, exact
coins          object   ``skimage.data.coins()`` (Brooklyn Museum, no known    synthetic, exact,
                        copyright restrictions)                               on the coin only
solar_mono     texture  ``elpv-dataset`` mono-crystalline cells (CC BY-NC-SA)  real, image labels
solar_poly     texture  ``elpv-dataset`` poly-crystalline cells (CC BY-NC-SA)  real, image labels
=============  =======  ====================================================  ==================

* **Textures** (brick, grass, gravel; 512 x 512 gray, colourised with a fixed two-colour ramp per
  class): every crop is ``TEXTURE_CROP`` source pixels square, resized to ``size``. Training crops
  come from the top half of the source (rows 0-255) and test crops from the bottom half (rows
  256-511), so no training pixel is ever seen at test time; the manifest records each crop box.
* **Coins** (object class): coins are found by thresholding and labelling (with a background
  correction for the dimmer top row), each crop is centred on one coin, and training and test
  images come from different coins. Defects are drawn only on the (eroded) coin, so the background
  of an anomalous image is normal.
* **Synthetic defects** (named by their folder): ``scratch`` (thin bright or dark polyline),
  ``stain`` (smooth, irregular discoloured blob), ``hole`` (dark shaded ellipse), ``crack`` (jagged
  dark line with branches), ``foreign`` (patch pasted from another texture). Each covers roughly
  1-8% of the image. Defects are painted at the output resolution on the 8-bit clean crop; the
  ground-truth mask is then *exactly* the set of pixels that differ: any channel change of more
  than ``TOL_LEVELS``/255 sets the mask pixel, smaller changes are undone, so
  ``mask == any(defective != clean)`` holds by construction (images are saved as 8-bit PNG).
* **Solar cells** (electroluminescence images from ``elpv-dataset``, 300 x 300 gray): normals
  are cells with defect probability 0, anomalies cells with probability >= 2/3. The dataset has
  **image labels only**: these classes have no ``ground_truth`` folder, so
  :meth:`~anomalysd_core.data.MVTecDataset.has_pixel_masks` is False and pixel metrics (pixel
  AUROC, PRO) skip them; image metrics include them.

Profiles: ``mini`` has six classes, 4 training normals and 16 test images (8 normal, 8
anomalous) per class (sized for the CPU budget of the full mini regeneration); ``smoke`` (CI) has three classes (brick, coins, solar_mono), 2 training
normals and 6 test images (3 + 3). Every random choice comes from ``np.random.default_rng``
seeded with ``(seed, crc32(class))``: the same seed gives byte-identical PNGs.

Output: ``<out>/<class>/{train/good, test/<defect>, ground_truth/<defect>}``, ``<class>/meta.json``
(kind, source, licence), ``manifest.csv`` (one row per image), ``samples.png`` (a normal test image,
an anomalous one and its mask per class) and, written last, ``build_complete.json``.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .data import DataError
from .utils import atomic_path, write_csv_atomic, write_json_atomic

MARKER = "build_complete.json"
BUILD_VERSION = 3  # 3: the validation split (the test build is unchanged)
MINI_SEED = 0            # the benchmark is fixed; experiment seeds only change the K-shot draws
VAL_SEED = 1             # the validation build (``split="val"``) that settings are chosen on
VAL_SUFFIX = "-val"      # ``ensure_mini`` builds the validation split into a folder named like this
TEXTURE_CROP = 160       # source pixels per texture crop (of 512)
COIN_CROP = 80           # source pixels per coin crop (coins are 40-65 px wide)
TOL_LEVELS = 1           # a pixel counts as changed when some channel moves by more than this
AREA_RANGE = (0.008, 0.08)  # accepted defect area, as a fraction of the image

PROFILES = {
    "mini": dict(classes=("brick", "grass", "gravel", "coins", "solar_mono", "solar_poly"),
                 train=4, test_good=8, test_bad=8),
    "smoke": dict(classes=("brick", "coins", "solar_mono"), train=2, test_good=3, test_bad=3),
}

TEXTURE_DEFECTS = ("scratch", "stain", "hole", "crack", "foreign")
OBJECT_DEFECTS = ("scratch", "stain", "hole")
_TEXTURES = ("brick", "grass", "gravel")

_CC0 = "Creative Commons CC0 (per the skimage.data docstring); scikit-image itself is BSD-3-Clause"
CLASS_INFO: dict[str, dict] = {
    "brick": dict(kind="texture", source="skimage.data.brick() - CC0Textures 'Bricks25', "
                  "perspective-corrected, rotated, cropped and scaled by scikit-image",
                  licence=_CC0, ramp=((0.14, 0.07, 0.05), (0.96, 0.70, 0.58))),
    "grass": dict(kind="texture", source="skimage.data.grass() - DeviantArt 'Grass-01' by "
                  "linolafett, cropped and converted to grayscale by scikit-image",
                  licence=_CC0, ramp=((0.05, 0.11, 0.03), (0.74, 0.93, 0.46))),
    "gravel": dict(kind="texture", source="skimage.data.gravel() - CC0Textures 'Gravel04', "
                   "rescaled, cropped and converted to grayscale by scikit-image",
                   licence=_CC0, ramp=((0.07, 0.065, 0.06), (0.97, 0.93, 0.86))),
    "coins": dict(kind="object", source="skimage.data.coins() - Greek coins from Pompeii, "
                  "Brooklyn Museum Collection (image 51611)",
                  licence="No known copyright restrictions (per the skimage.data docstring); "
                  "scikit-image itself is BSD-3-Clause",
                  ramp=((0.09, 0.085, 0.08), (0.99, 0.94, 0.84))),
    "solar_mono": dict(kind="texture", source="elpv-dataset (PyPI): electroluminescence images of "
                       "mono-crystalline solar cells, Buerhop-Lutz et al. 2018, Deitsch et al. 2019",
                       licence="CC BY-NC-SA 4.0 (data); package code Apache-2.0", elpv_type="mono"),
    "solar_poly": dict(kind="texture", source="elpv-dataset (PyPI): electroluminescence images of "
                       "poly-crystalline solar cells, Buerhop-Lutz et al. 2018, Deitsch et al. 2019",
                       licence="CC BY-NC-SA 4.0 (data); package code Apache-2.0", elpv_type="poly"),
}


def _class_rng(seed: int, cls: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(cls.encode())]))


# --------------------------------------------------------------------------- sources

@functools.lru_cache(maxsize=None)
def _source_rgb(cls: str) -> np.ndarray:
    """Colourised source image (float64 H x W x 3 in [0, 1]) of a texture or the coins."""
    import skimage.data

    gray = getattr(skimage.data, cls)().astype(np.float64) / 255.0
    dark, light = (np.asarray(c, dtype=np.float64) for c in CLASS_INFO[cls]["ramp"])
    rgb = dark + gray[..., None] * (light - dark)
    rgb.setflags(write=False)
    return rgb


def clean_crop(cls: str, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """The clean 8-bit RGB crop ``box = (y0, x0, y1, x1)`` of a texture/coins source, resized to
    ``size x size`` (bilinear, antialiased). The builder and the tests both use it."""
    y0, x0, y1, x1 = (int(v) for v in box)
    crop = _source_rgb(cls)[y0:y1, x0:x1]
    u8 = np.round(crop * 255.0).astype(np.uint8)
    if u8.shape[:2] != (size, size):
        u8 = np.asarray(Image.fromarray(u8).resize((size, size), Image.BILINEAR))
    return u8


@functools.lru_cache(maxsize=None)
def _coins() -> tuple[tuple[np.ndarray, tuple[float, float]], ...]:
    """Per coin: (full-image bool mask, centroid), sorted top-to-bottom then left-to-right.

    Otsu on the smoothed image separates most coins; the dimmer top row merges with the brighter
    background there, so a second pass thresholds the image minus a large grey opening (background
    estimate) and adds the coins the first pass missed. Masks are the regions' convex hulls.
    """
    import skimage.data
    from scipy import ndimage as ndi
    from skimage import filters, measure, morphology

    img = skimage.data.coins().astype(np.float64) / 255.0
    sm = filters.gaussian(img, 1.0)

    def segment(x):
        b = x > filters.threshold_otsu(x)
        b = ndi.binary_fill_holes(ndi.binary_opening(b, structure=morphology.disk(2)))
        return measure.label(b)

    masks: list[np.ndarray] = []
    for r in measure.regionprops(segment(sm)):
        if 800 <= r.area <= 4000 and r.solidity >= 0.95:
            m = np.zeros(img.shape, bool)
            m[r.slice] = r.image_convex
            masks.append(m)
    background = filters.gaussian(ndi.grey_opening(sm, size=(41, 41)), 5)
    for r in measure.regionprops(segment(sm - background)):
        if r.area < 500:
            continue
        m = np.zeros(img.shape, bool)
        m[r.slice] = r.image_convex
        if not any((m & o).any() for o in masks):
            masks.append(m)
    coins = []
    for m in masks:
        ys, xs = np.nonzero(m)
        coins.append((m, (float(ys.mean()), float(xs.mean()))))
    # reading order: split into rows of coins where the sorted centre heights jump by > 30 px
    coins.sort(key=lambda c: c[1][0])
    band, bands, last = 0, [], None
    for _, (cy, _cx) in coins:
        if last is not None and cy - last > 30:
            band += 1
        bands.append(band)
        last = cy
    order = sorted(range(len(coins)), key=lambda i: (bands[i], coins[i][1][1]))
    return tuple(coins[i] for i in order)


def _coin_box(centroid, shape) -> tuple[int, int, int, int]:
    h, w = shape
    y0 = int(round(centroid[0] - COIN_CROP / 2))
    x0 = int(round(centroid[1] - COIN_CROP / 2))
    y0 = min(max(y0, 0), h - COIN_CROP)
    x0 = min(max(x0, 0), w - COIN_CROP)
    return (y0, x0, y0 + COIN_CROP, x0 + COIN_CROP)


def coin_region(coin_id: int, box, size: int, erode: bool = True) -> np.ndarray:
    """Bool mask of coin ``coin_id`` inside crop ``box`` at ``size``; eroded by ``size // 40``
    pixels when ``erode`` (the region where coin defects may be painted)."""
    from scipy import ndimage as ndi

    y0, x0, y1, x1 = box
    m = _coins()[coin_id][0][y0:y1, x0:x1]
    m = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((size, size), Image.NEAREST)) > 0
    if erode:
        m = ndi.binary_erosion(m, iterations=max(1, size // 40))
    return m


@functools.lru_cache(maxsize=None)
def _elpv_table():
    """(file names, probabilities, types, data folder) of elpv-dataset, read from the package's
    ``labels.csv`` the way ``elpv_dataset.utils.load_dataset`` reads it, without decoding all
    2,624 images (load_dataset takes seconds; we open only the cells we use)."""
    try:
        import elpv_dataset
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise DataError("the solar classes need the PyPI package 'elpv-dataset' "
                        "(pip install elpv-dataset)") from e
    data_dir = Path(elpv_dataset.__file__).resolve().parent / "data"
    labels = data_dir / "labels.csv"
    if not labels.is_file():
        raise DataError(f"elpv-dataset labels file {str(labels)!r} not found")
    t = np.genfromtxt(labels, dtype=["|S19", "<f8", "|S4"], names=["path", "probability", "type"])
    return (tuple(np.char.decode(t["path"])), np.asarray(t["probability"], dtype=np.float64),
            tuple(np.char.decode(t["type"])), data_dir)


# --------------------------------------------------------------------------- synthetic defects

def _grid(size):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    return yy, xx


def _polyline_alpha(points, width: float, size: int) -> np.ndarray:
    """Antialiased coverage of a polyline of the given width (pixels)."""
    yy, xx = _grid(size)
    d = np.full((size, size), np.inf)
    for (py, px), (qy, qx) in zip(points[:-1], points[1:]):
        vy, vx = qy - py, qx - px
        L2 = vy * vy + vx * vx
        t = np.clip(((yy - py) * vy + (xx - px) * vx) / L2, 0.0, 1.0) if L2 > 0 else 0.0
        d = np.minimum(d, np.hypot(yy - (py + t * vy), xx - (px + t * vx)))
    return np.clip(width / 2.0 + 0.5 - d, 0.0, 1.0)


def _walk(rng, start, heading, n, step, jitter):
    pts = [tuple(start)]
    for _ in range(n):
        a = heading + rng.uniform(-jitter, jitter)
        y, x = pts[-1]
        pts.append((y + step * np.sin(a), x + step * np.cos(a)))
    return pts


def _start_point(rng, size, allowed):
    if allowed is not None:
        from scipy import ndimage as ndi

        inner = ndi.binary_erosion(allowed, iterations=max(1, size // 12))
        cand = np.argwhere(inner if inner.any() else allowed)
        y, x = cand[rng.integers(len(cand))]
        return np.array([y + 0.5, x + 0.5])
    return rng.uniform(0.15 * size, 0.85 * size, size=2)


def _paint_scratch(clean, rng, size, allowed, donor):
    n = int(rng.integers(2, 5))
    length = size * rng.uniform(0.3, 0.55)
    heading = rng.uniform(0, 2 * np.pi)
    pts = [tuple(_start_point(rng, size, allowed))]
    for _ in range(n):
        heading += rng.uniform(-0.4, 0.4)
        y, x = pts[-1]
        pts.append((y + length / n * np.sin(heading), x + length / n * np.cos(heading)))
    alpha = _polyline_alpha(pts, max(1.0, size / 70.0), size) * rng.uniform(0.8, 0.95)
    bright = clean.mean() < 0.5 if allowed is None else clean[allowed].mean() < 0.5
    colour = np.array([0.95, 0.94, 0.9]) if bright else np.array([0.06, 0.05, 0.05])
    return alpha, np.broadcast_to(colour, clean.shape), ("bright" if bright else "dark")


def _paint_crack(clean, rng, size, allowed, donor):
    step = max(1.2, size / 40.0)
    heading = rng.uniform(0, 2 * np.pi)
    main = _walk(rng, _start_point(rng, size, allowed), heading, int(rng.integers(12, 20)), step, 0.8)
    alpha = _polyline_alpha(main, max(1.0, size / 60.0), size)
    nb = int(rng.integers(1, 3))
    for _ in range(nb):
        origin = main[int(rng.integers(2, len(main) - 1))]
        h = heading + rng.choice([-1, 1]) * rng.uniform(0.5, 1.2)
        branch = _walk(rng, origin, h, int(rng.integers(4, 9)), step, 0.8)
        alpha = np.maximum(alpha, _polyline_alpha(branch, max(0.8, size / 110.0), size))
    return alpha * 0.92, clean * 0.18, f"{nb} branches"


def _paint_stain(clean, rng, size, allowed, donor):
    yy, xx = _grid(size)
    cy, cx = _start_point(rng, size, allowed)
    r0 = size * rng.uniform(0.07, 0.12)
    theta = np.arctan2(yy - cy, xx - cx)
    r = np.full_like(theta, r0)
    for k in (2, 3, 4):
        r += r0 * rng.uniform(0.0, 0.12) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    d = np.hypot(yy - cy, xx - cx) / r
    t = np.clip((1.0 - d) / 0.35, 0.0, 1.0)
    alpha = t * t * (3 - 2 * t) * rng.uniform(0.65, 0.85)
    tints = {"rust": (0.78, 0.42, 0.18), "dark": (0.30, 0.30, 0.32), "oil": (0.55, 0.50, 0.20)}
    name = list(tints)[int(rng.integers(len(tints)))]
    layer = clean * np.array(tints[name]) + 0.04
    return alpha, layer, name


def _paint_hole(clean, rng, size, allowed, donor):
    yy, xx = _grid(size)
    cy, cx = _start_point(rng, size, allowed)
    a = max(2.5, size * rng.uniform(0.05, 0.085))
    b = max(2.0, a * rng.uniform(0.6, 1.0))
    th = rng.uniform(0, np.pi)
    u = (yy - cy) * np.sin(th) + (xx - cx) * np.cos(th)
    v = (yy - cy) * np.cos(th) - (xx - cx) * np.sin(th)
    d = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    alpha = np.clip((1.0 - d) * b + 0.5, 0.0, 1.0)
    light = rng.uniform(0, 2 * np.pi)  # direction the inner wall is lit from
    g = np.clip(0.5 + 0.5 * (u * np.cos(light) + v * np.sin(light)) / a, 0.0, 1.0)
    shade = 0.03 + 0.16 * g ** 2
    layer = shade[..., None] * np.array([1.0, 0.9, 0.8])
    return alpha, layer, f"{2 * a:.1f}x{2 * b:.1f}px"


def _paint_foreign(clean, rng, size, allowed, donor):
    yy, xx = _grid(size)
    cy, cx = _start_point(rng, size, allowed)
    a, b = size * rng.uniform(0.08, 0.13, size=2)
    th = rng.uniform(0, np.pi)
    u = (yy - cy) * np.sin(th) + (xx - cx) * np.cos(th)
    v = (yy - cy) * np.cos(th) - (xx - cx) * np.sin(th)
    if rng.random() < 0.5:   # ellipse
        alpha = np.clip((1.0 - np.sqrt((u / a) ** 2 + (v / b) ** 2)) * min(a, b) + 0.5, 0.0, 1.0)
    else:                    # rotated rectangle
        alpha = np.clip(np.minimum(a - np.abs(u), b - np.abs(v)) + 0.5, 0.0, 1.0)
    name, img = donor
    return alpha, img.astype(np.float64) / 255.0, name


_PAINTERS = {"scratch": _paint_scratch, "stain": _paint_stain, "hole": _paint_hole,
             "crack": _paint_crack, "foreign": _paint_foreign}


def quantise_defect(clean_u8: np.ndarray, defective: np.ndarray, tol_levels: int = TOL_LEVELS):
    """8-bit defective image and its exact mask: a pixel is in the mask iff some channel moved by
    more than ``tol_levels`` grey levels; smaller changes are reverted to the clean value, so the
    returned mask equals ``np.any(result != clean_u8, axis=-1)``."""
    out = np.round(np.clip(defective, 0.0, 1.0) * 255.0).astype(np.uint8)
    diff = np.abs(out.astype(np.int16) - clean_u8.astype(np.int16))
    mask = np.any(diff > tol_levels, axis=-1)
    out[~mask] = clean_u8[~mask]
    return out, mask


def make_defect(clean_u8: np.ndarray, defect: str, rng: np.random.Generator,
                allowed: np.ndarray | None = None, donor=None, area_range=AREA_RANGE,
                tries: int = 40):
    """Paint one named defect on an 8-bit RGB image.

    ``allowed`` (bool H x W) restricts the defect (used for the coins); ``donor`` is
    ``(name, uint8 image)`` for ``foreign``. Returns ``(defective_u8, mask, detail)`` with
    ``mask == any(defective_u8 != clean_u8)``. Shapes whose area falls outside ``area_range``
    are redrawn; after ``tries`` the attempt closest to the range is kept.
    """
    if defect not in _PAINTERS:
        raise ValueError(f"unknown defect type {defect!r}; known: {sorted(_PAINTERS)}")
    size = clean_u8.shape[0]
    clean = clean_u8.astype(np.float64) / 255.0
    best, best_gap = None, np.inf
    for _ in range(tries):
        alpha, layer, detail = _PAINTERS[defect](clean, rng, size, allowed, donor)
        alpha = np.where(alpha < 0.02, 0.0, alpha)
        if allowed is not None:
            alpha = alpha * allowed
        out, mask = quantise_defect(clean_u8, clean * (1 - alpha[..., None]) + layer * alpha[..., None])
        frac = mask.mean()
        gap = max(area_range[0] - frac, frac - area_range[1], 0.0)
        if mask.any() and gap < best_gap:
            best, best_gap = (out, mask, detail), gap
        if best_gap == 0.0:
            break
    if best is None:
        raise RuntimeError(f"could not paint a visible {defect!r} defect")
    return best


# --------------------------------------------------------------------------- writing

def _save_png(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")


def _defect_plan(rng, types, n):
    order = list(rng.permutation(len(types)))
    return [types[order[i % len(types)]] for i in range(n)]


def _build_texture(cls, root: Path, size, seed, counts, rng, split="test", holdout=False):
    """Texture crops. The test build's shots come from rows 0-255 and its test crops from rows
    256-511. The validation build never reads rows 256-511: its crops all come from rows 0-255,
    where test crops may overlap the shots, or, with ``holdout``, its shots come from columns
    0-255 and its test crops from columns 256-511, disjoint regions as in the test build."""
    rows = []
    span = 256 - TEXTURE_CROP
    test_top = 0 if split == "val" else 256  # the validation build never reads the bottom half

    def box(region):
        y0 = int(rng.integers(0, span + 1)) + (0 if region == "train" else test_top)
        if holdout:  # split == "val": left and right quarters of the top half
            x0 = int(rng.integers(0, span + 1)) + (0 if region == "train" else 256)
        else:
            x0 = int(rng.integers(0, 512 - TEXTURE_CROP + 1))
        return (y0, x0, y0 + TEXTURE_CROP, x0 + TEXTURE_CROP)

    if holdout:
        regions = {"train": "top left (rows 0-255, columns 0-255)",
                   "test": "top right (rows 0-255, columns 256-511)"}
    else:
        regions = {"train": "top half (rows 0-255)",
                   "test": "top half (rows 0-255)" if split == "val" else "bottom half (rows 256-511)"}

    def row(split, label, defect, file, b, mask_file="", area=0.0, detail=""):
        return dict(cls=cls, kind="texture", split=split, label=label, defect=defect, file=file,
                    mask_file=mask_file, source=f"skimage.data.{cls}()", source_item="",
                    region=regions[split], crop_box=",".join(map(str, b)), size=size, seed=seed,
                    defect_area=round(float(area), 5), detail=detail, probability="")

    for i in range(counts["train"]):
        b = box("train")
        f = f"{cls}/train/good/{i:03d}.png"
        _save_png(root / f, clean_crop(cls, b, size))
        rows.append(row("train", 0, "good", f, b))
    for i in range(counts["test_good"]):
        b = box("test")
        f = f"{cls}/test/good/{i:03d}.png"
        _save_png(root / f, clean_crop(cls, b, size))
        rows.append(row("test", 0, "good", f, b))
    index: dict[str, int] = {}
    for defect in _defect_plan(rng, TEXTURE_DEFECTS, counts["test_bad"]):
        b = box("test")
        clean = clean_crop(cls, b, size)
        donor = None
        if defect == "foreign":
            others = [t for t in _TEXTURES if t != cls]
            dname = others[int(rng.integers(len(others)))]
            y0, x0 = (int(v) for v in rng.integers(0, 512 - TEXTURE_CROP + 1, size=2))
            donor = (dname, clean_crop(dname, (y0, x0, y0 + TEXTURE_CROP, x0 + TEXTURE_CROP), size))
        out, mask, detail = make_defect(clean, defect, rng, donor=donor)
        j = index[defect] = index.get(defect, -1) + 1
        f = f"{cls}/test/{defect}/{j:03d}.png"
        mf = f"{cls}/ground_truth/{defect}/{j:03d}_mask.png"
        _save_png(root / f, out)
        _save_png(root / mf, mask.astype(np.uint8) * 255)
        rows.append(row("test", 1, defect, f, b, mf, mask.mean(), detail))
    return rows


def _coin_ids(rng, n_coins: int, counts) -> dict:
    """Coin ids of the train, normal-test and defective-test images (one coin per image)."""
    need = counts["train"] + counts["test_good"] + counts["test_bad"]
    if n_coins < need:
        raise DataError(f"coins: found {n_coins} coins, need {need} (one per image)")
    order = [int(i) for i in rng.permutation(n_coins)]
    return {"train": order[:counts["train"]],
            "good": order[counts["train"]:counts["train"] + counts["test_good"]],
            "bad": order[counts["train"] + counts["test_good"]:need]}


def _val_coin_ids(rng, n_coins: int, counts, test_ids: dict) -> dict:
    """The validation build's coins: the test build's training coins (the shots), and test images
    only from the coins the test build leaves unused: normal ones first, then defects painted on
    the rest of them (on the same ones when too few are left). No test image shows a shot's coin,
    as in the test build."""
    spare = [i for i in range(n_coins) if i not in test_ids["good"] + test_ids["bad"] + test_ids["train"]]
    if not spare:
        raise DataError("coins: no coin is left over for the validation build")
    good = spare[:counts["test_good"]]
    rest = spare[len(good):] or spare
    n = counts["test_bad"]
    bad = [rest[int(i)] for i in rng.choice(len(rest), size=n, replace=len(rest) < n)]
    return {"train": list(test_ids["train"]), "good": good, "bad": bad}


def _build_coins(cls, root: Path, size, seed, counts, rng, split="test", base=None):
    coins = _coins()
    if split == "val":  # ``base``: the counts of the test build whose coins are avoided
        test_ids = _coin_ids(_class_rng(MINI_SEED, cls), len(coins), base or counts)
        ids = _val_coin_ids(rng, len(coins), counts, test_ids)
    else:
        ids = _coin_ids(rng, len(coins), counts)
    shape = coins[0][0].shape
    rows = []

    def row(split, label, defect, file, cid, b, mask_file="", area=0.0, detail=""):
        return dict(cls=cls, kind="object", split=split, label=label, defect=defect, file=file,
                    mask_file=mask_file, source="skimage.data.coins()", source_item=f"coin_{cid:02d}",
                    region=f"centred on coin {cid}", crop_box=",".join(map(str, b)), size=size,
                    seed=seed, defect_area=round(float(area), 5), detail=detail, probability="")

    for part, key, folder in (("train", "train", "train/good"), ("test", "good", "test/good")):
        for i, cid in enumerate(ids[key]):
            b = _coin_box(coins[cid][1], shape)
            f = f"{cls}/{folder}/{i:03d}.png"
            _save_png(root / f, clean_crop(cls, b, size))
            rows.append(row(part, 0, "good", f, cid, b))
    index: dict[str, int] = {}
    for defect, cid in zip(_defect_plan(rng, OBJECT_DEFECTS, counts["test_bad"]), ids["bad"]):
        b = _coin_box(coins[cid][1], shape)
        clean = clean_crop(cls, b, size)
        out, mask, detail = make_defect(clean, defect, rng, allowed=coin_region(cid, b, size))
        j = index[defect] = index.get(defect, -1) + 1
        f = f"{cls}/test/{defect}/{j:03d}.png"
        mf = f"{cls}/ground_truth/{defect}/{j:03d}_mask.png"
        _save_png(root / f, out)
        _save_png(root / mf, mask.astype(np.uint8) * 255)
        rows.append(row("test", 1, defect, f, cid, b, mf, mask.mean(), detail))
    return rows


def _solar_picks(cls, counts, rng, exclude=()):
    """Indices into elpv-dataset of the normal cells (train first) and the defective test cells."""
    _names, probs, types, _ = _elpv_table()
    kind = CLASS_INFO[cls]["elpv_type"]
    is_type = np.array([t == kind for t in types])
    normal = np.setdiff1d(np.flatnonzero(is_type & (probs == 0.0)), exclude)
    defect = np.setdiff1d(np.flatnonzero(is_type & (probs >= 2.0 / 3.0 - 1e-6)), exclude)
    n_norm = counts["train"] + counts["test_good"]
    if len(normal) < n_norm or len(defect) < counts["test_bad"]:
        raise DataError(f"{cls}: elpv-dataset has too few {kind} cells")
    pick_n = [int(i) for i in rng.choice(normal, size=n_norm, replace=False)]
    pick_d = [int(i) for i in rng.choice(defect, size=counts["test_bad"], replace=False)]
    return pick_n, pick_d


def _build_solar(cls, root: Path, size, seed, counts, rng, split="test", base=None):
    names, probs, _types, data_dir = _elpv_table()
    kind = CLASS_INFO[cls]["elpv_type"]
    if split == "val":  # other cells than every cell of the test build (made with ``base`` counts)
        t_n, t_d = _solar_picks(cls, base or counts, _class_rng(MINI_SEED, cls))
        pick_n, pick_d = _solar_picks(cls, counts, rng, exclude=t_n + t_d)
    else:
        pick_n, pick_d = _solar_picks(cls, counts, rng)
    rows = []
    plan = ([("train", 0, "good", "train/good", i) for i in pick_n[:counts["train"]]]
            + [("test", 0, "good", "test/good", i) for i in pick_n[counts["train"]:]]
            + [("test", 1, "defective", "test/defective", i) for i in pick_d])
    index: dict[str, int] = {}
    for split, label, dname, folder, idx in plan:
        with Image.open(data_dir / names[idx]) as im:
            im = im.convert("L")
            w, h = im.size
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            arr = np.asarray(im)
        j = index[folder] = index.get(folder, -1) + 1
        f = f"{cls}/{folder}/{j:03d}.png"
        _save_png(root / f, arr)
        rows.append(dict(cls=cls, kind="texture", split=split, label=label, defect=dname, file=f,
                         mask_file="", source="elpv-dataset", source_item=names[idx],
                         region="whole cell", crop_box=f"0,0,{h},{w}", size=size, seed=seed,
                         defect_area="", detail=f"type {kind}", probability=round(float(probs[idx]), 4)))
    return rows


def _samples_png(root: Path, rows: list[dict], classes, size: int) -> None:
    """One row per class: a normal test image, an anomalous one and its mask."""
    tile, label_w, head = max(size, 112), 120, 22
    font = ImageFont.load_default(size=12)
    sheet = Image.new("RGB", (label_w + 3 * tile + 4 * 4, head + len(classes) * (tile + 4)),
                      (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for c, title in enumerate(("normal (test)", "anomalous (test)", "ground truth")):
        draw.text((label_w + 4 + c * (tile + 4), 4), title, fill=(0, 0, 0), font=font)
    for r, cls in enumerate(classes):
        y = head + r * (tile + 4)
        good = next(x for x in rows if x["cls"] == cls and x["split"] == "test" and x["label"] == 0)
        bad = next(x for x in rows if x["cls"] == cls and x["label"] == 1)
        draw.text((4, y + tile // 2 - 14), cls, fill=(0, 0, 0), font=font)
        draw.text((4, y + tile // 2 + 2), bad["defect"], fill=(90, 90, 90), font=font)
        for c, rel in enumerate((good["file"], bad["file"], bad["mask_file"])):
            x = label_w + 4 + c * (tile + 4)
            if rel:
                im = Image.open(root / rel).convert("RGB").resize((tile, tile), Image.NEAREST)
                sheet.paste(im, (x, y))
            else:
                draw.rectangle([x, y, x + tile - 1, y + tile - 1], fill=(200, 200, 200))
                draw.text((x + 6, y + tile // 2 - 7), "no pixel mask", fill=(0, 0, 0), font=font)
    with atomic_path(root / "samples.png") as tmp:
        sheet.save(tmp, format="PNG")


MANIFEST_COLUMNS = ["cls", "kind", "split", "label", "defect", "file", "mask_file", "source",
                    "source_item", "region", "crop_box", "size", "seed", "defect_area", "detail",
                    "probability"]


def _is_mini_build(path: Path) -> bool:
    return (path / MARKER).is_file() or (path / "manifest.csv").is_file()


def build_mini(out_dir, size: int = 128, seed: int = 0, profile: str = "mini", split: str = "test",
               val_scale: int = 1, holdout: bool = False) -> Path:
    """Build the benchmark into ``out_dir`` (MVTec-AD layout) and return its path.

    ``split="val"`` builds the *validation* benchmark that settings are chosen on, with the same
    classes, counts and defect painters but none of the test build's (``MINI_SEED``) test pixels:
    texture test crops come from the top half (the training region), coins are the test build's
    training coins, test images from the coins it leaves unused (4 of the 24 for ``mini``: normal
    images from them, defects painted on them), and solar cells are cells the test build does not
    use at all. ``val_scale`` multiplies the validation build's test images per class (its shots
    stay as many): a larger build resolves smaller differences between settings. The coins' normal
    test images come only from the coins the test build leaves unused (4 in ``mini``), so beyond
    those only their defective images multiply.

    ``holdout`` (validation only) takes the textures' shots and test crops from disjoint regions
    (the top half's left and right columns), so that, as in the test build, no test crop shows a
    pixel of a shot; without it they come from the same rows and often overlap, which can favour
    the memory-bank methods (a test crop that shows part of a shot finds exact matches in the
    memory). Coins and solar cells are the same either way: their shots and test images are other
    coins and other cells already.

    The build goes into a hidden sibling folder, the marker ``build_complete.json`` is written
    last, and only then is the folder renamed onto ``out_dir``: an interrupted build never leaves a
    half-written ``out_dir``. An existing ``out_dir`` is replaced only if it is an earlier mini
    build (has a marker or a ``manifest.csv``) or empty; anything else raises :class:`DataError`.
    """
    if profile not in PROFILES:
        raise DataError(f"unknown mini profile {profile!r}; choose one of {sorted(PROFILES)}")
    if split not in ("test", "val"):
        raise DataError(f"unknown mini split {split!r}; choose 'test' or 'val'")
    if not isinstance(val_scale, (int, np.integer)) or val_scale < 1 or (val_scale > 1 and split != "val"):
        raise DataError(f"val_scale must be an integer >= 1, and above 1 only for split='val'; got {val_scale!r}")
    if holdout and split != "val":
        raise DataError("holdout applies to the validation build only (split='val'); "
                        "the test build's textures are held out by rows already")
    if not isinstance(size, (int, np.integer)) or size < 16:
        raise DataError(f"mini image size must be an integer >= 16, got {size!r}")
    size, seed = int(size), int(seed)
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not (out.is_dir() and (_is_mini_build(out) or not any(out.iterdir()))):
        raise DataError(f"{str(out)!r} exists and is not a mini build; refusing to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    base = PROFILES[profile]  # the test build's counts (the validation build avoids its images)
    spec = {**base, "test_good": base["test_good"] * val_scale, "test_bad": base["test_bad"] * val_scale}
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        rows: list[dict] = []
        for cls in spec["classes"]:
            rng = _class_rng(seed, cls)
            info = CLASS_INFO[cls]
            if cls.startswith("solar_"):
                new = _build_solar(cls, tmp, size, seed, spec, rng, split, base)
            elif cls == "coins":
                new = _build_coins(cls, tmp, size, seed, spec, rng, split, base)
            else:
                new = _build_texture(cls, tmp, size, seed, spec, rng, split, holdout)
            rows += new
            write_json_atomic(tmp / cls / "meta.json", {
                "kind": info["kind"], "source": info["source"], "licence": info["licence"],
                "pixel_masks": not cls.startswith("solar_"),
                "defects": sorted({r["defect"] for r in new if r["label"]}),
                "split": split,
                "train_test_split": (
                    ("different coins" if cls == "coins" else "different cells"
                     if cls.startswith("solar_") else "train crops from rows 0-255, test crops from rows 256-511")
                    if split == "test" else
                    ("training coins of the test build; test images from the coins it does not use"
                     if cls == "coins" else "cells unused by the test build" if cls.startswith("solar_")
                     else "train crops from rows 0-255 and columns 0-255, test crops from rows 0-255 and "
                     "columns 256-511" if holdout else "train and test crops both from rows 0-255 (may overlap)")),
            })
        import pandas as pd

        write_csv_atomic(tmp / "manifest.csv", pd.DataFrame(rows, columns=MANIFEST_COLUMNS))
        _samples_png(tmp, rows, spec["classes"], size)
        write_json_atomic(tmp / MARKER, {
            "profile": profile, "split": split, "size": size, "seed": seed, "version": BUILD_VERSION,
            "val_scale": int(val_scale), "holdout": bool(holdout),
            "classes": list(spec["classes"]), "n_images": len(rows)})
        os.chmod(tmp, 0o755)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "x")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.replace(tmp, out)
            except OSError:
                # another process finished the same build first: keep theirs if complete
                if (out / MARKER).is_file():
                    shutil.rmtree(tmp, ignore_errors=True)
                    return out
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def resolve_data_root(path) -> Path:
    """Absolute path of a config ``data_root``: relative paths are taken from the repository root
    (where ``pyproject.toml`` is) in a source checkout, else from the working directory."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    from .config import REPO_ROOT

    base = REPO_ROOT if (REPO_ROOT / "pyproject.toml").is_file() else Path.cwd()
    return (base / p).resolve()


def default_roots(profile: str) -> tuple[Path, Path]:
    """Where the benchmark of ``profile`` is built on first use: its default ``data_root`` and the
    validation build beside it (``data/mini`` and ``data/mini-val``)."""
    from .config import get_config

    root = resolve_data_root(get_config(profile).data_root)
    return root, root.with_name(root.name + VAL_SUFFIX)


def ensure_mini(cfg, build: bool = False) -> Path:
    """``cfg.data_root`` as an absolute path, building the mini/smoke benchmark there when needed.

    For profiles ``mini`` and ``smoke`` (dataset ``mvtec``) the folder is (re)built with
    ``cfg.image_size``, the profile and the fixed seed ``MINI_SEED`` (a folder whose name ends in
    ``-val``, such as ``data/mini-val``: the validation split with ``VAL_SEED``) when it has no
    completion marker while looking like a mini build (half-built), or was built with another size
    or profile. A missing folder is built only at the profile's default locations
    (``default_roots``) or with ``build=True`` (``data build-mini``): anywhere else a missing
    ``data_root`` is most likely a typo, and raises :class:`DataError` naming it rather than
    making up data there. A folder that is not a mini build (e.g. real MVTec-AD) is returned
    untouched. Other profiles never build: a missing root raises :class:`DataError`.
    """
    root = resolve_data_root(cfg.data_root)
    profile = cfg.profile if cfg.profile in PROFILES else None
    if profile is None or cfg.dataset != "mvtec":
        if not root.exists():
            raise DataError(f"data_root {str(root)!r} does not exist; only the mini and smoke "
                            f"profiles build their data (profile {cfg.profile!r}, dataset "
                            f"{cfg.dataset!r})")
        return root
    if not root.exists() and not build and root not in default_roots(profile):
        raise DataError(
            f"data_root {str(root)!r} does not exist. The {profile} benchmark is built on first use "
            f"only at {', '.join(str(p) for p in default_roots(profile))}; to build it elsewhere run "
            f"`python -m anomalysd_core data build-mini --profile {profile} --out {cfg.data_root}`, "
            "or correct the path")
    size = int(cfg.image_size)
    split = "val" if root.name.endswith(VAL_SUFFIX) else "test"
    marker = root / MARKER
    if marker.is_file():
        try:
            info = json.loads(marker.read_text())
        except (OSError, ValueError):
            info = {}
        if (info.get("size") == size and info.get("profile") == profile
                and info.get("version") == BUILD_VERSION and info.get("split", "test") == split):
            return root
    elif root.exists() and any(root.iterdir()) and not _is_mini_build(root):
        return root  # somebody's own dataset: leave it alone
    return build_mini(root, size=size, seed=VAL_SEED if split == "val" else MINI_SEED, profile=profile,
                      split=split)


__all__ = ["build_mini", "ensure_mini", "resolve_data_root", "make_defect", "quantise_defect",
           "clean_crop", "coin_region", "PROFILES", "CLASS_INFO", "TEXTURE_DEFECTS",
           "OBJECT_DEFECTS", "MARKER", "MINI_SEED", "VAL_SEED", "VAL_SUFFIX", "TEXTURE_CROP", "COIN_CROP", "TOL_LEVELS"]
