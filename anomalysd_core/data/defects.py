"""The synthetic defects of the mini benchmark (``scratch``, ``stain``, ``hole``, ``crack``,
``foreign``), painted at the output resolution on an 8-bit clean crop, with a ground-truth mask
that is exactly the set of pixels that changed (``quantise_defect``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .sources import save_png

TOL_LEVELS = 1           # a pixel counts as changed when some channel moves by more than this


AREA_RANGE = (0.008, 0.08)  # accepted defect area, as a fraction of the image


TEXTURE_DEFECTS = ("scratch", "stain", "hole", "crack", "foreign")


OBJECT_DEFECTS = ("scratch", "stain", "hole")


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


def defect_plan(rng, types, n):
    order = list(rng.permutation(len(types)))
    return [types[order[i % len(types)]] for i in range(n)]


def save_defective(root: Path, cls: str, defect: str, index: dict, image: np.ndarray,
                   mask: np.ndarray) -> tuple[str, str]:
    """Write the next defective test image of ``cls`` and its ground-truth mask in MVTec-AD layout
    (``test/<defect>/NNN.png``, ``ground_truth/<defect>/NNN_mask.png``, ``NNN`` counted per
    defect type in ``index``); returns both relative paths."""
    j = index[defect] = index.get(defect, -1) + 1
    f, mf = f"{cls}/test/{defect}/{j:03d}.png", f"{cls}/ground_truth/{defect}/{j:03d}_mask.png"
    save_png(root / f, image)
    save_png(root / mf, mask.astype(np.uint8) * 255)
    return f, mf
