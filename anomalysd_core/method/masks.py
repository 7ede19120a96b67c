"""Masks for fine-tuning (Sec. 4.1) and for inference (Sec. 4.2, eq 7 and 11).

Four kinds of mask appear in the paper:

* the foreground mask ``m_f`` of an object (Sec. 4.1). The paper does not say how it is computed;
  :func:`foreground_mask` documents the method chosen here;
* the training mask ``m``: a random rectangle ``m_r`` kept only when ``IoU(m_r, m_f) > gamma``
  with ``gamma`` drawn uniformly from ``{0.0, 0.2, 0.5}`` (Sec. 4.1, Table 4 "designed");
  :func:`training_mask`, :func:`sample_training_masks` and :func:`training_masks_torch`;
* the multi-scale inference masks ``M_ij^(k)``: one mask per patch of a ``k x k`` split of the
  image, ``k in {1, 2, 4, 8}``, 85 masks in all (Sec. 4.2, eq 18); :func:`grid_masks`;
* ``m~`` of eq (7): the pixel mask brought down to the latent resolution; :func:`downsample_mask`.

Convention: ``True`` (or 1.0) marks pixels that are HIDDEN from the inpainting model and must be
re-synthesised, as in ``z_o = E((1 - m) * x)`` of eq (7).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

TEXTURE_KINDS = ("texture", "textures")
OBJECT_KINDS = ("object", "objects")


def _as_rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def _disk(radius: int) -> np.ndarray:
    r = int(max(radius, 0))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return (yy * yy + xx * xx) <= r * r


# --------------------------------------------------------------------------------------------
# Foreground mask m_f
# --------------------------------------------------------------------------------------------
def foreground_mask(image: np.ndarray, kind: str, *, border_frac: float = 0.05,
                    min_frac: float = 0.02, max_frac: float = 0.98,
                    keep_ratio: float = 0.25) -> np.ndarray:
    """Foreground mask ``m_f`` (Sec. 4.1) of an ``H x W x 3`` (or ``H x W``) image in ``[0, 1]``.

    The paper uses ``m_f`` but does not say how it is obtained; this is the method chosen here.

    * ``kind="texture"``: the whole image is foreground (all ``True``), as the paper states for
      textures.
    * ``kind="object"``: a classical, training-free segmentation that assumes the object does not
      fill the image border (true for MVTec-AD and VisA objects):

      1. background colour ``b`` = per-channel median of a border strip of width
         ``border_frac * min(H, W)`` (at least one pixel);
      2. distance map ``d = ||x_hw - b||_2`` of every pixel to ``b``;
      3. Otsu threshold on ``d`` (``skimage.filters.threshold_otsu``): foreground = ``d > t``;
      4. morphological closing then opening with a disk of radius ``~1%`` of the image side, then
         hole filling (``scipy.ndimage``);
      5. connected components (8-connectivity): keep the largest one and every other component at
         least ``keep_ratio`` times its area (several capsules, macaroni or coins in one image).

      A degenerate result (foreground below ``min_frac`` or above ``max_frac`` of the image, or an
      image with no contrast to its border) falls back to all ``True`` ("everything may be
      object"), which makes the IoU filter of :func:`training_mask` behave as for a texture.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3:
        raise ValueError(f"foreground_mask expects HxW or HxWxC, got shape {img.shape}")
    h, w = img.shape[:2]
    full = np.ones((h, w), dtype=bool)
    kind = kind.lower()
    if kind in TEXTURE_KINDS:
        return full
    if kind not in OBJECT_KINDS:
        raise ValueError(f"kind must be 'texture' or 'object', got {kind!r}")

    from skimage.filters import threshold_otsu

    b = max(1, int(round(border_frac * min(h, w))))
    border = np.concatenate([img[:b].reshape(-1, img.shape[2]), img[-b:].reshape(-1, img.shape[2]),
                             img[:, :b].reshape(-1, img.shape[2]),
                             img[:, -b:].reshape(-1, img.shape[2])])
    bg = np.median(border, axis=0)
    dist = np.sqrt(((img - bg) ** 2).sum(axis=2))
    if float(dist.max() - dist.min()) < 1e-6:
        return full
    fg = dist > threshold_otsu(dist)

    se = _disk(max(1, int(round(0.01 * min(h, w)))))
    fg = ndimage.binary_closing(fg, structure=se, border_value=0)
    fg = ndimage.binary_opening(fg, structure=se, border_value=0)
    fg = ndimage.binary_fill_holes(fg)

    labels, n = ndimage.label(fg, structure=np.ones((3, 3), dtype=int))
    if n == 0:
        return full
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.flatnonzero(sizes >= keep_ratio * sizes.max()) + 1
    fg = np.isin(labels, keep)

    frac = fg.mean()
    if frac < min_frac or frac > max_frac:
        return full
    return fg


# --------------------------------------------------------------------------------------------
# Training masks m (Sec. 4.1)
# --------------------------------------------------------------------------------------------
def _random_rects(h: int, w: int, n: int, rng: np.random.Generator, min_frac: float,
                  max_frac: float, centres: np.ndarray | None = None,
                  max_aspect: float = 3.0) -> np.ndarray:
    """``n`` random rectangles ``(y0, y1, x0, x1)`` (half-open) with area in ``[min_frac, max_frac]``.

    Area fraction uniform, aspect ratio log-uniform in ``[1/max_aspect, max_aspect]``; the top-left
    corner is uniform over the valid positions, or, when ``centres`` (``n x 2``, pixel coordinates)
    is given, the rectangle is centred there and shifted to fit inside the image.
    """
    area = rng.uniform(min_frac, max_frac, n) * h * w
    aspect = np.exp(rng.uniform(-np.log(max_aspect), np.log(max_aspect), n))  # height / width
    rh = np.clip(np.round(np.sqrt(area * aspect)), 1, h).astype(int)
    rw = np.clip(np.round(area / np.maximum(rh, 1)), 1, w).astype(int)
    if centres is None:
        y0 = (rng.random(n) * (h - rh + 1)).astype(int)
        x0 = (rng.random(n) * (w - rw + 1)).astype(int)
    else:
        y0 = np.clip(centres[:, 0] - rh // 2, 0, h - rh)
        x0 = np.clip(centres[:, 1] - rw // 2, 0, w - rw)
    return np.stack([y0, y0 + rh, x0, x0 + rw], axis=1)


def _rect_iou(fg: np.ndarray, rects: np.ndarray) -> np.ndarray:
    """IoU of each rectangle with ``fg``, from a summed-area table (O(1) per rectangle)."""
    sat = np.zeros((fg.shape[0] + 1, fg.shape[1] + 1), dtype=np.int64)
    sat[1:, 1:] = fg.astype(np.int64).cumsum(0).cumsum(1)
    y0, y1, x0, x1 = rects.T
    inter = sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]
    area = (y1 - y0) * (x1 - x0)
    union = area + int(fg.sum()) - inter
    return inter / np.maximum(union, 1)


def _rect_to_mask(h: int, w: int, rect) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    y0, y1, x0, x1 = (int(v) for v in rect)
    m[y0:y1, x0:x1] = True
    return m


def training_mask(fg: np.ndarray, gamma: float, rng=None, design: str = "foreground",
                  max_tries: int = 100, min_frac: float = 0.05, max_frac: float = 0.5,
                  fg_centre_prob: float = 0.5) -> np.ndarray:
    """One training mask ``m`` (Sec. 4.1): a random rectangle ``m_r`` with ``IoU(m_r, m_f) > gamma``.

    ``fg`` is the foreground mask ``m_f`` (``H x W`` bool). The rectangle's area is a uniform
    fraction in ``[min_frac, max_frac]`` of the image and its aspect ratio log-uniform in
    ``[1/3, 3]`` (the paper does not give the rectangle distribution; these are our choices).

    * ``design="foreground"`` (the paper's "designed" masks, Table 4): rejection sampling.
      ``max_tries`` candidates are drawn; the first with ``IoU > gamma`` (strict, as in Sec. 4.1) is
      returned. With probability ``fg_centre_prob`` a candidate is centred on a random foreground
      pixel, otherwise placed uniformly, so that small objects still get accepted candidates.
      If none is accepted, the candidate with the best IoU is returned (a bounded, never-failing
      fallback). Note: for a texture (``m_f`` all ones) ``IoU = area fraction <= max_frac``, so
      ``gamma = 0.5`` with ``max_frac = 0.5`` always falls back to the largest rectangle tried.
    * ``design="random"`` (Table 4's "random" row): the first rectangle, uniformly placed, no filter.
    """
    rng = _as_rng(rng)
    fg = np.asarray(fg, dtype=bool)
    h, w = fg.shape
    if design == "random":
        return _rect_to_mask(h, w, _random_rects(h, w, 1, rng, min_frac, max_frac)[0])
    if design != "foreground":
        raise ValueError(f"design must be 'foreground' or 'random', got {design!r}")
    n = int(max_tries)
    rects = _random_rects(h, w, n, rng, min_frac, max_frac)
    ys, xs = np.nonzero(fg)
    if len(ys) > 0 and fg_centre_prob > 0:
        use = rng.random(n) < fg_centre_prob
        if use.any():
            pick = rng.integers(0, len(ys), int(use.sum()))
            centres = np.stack([ys[pick], xs[pick]], axis=1)
            rects[use] = _random_rects(h, w, int(use.sum()), rng, min_frac, max_frac,
                                       centres=centres)
    iou = _rect_iou(fg, rects)
    ok = np.flatnonzero(iou > gamma)
    idx = int(ok[0]) if len(ok) else int(np.argmax(iou))
    return _rect_to_mask(h, w, rects[idx])


def sample_training_masks(fg: np.ndarray, n: int, rng=None, gammas: Sequence[float] = (0.0, 0.2, 0.5),
                          design: str = "foreground", **kwargs) -> np.ndarray:
    """``n`` training masks (``n x H x W`` bool) for one foreground mask; each draws its ``gamma``
    uniformly from ``gammas`` (Sec. 4.1: 0.0, 0.2, 0.5 with equal probability)."""
    rng = _as_rng(rng)
    fg = np.asarray(fg, dtype=bool)
    out = np.zeros((n,) + fg.shape, dtype=bool)
    for i in range(n):
        gamma = float(gammas[rng.integers(len(gammas))])
        out[i] = training_mask(fg, gamma, rng, design=design, **kwargs)
    return out


def training_masks_torch(fgs, rng=None, gammas: Sequence[float] = (0.0, 0.2, 0.5),
                         design: str = "foreground", device=None, **kwargs) -> torch.Tensor:
    """Batch helper: one training mask per foreground mask, as a float tensor ``(B, 1, H, W)``.

    ``fgs`` is a bool tensor/array ``(B, H, W)`` or ``(B, 1, H, W)``, or a list of ``H x W`` masks.
    """
    rng = _as_rng(rng)
    if isinstance(fgs, torch.Tensor):
        device = device if device is not None else fgs.device
        fgs = fgs.detach().cpu().numpy()
    arr = [np.asarray(f, dtype=bool).reshape(np.asarray(f).shape[-2:]) for f in fgs]
    out = np.stack([sample_training_masks(f, 1, rng, gammas, design, **kwargs)[0] for f in arr])
    return torch.from_numpy(out[:, None].astype(np.float32)).to(device or "cpu")


# --------------------------------------------------------------------------------------------
# Inference masks (Sec. 4.2)
# --------------------------------------------------------------------------------------------
def _edges(size: int, k: int) -> list[int]:
    """Patch boundaries of a k-way split; integer division so patches tile ``[0, size)`` exactly."""
    return [(i * size) // k for i in range(k + 1)]


def grid_masks(size: int, scales: Sequence[int] = (1, 2, 4, 8)):
    """Multi-scale masks ``M_ij^(k)`` (Sec. 4.2): one mask per patch of a ``k x k`` split.

    Returns ``(masks, index)``: ``masks`` a ``torch.bool`` tensor ``(N, 1, size, size)`` with
    ``N = sum_k k^2`` (85 for ``(1, 2, 4, 8)``) and ``index`` the list ``[(k, i, j), ...]`` (row
    ``i``, column ``j``) in the same order. Patch boundaries are ``floor(i * size / k)``, so when
    ``size`` is not divisible by ``k`` the patches differ by at most one pixel and still cover the
    image exactly once per scale.
    """
    if size < max(scales):
        raise ValueError(f"image size {size} is smaller than the finest grid {max(scales)}")
    n = sum(k * k for k in scales)
    masks = torch.zeros((n, 1, size, size), dtype=torch.bool)
    index: list[tuple[int, int, int]] = []
    t = 0
    for k in scales:
        e = _edges(size, k)
        for i in range(k):
            for j in range(k):
                masks[t, 0, e[i]:e[i + 1], e[j]:e[j + 1]] = True
                index.append((int(k), i, j))
                t += 1
    return masks, index


def full_mask(size: int) -> torch.Tensor:
    """One mask over the whole image, ``(1, 1, size, size)`` bool (Table 5, "one full mask")."""
    return torch.ones((1, 1, size, size), dtype=torch.bool)


def downsample_mask(mask: torch.Tensor, latent_size: int | tuple[int, int],
                    mode: str = "max") -> torch.Tensor:
    """``m~`` of eq (7): the pixel mask ``(N, 1, H, W)`` brought to latent size, float ``(N, 1, h, w)``.

    ``mode="max"`` (default): a latent cell is masked when ANY pixel of its receptive cell is masked
    (adaptive max-pooling). This is conservative: no partly hidden cell is shown as "known" to the
    U-Net, so the inpainted region always covers the pixel mask. ``mode="nearest"``: nearest
    neighbour, the choice of the diffusers inpainting pipeline. For an ``8 x`` VAE and grid masks
    whose edges fall on multiples of 8 the two agree.
    """
    if mask.ndim == 3:
        mask = mask[:, None]
    if isinstance(latent_size, int):
        latent_size = (latent_size, latent_size)
    m = mask.float()
    if mode == "max":
        return F.adaptive_max_pool2d(m, latent_size)
    if mode == "nearest":
        return F.interpolate(m, size=latent_size, mode="nearest")
    raise ValueError(f"mode must be 'max' or 'nearest', got {mode!r}")


def upsample_mask(mask, size: int | tuple[int, int]):
    """Nearest-neighbour upsampling of a binary ``(h, w)`` or ``(N, 1, h, w)`` mask to ``size``."""
    if isinstance(size, int):
        size = (size, size)
    is_np = not isinstance(mask, torch.Tensor)
    t = torch.as_tensor(np.asarray(mask) if is_np else mask)
    shape = t.shape
    x = t.float().reshape((-1, 1) + tuple(shape[-2:]))
    y = F.interpolate(x, size=size, mode="nearest") > 0.5
    y = y.reshape(tuple(shape[:-2]) + tuple(size))
    return y.numpy() if is_np else y
